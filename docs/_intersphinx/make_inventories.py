"""Write the small intersphinx inventories bundled with the docs (offline builds).

The machines that build the docs may not reach the other projects' sites, so
``docs/conf.py`` reads these files instead of downloading ``objects.inv``. Each
lists the objects unitnorm's pages refer to, with the address of that object
in the project's public documentation. Add an entry when a page links a new
target (a nitpicky build, ``sphinx-build -n``, lists unresolved ones), then
run ``python docs/_intersphinx/make_inventories.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sphinx.util.inventory import InventoryFile

HERE = Path(__file__).resolve().parent

# name -> (project, version, {(domain:role, object): relative address})
PROJECTS: dict[str, tuple[str, str, dict[tuple[str, str], str]]] = {}


def _py(project: str, version: str, entries: dict[tuple[str, str], str]) -> None:
    PROJECTS[project.lower()] = (project, version, entries)


_EXC = "library/exceptions.html#{}"
_py(
    "Python",
    "3",
    {
        **{
            ("py:exception", e): _EXC.format(e)
            for e in (
                "Exception",
                "ValueError",
                "TypeError",
                "KeyError",
                "OSError",
                "FileNotFoundError",
                "RuntimeError",
                "Warning",
                "UserWarning",
                "RuntimeWarning",
                "KeyboardInterrupt",
            )
        },
        **{("py:class", c): f"library/functions.html#{c}" for c in ("int", "float", "str", "bool", "object")},
        ("py:class", "dict"): "library/stdtypes.html#dict",
        ("py:class", "list"): "library/stdtypes.html#list",
        ("py:class", "tuple"): "library/stdtypes.html#tuple",
        ("py:class", "pathlib.Path"): "library/pathlib.html#pathlib.Path",
        ("py:class", "os.PathLike"): "library/os.html#os.PathLike",
        ("py:class", "collections.abc.Iterator"): "library/collections.abc.html#collections.abc.Iterator",
        ("py:class", "collections.abc.Iterable"): "library/collections.abc.html#collections.abc.Iterable",
        ("py:class", "collections.abc.Mapping"): "library/collections.abc.html#collections.abc.Mapping",
        ("py:class", "collections.abc.Sequence"): "library/collections.abc.html#collections.abc.Sequence",
        ("py:class", "typing.NamedTuple"): "library/typing.html#typing.NamedTuple",
        ("py:function", "dataclasses.dataclass"): "library/dataclasses.html#dataclasses.dataclass",
        # what numpydoc links in the types of a Parameters section (its DEFAULT_LINKS)
        **{("py:data", c): f"library/constants.html#{c}" for c in ("None", "True", "False")},
        ("std:label", "bltin-boolean-values"): "library/stdtypes.html#bltin-boolean-values",
        ("py:function", "callable"): "library/functions.html#callable",
        **{("std:term", t): f"glossary.html#term-{t}" for t in ("iterable", "sequence", "generator")},
        ("py:function", "contextlib.contextmanager"): "library/contextlib.html#contextlib.contextmanager",
        ("py:function", "collections.namedtuple"): "library/collections.html#collections.namedtuple",
        ("py:function", "pickle.load"): "library/pickle.html#pickle.load",
        ("py:function", "os.replace"): "library/os.html#os.replace",
    },
)
_NP = "reference/generated/{}.html#{}"
_py(
    "NumPy",
    "stable",
    {
        ("py:class", "numpy.ndarray"): _NP.format("numpy.ndarray", "numpy.ndarray"),
        ("py:class", "numpy.dtype"): _NP.format("numpy.dtype", "numpy.dtype"),
        ("py:function", "numpy.load"): _NP.format("numpy.load", "numpy.load"),
        ("py:function", "numpy.savez"): _NP.format("numpy.savez", "numpy.savez"),
        ("py:function", "numpy.quantile"): _NP.format("numpy.quantile", "numpy.quantile"),
        ("py:class", "numpy.memmap"): _NP.format("numpy.memmap", "numpy.memmap"),
        ("py:class", "numpy.random.RandomState"): "reference/random/legacy.html#numpy.random.RandomState",
        ("py:data", "numpy.inf"): "reference/constants.html#numpy.inf",
        ("py:data", "numpy.nan"): "reference/constants.html#numpy.nan",
        ("py:module", "numpy"): "reference/index.html#module-numpy",
        ("std:term", "array_like"): "glossary.html#term-array_like",
        ("std:label", "arrays.scalars"): "reference/arrays.scalars.html#arrays-scalars",
    },
)
_JAX = "_autosummary/{}.html#{}"
_py(
    "JAX",
    "latest",
    {
        ("py:class", "jax.Array"): _JAX.format("jax.Array", "jax.Array"),
        **{
            ("py:function", f): _JAX.format(f, f)
            for f in (
                "jax.jit",
                "jax.grad",
                "jax.vmap",
                "jax.pmap",
                "jax.vjp",
                "jax.value_and_grad",
                "jax.lax.pmean",
                "jax.lax.psum",
                "jax.lax.scan",
                "jax.shard_map",
                "jax.block_until_ready",
                "jax.tree.map",
                "jax.experimental.checkify.checkify",
                "jax.experimental.checkify.debug_check",
            )
        },
        ("py:module", "jax.numpy"): "jax.numpy.html#module-jax.numpy",
    },
)
_BU = "apis/generated/{}.html#{}"
_py(
    "brainunit",
    "latest",
    {
        **{
            ("py:class", c): _BU.format(c, c)
            for c in ("brainunit.Quantity", "brainunit.Unit", "brainunit.Dimension")
        },
        **{
            ("py:exception", e): _BU.format(e, e)
            for e in ("brainunit.UnitMismatchError", "brainunit.DimensionMismatchError")
        },
        # brainunit re-exports saiunit's classes; Sphinx names the base class by its home module
        ("py:exception", "saiunit.UnitMismatchError"): _BU.format(
            "brainunit.UnitMismatchError", "brainunit.UnitMismatchError"
        ),
        ("py:class", "saiunit.Quantity"): _BU.format("brainunit.Quantity", "brainunit.Quantity"),
        ("py:class", "saiunit.Unit"): _BU.format("brainunit.Unit", "brainunit.Unit"),
    },
)


def inventory_bytes(project: str, version: str, entries: dict[tuple[str, str], str]) -> bytes:
    """Return an ``objects.inv`` (version 2: a text header, then zlib-compressed lines)."""
    import zlib

    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    lines = []
    for (kind, name), uri in sorted(entries.items()):
        lines.append(f"{name} {kind} 1 {uri} -\n")
    return header + zlib.compress("".join(lines).encode())


def write(path: Path, data: bytes) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def main() -> None:
    for key, (project, version, entries) in PROJECTS.items():
        data = inventory_bytes(project, version, entries)
        # read back with Sphinx's own reader: a malformed file fails here, not in the build
        import io

        InventoryFile.load(io.BytesIO(data), "https://example.invalid/", lambda base, uri: base + uri)
        write(HERE / f"{key}.inv", data)
        print(f"{key}.inv: {len(entries)} objects")


if __name__ == "__main__":
    main()
