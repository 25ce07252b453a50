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

Cross-links to other projects' documentation (intersphinx) need the network,
so they are off unless ``UNITNORM_DOCS_INTERSPHINX=1``; offline builds then
pass with ``-W``.
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
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "unitnorm_docs",
]

exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# -- API pages (generated from __all__ by _ext/unitnorm_docs.py) ---------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types in words
autodoc_inherit_docstrings = True
autosummary_generate = False  # the pages are written by unitnorm_docs, not autosummary stubs
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

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

# -- cross-links to other projects: opt-in, they need the network --------------
if os.environ.get("UNITNORM_DOCS_INTERSPHINX", "0") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "jax": ("https://docs.jax.dev/en/latest", None),
        "brainunit": ("https://brainunit.readthedocs.io/en/latest", None),
    }
    intersphinx_timeout = 10

# -- HTML -----------------------------------------------------------------------
html_theme = "furo"
html_title = f"unitnorm {release}"
html_static_path: list[str] = []
