"""The README's Python blocks run as written, in order, in one namespace."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5, "the README lost its tour"
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README block {i}", "exec"), namespace)
    # The first block minimises a quadratic whose minimum is 0 at w = 1, b = 0.
    assert float(namespace["loss"](namespace["params"])) < 1e-2
    # The perceptron block's data are separable: the last epoch makes no mistake.
    assert int(namespace["mistakes"][-1]) == 0
    # Sequential and parallel HMM log-likelihoods agree; EM's history never decreases.
    rolls = namespace["rolls"][0]
    a = namespace["hmm"].log_likelihood(namespace["casino"], rolls)
    b = namespace["hmm"].parallel.log_likelihood(namespace["casino"], rolls)
    assert abs(float(a) - float(b)) < 1e-3 * abs(float(a))
