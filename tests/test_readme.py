"""The README's fenced Python blocks run, in order, in one namespace (as a reader would paste them)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _blocks() -> list[str]:
    return FENCE.findall(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    # the extraction itself could silently find nothing; the README has (at least) these two
    blocks = _blocks()
    assert len(blocks) >= 2, f"expected the README's ```python blocks, found {len(blocks)}"
    assert any("un.BatchNorm1d" in b for b in blocks)
    assert any("jax.value_and_grad" in b for b in blocks)


def test_readme_python_blocks_run_in_order():
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:  # name the block, so a failure points at the README
            pytest.fail(f"README.md python block {i + 1} failed: {type(err).__name__}: {err}\n{block}")
    # what the blocks claim: running statistics in mV, a loss and gradients for the parameters only
    import brainunit as u

    assert namespace["v"].running_mean.value.unit == u.mV
    assert namespace["v"].running_var.value.unit == u.mV**2
    assert set(namespace["grads"]) == set(namespace["params"])
    assert namespace["loss"].shape == ()
