"""Sphinx configuration of unitnorm's documentation.

Build (warnings are errors) and run every ``>>>`` example::

    sphinx-build -W -b html docs docs/_build/html
    sphinx-build -W -b doctest docs docs/_build/doctest

The notebooks in ``notebooks/`` are copied to ``docs/tutorials/`` and executed
by myst-nb while the pages are read (``nb_execution_mode = "cache"``: a
notebook runs again only when its code changes; the cache lives in
``docs/_build/.jupyter_cache`` and is shared by both builders, so delete it —
or ``docs/_build`` — after changing unitnorm itself; CI builds from scratch).
Set ``UNITNORM_DOCS_NB_EXECUTION=off`` to render them without running them,
or ``force`` to run them on every build.

Cross-links to other projects' documentation (Python, NumPy, JAX, brainunit)
resolve offline: their inventories are bundled in ``docs/_intersphinx/`` (small
ones listing the targets these docs use, with the projects' public addresses;
``docs/_intersphinx/make_inventories.py`` rewrites them). Set
``UNITNORM_DOCS_INTERSPHINX=online`` to read the projects' full inventories
from the network instead.

``[source]`` links come from ``sphinx.ext.viewcode``: the highlighted code is
part of the site (``_modules/``), so they work offline and name no repository
address.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

import unitnorm  # noqa: E402

project = "unitnorm"
author = "the unitnorm authors"
copyright = "the unitnorm authors, Apache-2.0"  # noqa: A001
release = version = unitnorm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "numpydoc",
    "myst_nb",
    "unitnorm_docs",
    "unitnorm_perf",
]

exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# -- API pages (generated from __all__ by _ext/unitnorm_docs.py) ---------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types in words
autodoc_inherit_docstrings = True
# Class defaults are shown by name (``param_type=NormalizationParamState``) by a signature hook in
# _ext/unitnorm_docs.py; autodoc_preserve_defaults would do it too but fails on signatures built in
# code (BatchRenorm's __signature__).
autosummary_generate = False  # the pages are written by unitnorm_docs (one per object), not stubs
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# types in the Parameters/Returns sections link to their pages (here or through intersphinx);
# words not listed stay plain text
numpydoc_xref_param_type = True
numpydoc_xref_ignore = "all"
numpydoc_xref_aliases = {
    "Quantity": "brainunit.Quantity",
    "brainunit.Quantity": "brainunit.Quantity",
    "Unit": "brainunit.Unit",
    "brainunit.Unit": "brainunit.Unit",
    "jax.Array": "jax.Array",
    "Array": "jax.Array",
    "ndarray": "numpy.ndarray",
    "numpy.ndarray": "numpy.ndarray",
    "np.ndarray": "numpy.ndarray",
    "dtype": "numpy.dtype",
    "Path": "pathlib.Path",
    "pathlib.Path": "pathlib.Path",
    "Recording": "unitnorm.io.Recording",
    "State": "unitnorm.State",
    "ParamState": "unitnorm.ParamState",
    "BatchState": "unitnorm.BatchState",
    "NormalizationParamState": "unitnorm.NormalizationParamState",
    "Module": "unitnorm.Module",
    "Initializer": "unitnorm.init.Initializer",
    "array": "jax.Array",  # numpydoc's default is numpy.ndarray; here arrays are JAX's or NumPy's
}

# -- doctest: every ">>>" block of every page and docstring runs ---------------
doctest_test_doctest_blocks = "default"
doctest_show_successes = True

# -- notebooks (myst-nb) --------------------------------------------------------
nb_execution_mode = os.environ.get("UNITNORM_DOCS_NB_EXECUTION", "cache")
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# -- cross-links to other projects: bundled inventories, so the build stays offline
_INVENTORIES = DOCS / "_intersphinx"
_ONLINE = os.environ.get("UNITNORM_DOCS_INTERSPHINX", "") == "online"
intersphinx_mapping = {
    name: (url, None if _ONLINE else str(_INVENTORIES / f"{name}.inv"))
    for name, url in {
        "python": "https://docs.python.org/3/",
        "numpy": "https://numpy.org/doc/stable/",
        "jax": "https://docs.jax.dev/en/latest/",
        "brainunit": "https://brainunit.readthedocs.io/en/latest/",
    }.items()
}
intersphinx_timeout = 10

# -- copy buttons: copy the code without prompts or doctest output ---------------
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
copybutton_exclude = ".linenos, .gp, .go"

# -- HTML -----------------------------------------------------------------------
html_theme = "furo"
html_title = f"unitnorm {release}"
html_static_path = ["_static"]
html_css_files = ["unitnorm.css"]
