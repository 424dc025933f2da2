"""The examples run: the quickstart end to end with its default settings (the README's
claim: test accuracy >= 0.97), data_parallel briefly on four fake CPU devices against its
own single-device run, the others as far as --help (all four in one interpreter, to pay for
importing JAX once).

Each runs in a subprocess from the repository root with the package importable, as a user
would run it; PNGs go to a temporary folder.
"""
import math
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def python(*arguments, timeout=300):
    """Run ``python *arguments`` from the repository root with the package importable."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *arguments], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def test_quickstart_reaches_its_target_accuracy_and_saves_curves(tmp_path):
    # default settings (40 epochs: compiling costs more than training, ~4 s more than 3)
    completed = python(str(EXAMPLES / "quickstart.py"), "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    epoch_lines = [line for line in completed.stdout.splitlines() if line.startswith("epoch ")]
    # not a terminal: one plain line per epoch
    assert [line.split()[1] for line in epoch_lines] == [f"{e}/40" for e in range(1, 41)]
    accuracy = re.search(r"^test accuracy: (\d\.\d{4})", completed.stdout, re.MULTILINE)
    assert accuracy is not None, completed.stdout
    assert 0.97 <= float(accuracy.group(1)) <= 1.0      # the README's target
    assert (tmp_path / "quickstart_curves.png").stat().st_size > 0


HELP_OF_EACH = """
import contextlib, io, runpy, sys
for name in sys.argv[1:]:
    sys.argv = [name, "--help"]
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        runpy.run_path(name, run_name="__main__")
    print(name, "--epochs" in text.getvalue() and "--out" in text.getvalue())
"""


def test_other_examples_import_and_parse_arguments():
    names = ["optimizers_compare.py", "perceptron.py", "cnn_digits.py", "ensembles.py"]
    completed = python("-c", HELP_OF_EACH, *[str(EXAMPLES / name) for name in names],
                       timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [f"{EXAMPLES / name} True" for name in names]


def test_data_parallel_on_four_cpu_devices_matches_one_device():
    # the device count must be fixed before JAX starts: hence the subprocess and XLA_FLAGS
    devices, per_device = 4, 16
    environment = dict(os.environ, JAX_PLATFORMS="cpu",
                       XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                  f" --xla_force_host_platform_device_count={devices}").strip())
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "data_parallel.py"), "--epochs", "2",
         "--examples-per-device", str(per_device), "--compare-single-device"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert out.startswith(f"{devices} device(s): ") and f"mesh: {{'data': {devices}}}" in out
    batch = devices * per_device
    # the batch is split over the devices (then over one device), the weights copied whole
    assert re.findall(r"batch images +global \((\d+), 64\), spec P\('data',\), (\d+) shards of "
                      r"shape \[\((\d+), 64\)\]", out) == [
        (str(batch), str(devices), str(per_device)), (str(batch), "1", str(batch))]
    assert len(re.findall(rf"dense_0 weights +global \(64, 64\), spec P\(\), {devices} shards",
                          out)) == 2
    losses = [float(v) for v in re.findall(r"^epoch +2: mean training loss (\S+)$", out, re.M)]
    accuracies = [float(v) for v in re.findall(r"^test accuracy: (\S+) on 450", out, re.M)]
    assert len(losses) == len(accuracies) == 2, out
    # data parallelism changes only the order of the gradient sums: same trajectory
    assert abs(losses[0] - losses[1]) <= 1e-4
    assert abs(accuracies[0] - accuracies[1]) <= 1 / 450 + 1e-9  # one borderline digit at most
    # and it learned: below the loss of a uniform guess, far above chance accuracy
    assert losses[0] < math.log(10) / 2 and accuracies[0] > 0.6


def test_resnet_digits_small_run_learns_with_batch_norm_state(tmp_path):
    completed = python(str(EXAMPLES / "resnet_digits.py"), "--small", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    accuracy = re.search(r"^test accuracy: (\d\.\d{4}) \(\d+ parameters, 1 residual blocks of "
                         r"width 8", completed.stdout, re.MULTILINE)
    assert accuracy is not None, completed.stdout
    # two epochs, evaluated with the running statistics: far above chance (0.1)
    assert 0.6 <= float(accuracy.group(1)) <= 1.0
    assert (tmp_path / "resnet_digits_curves.png").stat().st_size > 0


def test_lstm_sequences_small_learns_the_rule_and_saves_its_plot(tmp_path):
    # --small: 2048 training sequences, 12 epochs; the rule (last symbol == first?) is
    # learned well above chance (0.5); the full run reaches 1.0
    completed = python(str(EXAMPLES / "lstm_sequences.py"), "--small", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    accuracy = re.search(r"^test accuracy: (\d\.\d{4}) \(short sequences (\d\.\d{4}), "
                         r"long (\d\.\d{4}); 256 test / 2048 training sequences of length "
                         r"3-24\)$", completed.stdout, re.MULTILINE)
    assert accuracy is not None, completed.stdout
    assert all(0.7 <= float(value) <= 1.0 for value in accuracy.groups())
    assert (tmp_path / "lstm_sequences_accuracy.png").stat().st_size > 0


def test_char_transformer_learns_and_samples_when_small(tmp_path):
    prompt, length = "Shall I ", 40
    completed = python(str(EXAMPLES / "char_transformer.py"), "--epochs", "2", "--layers", "1",
                       "--features", "32", "--context", "32", "--sample-length", str(length),
                       "--prompt", prompt, "--out", str(tmp_path), timeout=240)
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")] == [
        "1/2", "2/2"]
    bits = re.search(r"^validation: (\d+\.\d+) bits per character \(uniform guess "
                     r"(\d+\.\d+)\)$", out, re.MULTILINE)
    assert bits is not None, out
    assert float(bits.group(2)) == round(math.log2(58), 3)     # 58 distinct characters
    assert float(bits.group(1)) < float(bits.group(2)) - 1     # well below the uniform guess
    sample = out.split("sample:\n", 1)[1]
    assert sample.startswith(prompt) and len(sample.split("\nsaved ")[0]) >= len(prompt) + length
    assert (tmp_path / "char_transformer_curves.png").stat().st_size > 0
