"""The HMM example scripts run end to end and print results that agree with the truth.

The four scripts run once per test session, in this process one after the other (no
interpreter or JAX start-up per script; the casino and gradient examples share compiled
sampling code); each test then checks one script's exit status, its PNG and what it printed
against an oracle the script does not compute itself: the true casino parameters, the plain
means of the Nile data on either side of the printed change year, and the agreement of two
independent fitting methods (EM and autodiff + Adam), and for model selection the BIC formula
with the parameter counts written out here and the known two levels of the Nile.
"""
from __future__ import annotations

import contextlib
import io
import pathlib
import re
import runpy
import sys
import traceback

import numpy as np
import pytest

pytest.importorskip("matplotlib")

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = {
    "casino": ["hmm_casino.py", "--quick"],
    "nile": ["hmm_nile.py"],
    "gradient": ["hmm_gradient_fit.py", "--quick"],
    "selection": ["hmm_model_selection.py", "--max-states", "3", "--restarts", "3",
                  "--max-iter", "100"],
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_script(script: str, flags: list[str], out_dir: pathlib.Path) -> tuple[int, str]:
    """Run ``examples/script`` as ``__main__`` with ``flags``; (exit status, printed output)."""
    output = io.StringIO()
    argv = [str(REPO / "examples" / script), *flags, "--out", str(out_dir)]
    saved_argv, sys.argv = sys.argv, argv
    status = 0
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # noqa: BLE001 - reported through the status and the output
        status = 1
        output.write(traceback.format_exc())
    finally:
        sys.argv = saved_argv
    return status, output.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every example; return {name: (returncode, stdout + stderr, out_dir)}."""
    import matplotlib

    matplotlib.use("Agg")
    results = {}
    for name, (script, *flags) in EXAMPLES.items():
        out_dir = tmp_path_factory.mktemp(name)
        results[name] = (*run_script(script, flags, out_dir), out_dir)
    return results


def finished(runs, name: str, png: str) -> str:
    """Assert exit status 0 and a real PNG; return the printed output."""
    returncode, output, out_dir = runs[name]
    assert returncode == 0, f"{name} example failed:\n{output}"
    figure = out_dir / png
    assert figure.is_file(), f"{name} example did not save {png}:\n{output}"
    assert figure.read_bytes()[:8] == PNG_SIGNATURE
    return output


def number_after(pattern: str, output: str) -> float:
    match = re.search(pattern + r"\s*(-?[0-9.]+(?:e[-+]?[0-9]+)?)", output)
    assert match, f"no match for {pattern!r} in:\n{output}"
    return float(match.group(1))


def test_casino_recovers_the_dice_and_decodes_like_the_true_model(runs):
    output = finished(runs, "casino", "hmm_casino.png")
    # True parameters: A = [[.95, .05], [.1, .9]], P(six | loaded) = .5, P(face | fair) = 1/6.
    loaded_row = re.search(r"faces 1\.\.6 \| loaded: ([0-9. ]+)", output).group(1).split()
    fair_row = re.search(r"faces 1\.\.6 \| fair  : ([0-9. ]+)", output).group(1).split()
    np.testing.assert_allclose(np.array(loaded_row, float), [0.1] * 5 + [0.5], atol=0.06)
    np.testing.assert_allclose(np.array(fair_row, float), [1 / 6] * 6, atol=0.04)
    switches = re.findall(r"p\(next \| (\w+)\s*\) = \[([0-9.]+) \(", output)
    to_fair = {state: float(p) for state, p in switches}  # first column: p(next = fair | state)
    assert to_fair["fair"] == pytest.approx(0.95, abs=0.03)
    assert to_fair["loaded"] == pytest.approx(0.10, abs=0.06)
    # These dice are hard to tell apart: even the true model calls only ~80 % of rolls right,
    # so the fitted model is held to the true model's accuracy on the same held-out rolls.
    posterior = r"model: Viterbi accuracy [0-9.]+, posterior accuracy"
    fitted_viterbi = number_after(r"fitted model: Viterbi accuracy", output)
    fitted_posterior = number_after("fitted " + posterior, output)
    true_viterbi = number_after(r"true model: Viterbi accuracy", output)
    true_posterior = number_after("true " + posterior, output)
    assert fitted_posterior > 0.75 and fitted_viterbi > 0.7
    assert fitted_posterior >= true_posterior - 0.03
    # A Viterbi path flips whole runs on small parameter differences: on 1600 held-out rolls
    # its accuracy moves by a few percent between near-equal models, so it gets 0.05.
    assert fitted_viterbi >= true_viterbi - 0.05


def test_nile_change_year_and_levels(runs):
    from functional_dl.datasets import load_nile

    output = finished(runs, "nile", "hmm_nile.png")
    change_year = int(number_after(r"Nile change year \(first year in the low state\):", output))
    assert 1895 <= change_year <= 1902
    nile = load_nile(dtype=np.float64)
    before = nile.values[nile.time < change_year].mean()
    after = nile.values[nile.time >= change_year].mean()
    high = number_after(r"fitted levels: high", output)
    low = number_after(r"fitted levels: high [0-9.]+ \(sd [0-9.]+\), low", output)
    # With one clear change the posterior is nearly 0/1, so the EM means are the segment means.
    assert high == pytest.approx(before, rel=0.01)
    assert low == pytest.approx(after, rel=0.01)
    assert "converged: True" in output


def test_gradient_fit_reaches_the_baum_welch_optimum(runs):
    output = finished(runs, "gradient", "hmm_gradient_fit.png")
    true_score = number_after(r"the true model scores", output)
    first = number_after(r"step\s+0:", output)
    gradient = number_after(r"final mean log-likelihood per roll: gradient", output)
    em = number_after(r"after \d+ steps, Baum–Welch", output)
    assert gradient > first + 0.01
    # Two independent optimisers of the same likelihood end at the same maximum ...
    assert gradient == pytest.approx(em, abs=1e-4)
    assert number_after(r"largest difference between the two fitted models' probabilities:",
                        output) < 0.02
    # ... which, being a maximum on the training data, scores at least the true model.
    assert min(gradient, em) >= true_score - 1e-4


def test_model_selection_bic_follows_its_formula_and_picks_two_nile_levels(runs):
    output = finished(runs, "selection", "hmm_model_selection.png")
    nile, spots = output.split("Poisson:")[0], output.split("Poisson:")[1]
    for part, num_steps, emission_count in ((nile, 100, lambda k: 2 * k),  # mean, variance
                                           (spots, 309, lambda k: k)):      # one rate
        rows = re.findall(r"K = (\d): log-likelihood\s+(-?[0-9.]+),\s+(\d+) parameters, "
                          r"BIC\s+(-?[0-9.]+)", part)
        assert [int(k) for k, *_ in rows] == [1, 2, 3]
        for k, log_likelihood, count, bic in rows:
            k = int(k)
            assert int(count) == (k - 1) + k * (k - 1) + emission_count(k)
            np.testing.assert_allclose(float(bic), -2 * float(log_likelihood)
                                       + int(count) * np.log(num_steps), atol=0.15)
    assert "chosen by BIC: K = 2" in nile   # the levels before and after 1898
