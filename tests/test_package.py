"""The package as users import it: submodules as attributes, lazily where they cost."""

import subprocess
import sys
import textwrap

import pytest

import unitnorm as un


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_io_is_an_attribute_imported_on_first_use():
    # `import unitnorm as un; un.io.read_edf(...)` used to raise AttributeError
    out = _run(
        """
        import sys
        import unitnorm as un
        heavy = ("unitnorm.io", "pyedflib", "pynwb", "mne", "neo", "h5py")
        print(sorted(m for m in heavy if m in sys.modules))
        reader = un.io.read_edf
        print(callable(reader), "unitnorm.io" in sys.modules)
        # a reader's library is imported when the reader runs, not with unitnorm.io
        print(sorted(m for m in heavy[1:] if m in sys.modules))
        """
    )
    assert out.split("\n")[:3] == ["[]", "True True", "[]"]


@pytest.mark.parametrize("name", ["functional", "init", "nn", "state", "io"])
def test_submodules_are_attributes(name):
    module = getattr(un, name)
    assert module.__name__ == f"unitnorm.{name}"
    assert name in dir(un)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nonexistent'"):
        un.nonexistent  # noqa: B018
