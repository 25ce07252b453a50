"""The documentation site and the notebooks: built, documented, executed.

Fast (default run): every public name is documented in the API pages (a Sphinx
build with the ``dummy`` builder, notebooks not executed), every public module's
page has examples, the narrative pages' examples pass, and the notebooks are
stored without outputs.

Slow (CI, ``-m slow``): the notebooks run top to bottom with nbclient in under
five minutes; ``sphinx-build -W -b html`` and ``sphinx-build -W -b doctest``
pass, the doctest builder ran examples on every public module's page, and the
rendered notebook pages show their plots.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NARRATIVE = sorted(p for p in DOCS.glob("*.rst")) + [
    DOCS / "api" / "index.rst",
    DOCS / "tutorials" / "index.rst",
]
# Sphinx's doctest builder compares with these flags (its default), so the fast check does too.
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL | doctest.DONT_ACCEPT_TRUE_FOR_1


def _needs_sphinx() -> None:
    pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("myst_nb", reason="the docs extra is not installed (pip install -e '.[docs]')")


def _env(execution: str) -> dict[str, str]:
    env = dict(os.environ)
    env["UNITNORM_DOCS_NB_EXECUTION"] = execution
    env.pop("UNITNORM_DOCS_INTERSPHINX", None)  # offline
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


# ----------------------------------------------------------------------------
# what must be documented, worked out here independently of docs/_ext


def _public_objects() -> dict[str, object]:
    """Every public name: ``unitnorm.__all__`` and the ``__all__`` of every public submodule.

    Keys are the documented names the object may appear under; a name a submodule
    shares with the package root (``unitnorm.nn.BatchNorm1d`` is ``unitnorm.BatchNorm1d``)
    may be documented under the root name.
    """
    import unitnorm

    wanted: dict[str, object] = {f"unitnorm.{n}": getattr(unitnorm, n) for n in unitnorm.__all__}
    modules = {m.__name__ for m in wanted.values() if isinstance(m, types.ModuleType)}
    modules |= {
        f"unitnorm.{info.name}"
        for info in pkgutil.iter_modules(unitnorm.__path__)
        if not info.name.startswith("_")
    }
    for name in sorted(modules):
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            wanted[f"{name}.{attr}"] = getattr(module, attr)
    return wanted


_BUILD_SCRIPT = r"""
import json, sys
from docutils import nodes
from sphinx.application import Sphinx

src, out = sys.argv[1], sys.argv[2]
app = Sphinx(src, src, out + "/dummy", out + "/doctrees", "dummy", status=None, warningiserror=True)
app.build()
py = app.env.domains["py"]
blocks = {
    d: sum(1 for _ in app.env.get_doctree(d).findall(nodes.doctest_block)) for d in sorted(app.env.found_docs)
}
objects = {name: entry.objtype for name, entry in py.objects.items()}
report = {"status": app.statuscode, "objects": objects, "modules": sorted(py.modules), "blocks": blocks}
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def dummy_build(tmp_path_factory):
    """Read the whole site (notebooks rendered, not executed) and report what it documents."""
    _needs_sphinx()
    out = tmp_path_factory.mktemp("docs")
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD_SCRIPT, str(DOCS), str(out)],
        capture_output=True,
        text=True,
        env=_env("off"),
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, f"the docs did not build:\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["status"] == 0, proc.stderr[-4000:]
    return report


def test_every_public_name_is_documented(dummy_build):
    import unitnorm

    documented = set(dummy_build["objects"]) | set(dummy_build["modules"])
    root_names = {id(getattr(unitnorm, n)): f"unitnorm.{n}" for n in unitnorm.__all__}
    missing = []
    for name, obj in _public_objects().items():
        if name in documented or root_names.get(id(obj)) in documented:
            continue
        missing.append(name)
    assert not missing, f"public names missing from the API pages: {missing}"
    # sanity: the check can see the core names
    assert "unitnorm.BatchNorm1d" in documented and "unitnorm.functional.batch_norm" in documented


def test_public_objects_have_docstrings():
    empty = [
        name
        for name, obj in _public_objects().items()
        if (inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, types.ModuleType))
        and not (inspect.getdoc(obj) or "").strip()
    ]
    assert not empty, f"public objects without a docstring: {empty}"


def _module_of_page(docname: str) -> str:
    """``api/generated/unitnorm.functional.batch_norm`` -> ``unitnorm.functional``."""
    return docname.removeprefix("api/generated/").rpartition(".")[0]


def test_every_public_module_has_pages_with_examples(dummy_build):
    """One page per module (tables) and per object (the docstring, whose examples run)."""
    blocks = dummy_build["blocks"]
    modules = {f"api/{m}" for m in dummy_build["modules"]}
    assert {"api/unitnorm", "api/unitnorm.functional", "api/unitnorm.init"} <= set(blocks)
    assert modules <= set(blocks) | {"api/index"}, f"modules without a page: {sorted(modules - set(blocks))}"
    per_module: dict[str, int] = {}
    for doc, n in blocks.items():
        if doc.startswith("api/generated/unitnorm."):
            per_module[_module_of_page(doc)] = per_module.get(_module_of_page(doc), 0) + n
    for module in dummy_build["modules"]:
        assert per_module.get(module, 0) > 0, f"no page of {module}'s objects has >>> examples: {per_module}"
    for name in ("unitnorm.BatchNorm1d", "unitnorm.LayerNorm", "unitnorm.functional.batch_norm"):
        assert blocks.get(f"api/generated/{name}", 0) > 0, f"{name}'s page has no examples"


def test_every_documented_object_is_in_a_group_of_the_api_index():
    """The grouped index (docs/_ext/unitnorm_docs.API_GROUPS) sorts every documented name."""
    ext = _ext_module("unitnorm_docs")
    documented = ext.documented_objects(ext.public_modules())
    grouped = [n for _, _, names in ext.API_GROUPS for n in names]
    assert len(grouped) == len(set(grouped)), "a name is listed in two groups"
    assert not set(documented) - set(grouped), f"not in any group: {sorted(set(documented) - set(grouped))}"
    assert not set(grouped) - set(documented), (
        f"listed but not public: {sorted(set(grouped) - set(documented))}"
    )
    # every public object is documented once, under the root name when the root re-exports it
    import unitnorm

    ids = {id(o) for o in documented.values()}
    missing = [
        n for n, o in _public_objects().items() if not isinstance(o, types.ModuleType) and id(o) not in ids
    ]
    assert not missing, missing
    assert "unitnorm.BatchNorm1d" in documented and "unitnorm.nn.BatchNorm1d" not in documented
    assert documented["unitnorm.weight_standardization"] is unitnorm.functional.weight_standardization


def test_no_page_is_empty_and_optional_pages_are_listed(dummy_build):
    docs = set(dummy_build["blocks"])
    expected = {"index", "getting_started", "units", "coming_from", "tutorials/index", "api/index"}
    expected |= {f"tutorials/{p.stem}" for p in NOTEBOOKS}
    expected |= {p for p in ("training", "performance") if any(DOCS.glob(f"{p}.*"))}
    assert expected <= docs, f"pages missing from the site: {sorted(expected - docs)}"
    for page in ("index", "getting_started", "units", "coming_from"):
        assert dummy_build["blocks"][page] > 0, f"{page} has no runnable example"


@pytest.mark.parametrize("page", NARRATIVE, ids=lambda p: str(p.relative_to(DOCS)))
def test_narrative_examples_pass(page):
    """The hand-written pages' examples, run as the doctest builder runs them (one namespace per page)."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(page.read_text(), {}, page.name, str(page), 0)
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {page.name}"
    if page.parent == DOCS and page.stem != "index":
        assert result.attempted > 5, f"{page.name} should demonstrate what it says"


def test_epsilon_example_shows_the_pitfall():
    """The units page's worked example: V and mV differ with a float epsilon, agree with either fix."""
    text = (DOCS / "units.rst").read_text()
    assert "[-1.413, 0.0, 0.0, 1.413]" in text and "[-0.032, 0.0, 0.0, 0.032]" in text
    assert "in_unit=u.mV" in text and "epsilon=eps" in text


def test_optional_pages_enter_the_toctree_only_once_written(tmp_path):
    """``training`` and ``performance`` are other issues' pages: listed when present, dropped when not."""
    ext = _ext_module("unitnorm_docs")
    index = (DOCS / "index.rst").read_text()
    assert re.search(r"^   training$", index, re.M) and re.search(r"^   performance$", index, re.M)
    app = types.SimpleNamespace(srcdir=str(tmp_path))
    (tmp_path / "performance.md").write_text("# Performance\n")
    source = [index]
    ext._on_source_read(app, "index", source)
    assert not re.search(r"^   training$", source[0], re.M)
    assert re.search(r"^   performance$", source[0], re.M)
    assert re.search(r"^   getting_started$", source[0], re.M)
    other = ["   training\n"]
    ext._on_source_read(app, "units", other)  # only the index is edited
    assert other == ["   training\n"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code"
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{path.name} has outputs"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS][:3] == [
        "01_quickstart.ipynb",
        "02_recordings.ipynb",
        "03_training.ipynb",
    ]


# ----------------------------------------------------------------------------
# slow: execute the notebooks, build the site


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client / zmq internals
def test_notebooks_execute_in_under_five_minutes():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    start = time.monotonic()
    images = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute()  # raises CellExecutionError naming the cell on any error
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        images[path.name] = sum(1 for o in outputs if "image/png" in o.get("data", {}))
    elapsed = time.monotonic() - start
    assert elapsed < 300, f"the notebooks took {elapsed:.0f} s, more than 5 minutes"
    assert all(n >= 1 for n in images.values()), images
    assert images["02_recordings.ipynb"] >= 3 and images["03_training.ipynb"] >= 2, images


def _sphinx(builder: str, out: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "-b",
        builder,
        "-d",
        str(out / "doctrees"),
        "-D",
        f"nb_execution_cache_path={out / 'jupyter_cache'}",
        str(DOCS),
        str(out / builder),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env("cache"), cwd=ROOT, timeout=900)


def _doctest_counts(output: str) -> dict[str, int]:
    """Examples run per document, from the doctest builder's output.txt."""
    counts = {}
    for match in re.finditer(
        r"^Document: (\S+)\n-+\n(.*?)(?=^Document: |^Doctest summary)", output, re.M | re.S
    ):
        tried = re.search(r"^(\d+) tests? in \d+ items?\.$", match.group(2), re.M)
        counts[match.group(1)] = int(tried.group(1)) if tried else 0
    return counts


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """``sphinx-build -W`` html and doctest, once for the slow tests of this file."""
    _needs_sphinx()
    out = tmp_path_factory.mktemp("site")
    html = _sphinx("html", out)
    assert html.returncode == 0, (
        f"sphinx-build -W -b html failed:\n{html.stdout[-3000:]}\n{html.stderr[-5000:]}"
    )
    dt = _sphinx("doctest", out)
    return {"out": out, "site": out / "html", "doctest": dt}


@pytest.mark.slow
def test_sphinx_html_and_doctest_builds(built_site):
    tmp_path = built_site["out"]
    dt = built_site["doctest"]
    output = (tmp_path / "doctest" / "output.txt").read_text()
    assert dt.returncode == 0, f"sphinx-build -W -b doctest failed:\n{output[-5000:]}\n{dt.stderr[-3000:]}"
    assert re.search(r"^\s+0 failures in tests$", output, re.M), output[-2000:]

    counts = _doctest_counts(output)
    modules = [p.stem for p in (DOCS / "api").glob("unitnorm*.rst")]
    assert {"unitnorm", "unitnorm.functional", "unitnorm.init"} <= set(modules)
    per_module: dict[str, int] = {}
    for doc, n in counts.items():
        if doc.startswith("api/generated/unitnorm."):
            per_module[_module_of_page(doc)] = per_module.get(_module_of_page(doc), 0) + n
    for module in modules:
        assert per_module.get(module, 0) > 0, f"the doctest builder ran no example for {module}: {per_module}"
    for page in ("index", "getting_started", "units", "coming_from"):
        assert counts.get(page, 0) > 0, f"the doctest builder ran no example on {page}"

    # the rendered notebook pages show their plots, and the images exist
    site = built_site["site"]
    for nb in NOTEBOOKS:
        page = (site / "tutorials" / f"{nb.stem}.html").read_text()
        srcs = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
        assert srcs, f"{nb.stem}.html shows no plot"
        for src in srcs:
            assert (site / "tutorials" / src).resolve().is_file(), src
        assert "Traceback" not in page
    # no empty pages: every page has more than its title
    for page in site.rglob("*.html"):
        if page.parent.name in {"_modules", "_static"} or page.name in {
            "search.html",
            "genindex.html",
            "py-modindex.html",
        }:
            continue
        html_text = page.read_text()
        if page.parent.name == "generated" and page.stem.startswith("unitnorm."):
            # an object's page: its description holds text (short for a small class)
            dd = re.search(r"<dd>(.*?)</dd>", html_text, re.S)
            assert dd and "<p>" in dd.group(1), f"{page.relative_to(site)} has no description"
            continue
        body = re.sub(r"<[^>]+>", " ", html_text.split('<article role="main"', 1)[-1])
        assert len(body.split()) > 40, f"{page.relative_to(site)} is nearly empty"


def _toctree_entries(caption: str) -> list[str]:
    """The entries of the index's toctree with this caption, read from docs/index.rst."""
    text = (DOCS / "index.rst").read_text()
    block = re.search(rf":caption: {caption}\n(?:\s+:\w+:.*\n)*\n((?:   \S.*\n?)+)", text)
    assert block, f"docs/index.rst has no toctree captioned {caption!r}"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def _links(html: str) -> set[str]:
    return {h.split("#", 1)[0] for h in re.findall(r'href="([^"]+)"', html)}


@pytest.mark.slow
def test_built_site_links_every_page_from_the_index(built_site):
    site = built_site["site"]
    index = (site / "index.html").read_text()
    links = _links(index)
    guide = [p for p in _toctree_entries("User guide") if any(DOCS.glob(f"{p}.*"))]
    assert {"getting_started", "units", "coming_from", "cli", "performance"} <= set(guide)
    for page in [*guide, "api/index"]:
        assert (site / f"{page}.html").is_file(), f"{page}.html was not built"
        assert f"{page}.html" in links, f"index.html does not link {page}.html"


@pytest.mark.slow
def test_built_api_pages_one_per_object_with_source_links(built_site):
    site = built_site["site"]
    api_index = (site / "api" / "index.html").read_text()
    for title in ("Batch normalization", "Sample normalization", "Weight normalization", "Functional"):
        assert f">{title}<" in api_index, f"the API index has no section {title!r}"
    assert ">Other<" not in api_index
    linked = _links(api_index)
    ext = _ext_module("unitnorm_docs")
    documented = ext.documented_objects(ext.public_modules())
    for name in documented:
        assert (site / "api" / "generated" / f"{name}.html").is_file(), f"no page for {name}"
        assert f"generated/{name}.html" in linked, f"the API index does not link {name}"

    page = (site / "api" / "generated" / "unitnorm.BatchNorm1d.html").read_text()
    source = re.search(r'href="([^"]+_modules/[^"#]+)#[^"]*"[^>]*>\s*<span class="viewcode-link">', page)
    assert source, "BatchNorm1d's page has no [source] link"
    assert (site / "api" / "generated" / source.group(1)).resolve().is_file(), source.group(1)
    # class defaults by name, never the class repr
    text = re.sub(r"<[^>]+>", "", page)
    assert "param_type=NormalizationParamState" in text
    for html_page in (site / "api").rglob("*.html"):
        assert "&lt;class &#39;" not in html_page.read_text(), f"a class repr in {html_page.name}"
    # the four BatchNorm classes link one shared page instead of repeating the parameter list
    assert "generated/batch_norm.html" in _links(page) or "batch_norm.html" in _links(page)
    assert "nan_policy" not in text.split("Examples", 1)[0].split("Parameters", 1)[-1]
    shared = re.sub(r"<[^>]+>", "", (site / "api" / "generated" / "batch_norm.html").read_text())
    for param in ("momentum", "nan_policy", "virtual_batch_size", "param_type"):
        assert param in shared, f"the shared BatchNorm page lacks {param}"


@pytest.mark.slow
def test_built_site_cross_links_copy_buttons_and_no_local_paths(built_site):
    site = built_site["site"]
    pages = list(site.rglob("*.html"))
    every = "\n".join(p.read_text() for p in pages)
    # intersphinx, offline, from the bundled inventories
    for url in (
        "https://brainunit.readthedocs.io/en/latest/apis/generated/brainunit.Quantity.html",
        "https://docs.jax.dev/en/latest/_autosummary/jax.Array.html",
        "https://docs.python.org/3/library/",
        "https://numpy.org/doc/stable/",
    ):
        assert url in every, f"no link into {url}"
    # copy buttons, with prompts stripped
    index = (site / "index.html").read_text()
    assert "copybutton.js" in index and "unitnorm.css" in index
    script = (site / "_static" / "copybutton.js").read_text()
    # the prompts as a regular expression, removed; only prompt lines copied (no doctest output)
    call = re.search(r"return formatCopyText\(text, '([^']*)', (\w+), (\w+), (\w+)", script)
    assert call, "copybutton.js does not format the copied text"
    prompts, is_regexp, only_prompt_lines, remove_prompts = call.groups()
    assert (is_regexp, only_prompt_lines, remove_prompts) == ("true", "true", "true")
    pattern = re.compile(prompts.replace("\\\\", "\\"))
    for line, rest in (
        (">>> x = 1", "x = 1"),
        ("...     f()", "    f()"),
        ("$ unitnorm --help", "unitnorm --help"),
    ):
        assert pattern.match(line) and line[pattern.match(line).end() :] == rest, (prompts, line)
    # nothing from the machine that built it
    forbidden = ["/work/", "/tmp/", "/home/", "/root/", sys.prefix, str(ROOT), str(built_site["out"])]
    for path in [*pages, *site.rglob("*.txt"), *site.rglob("*.js")]:
        text = path.read_text(errors="replace")
        for bad in forbidden:
            assert bad not in text, f"{path.relative_to(site)} contains the local path {bad!r}"


@pytest.mark.slow
def test_built_performance_page_has_a_chart_table_and_folded_details(built_site):
    page = (built_site["site"] / "performance.html").read_text()
    chart = re.search(r'<figure class="unitnorm-chart"[^>]*>\s*<svg', page)
    assert chart, "the performance page has no chart"
    assert page.count("<details") >= 3 and "<summary>" in page
    assert "–json" not in page and "--json" in page
    text = re.sub(r"<[^>]+>", " ", page)
    for word in (
        "engineer",
        "lent machine",
        "Measured once",
        "bench_streaming failed",
        "ModuleNotFoundError",
    ):
        assert word not in text, word


def test_cli_page_documents_every_subcommand_option_and_exit_status():
    """docs/cli.rst names every subcommand and option the parser has, and the exit statuses main returns."""
    import argparse

    from unitnorm.__main__ import _parser

    text = (DOCS / "cli.rst").read_text()
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"demo", "normalize", "stats"}
    for name, sub in subparsers.choices.items():
        assert f"``unitnorm {name}" in text, f"cli.rst has no section for unitnorm {name}"
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help"):
                    continue
                assert f"``{flag}" in text or f"{flag} " in text, f"cli.rst does not document {name} {flag}"
            for choice in action.choices or ():
                if action.option_strings:
                    assert str(choice) in text, (
                        f"cli.rst does not name {name} {action.option_strings} {choice}"
                    )
    assert "--version" in text
    for status in ("0", "1", "2", "130", "143"):
        assert re.search(rf"^``{status}``\s", text, re.M), f"cli.rst's exit status table lacks {status}"
    for fmt in (".npz", "Zarr", "allow_pickle=False", "ETA"):
        assert fmt in text
    index = (DOCS / "index.rst").read_text()
    assert re.search(r"^   cli$", index, re.M) and ":doc:`cli`" in index


# ----------------------------------------------------------------------------
# the performance page's data, the bundled inventories


def _ext_module(name: str, folder: str = "_ext"):
    """Import ``name`` from ``docs/<folder>`` (the docs' own Python, not an installed package)."""
    sys.path.insert(0, str(DOCS / folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(DOCS / folder))


def _bench_rows() -> list[dict]:
    def row(group, shape, impl, family, median):
        return {
            "group": group,
            "shape_name": shape,
            "shape": [2, 3, 4],
            "impl": impl,
            "family": family,
            "median_s": median,
        }

    rows = [
        row("bn_train", "small", "unitnorm layer (array)", "unitnorm", 2.0),
        row("bn_train", "small", "unitnorm layer (Quantity)", "unitnorm", 3.0),
        row("bn_train", "small", "flax.nnx, jax.jit", "flax", 4.0),
        row("bn_train", "small", "brainstate, transform.jit", "brainstate", 5.0),
        row("bn_train", "small", "plain jnp", "reference", 1.0),
        row("layer_norm", "large", "unitnorm LayerNorm (Quantity)", "unitnorm", 6.0),
        row("layer_norm", "large", "equinox, filter_jit", "equinox", 3.0),
        row("group_norm", "medium", "unitnorm GroupNorm (Quantity)", "unitnorm", 2.6),
        row("group_norm", "medium", "unitnorm GroupNorm (array), channels first", "reference", 0.8),
        row("group_norm", "medium", "equinox, filter_jit", "equinox", 1.0),
        row("group_norm", "medium", "flax.nnx, jax.jit", "flax", 2.5),
    ]
    for r in rows:  # what benchmarks/run.py adds: the ratio to the fastest peer of the case
        peers = [
            p["median_s"]
            for p in rows
            if p["group"] == r["group"] and p["family"] != "unitnorm" and p["family"] != "reference"
        ]
        r["ratio_to_fastest_peer"] = r["median_s"] / min(peers)
    return rows


def test_benchmark_summary_takes_the_quantity_layer_against_the_fastest_peer():
    perf = _ext_module("unitnorm_perf")
    entries = perf.summary({"results": _bench_rows()})
    assert [(e["group"], e["shape"]) for e in entries] == [
        ("bn_train", "small"),
        ("layer_norm", "large"),
        ("group_norm", "medium"),
    ]
    bn, ln, gn = entries
    # like for like: equinox against unitnorm's channels-first row (0.8), so flax.nnx is the worst case
    assert gn["ratio"] == pytest.approx(2.6 / 2.5) and gn["peer"] == "flax.nnx, jax.jit"
    assert bn["impl"] == "unitnorm layer (Quantity)" and bn["ratio"] == pytest.approx(3.0 / 4.0)
    assert bn["peer"] == "flax.nnx, jax.jit"  # the reference row is not a peer
    assert ln["ratio"] == pytest.approx(2.0) and ln["peer"].startswith("equinox")
    svg = perf.chart_svg(entries)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "BatchNorm1d train" in svg and "LayerNorm" in svg


def test_goals_table_marks_evidence_lines_as_shown_not_met():
    """Lines without a finite target (costs shown beside the goals) read "(shown)", never "yes"."""
    perf = _ext_module("unitnorm_perf")
    goals = [
        {
            "goal": "LayerNorm forward / fastest JAX peer",
            "shape": "large",
            "ratio": 1.07,
            "target": 1.0,
            "met": False,
        },
        {
            "goal": "RMSNorm forward / fastest JAX peer",
            "shape": "large",
            "ratio": 0.99,
            "target": 1.0,
            "met": True,
        },
        {
            "goal": "sum(x - x[0, 0]) / sum(x)",
            "shape": "large",
            "ratio": 1.4,
            "target": float("inf"),
            "met": True,
        },
    ]
    # through JSON, as the docs read it: an infinite target is written as Infinity
    rows = perf.goal_rows(json.loads(json.dumps({"goals": goals})))
    assert [r[3:] for r in rows] == [["≤ 1.00", "no"], ["≤ 1.00", "yes"], ["-", "(shown)"]]
    assert rows[2][:3] == ["sum(x - x[0, 0]) / sum(x)", "large", "1.40"]


def test_benchmark_pages_degrade_when_the_json_is_missing_or_changed(tmp_path):
    """A missing file or another schema never fails the docs build: the page says what is missing."""
    perf = _ext_module("unitnorm_perf")
    data, why = perf.load(tmp_path / "absent.json")
    assert data is None and "no benchmark results" in why
    (tmp_path / "bad.json").write_text("{not json")
    assert perf.load(tmp_path / "bad.json")[0] is None
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    data, why = perf.load(tmp_path / "other.json")
    assert data is None and "'results'" in why
    # rows without the keys read, or without peers, are skipped rather than raising
    odd = [{"group": "x"}, {"group": "y", "shape_name": "s", "impl": "u", "family": "unitnorm"}, "text"]
    assert perf.summary({"results": odd}) == []


def test_committed_benchmark_json_is_readable_and_names_no_local_path():
    perf = _ext_module("unitnorm_perf")
    path = ROOT / "benchmarks" / "results.json"
    data, why = perf.load(path)
    assert data is not None, why
    entries = perf.summary(data)
    assert {e["label"] for e in entries} >= {"BatchNorm1d train", "LayerNorm", "RMSNorm", "GroupNorm"}
    text = path.read_text()
    for bad in ("/work/", "/tmp/", "/home/", "/root/"):
        assert bad not in text, bad


def test_bundled_inventories_are_current_and_list_the_targets_the_docs_use():
    make = _ext_module("make_inventories", "_intersphinx")
    from sphinx.util.inventory import InventoryFile

    for key, (project, version, entries) in make.PROJECTS.items():
        path = DOCS / "_intersphinx" / f"{key}.inv"
        assert path.read_bytes() == make.inventory_bytes(project, version, entries), (
            f"{path.name} is stale: run python docs/_intersphinx/make_inventories.py"
        )
    inv = InventoryFile.loads(
        (DOCS / "_intersphinx" / "jax.inv").read_bytes(), uri="https://docs.jax.dev/en/latest/"
    )
    assert "jax.Array" in inv.data["py:class"] and "jax.jit" in inv.data["py:function"]
    assert inv.data["py:class"]["jax.Array"].uri.startswith("https://docs.jax.dev/en/latest/_autosummary/")


def test_benchmark_summary_holds_torch_against_the_channels_first_row():
    """torch's GroupNorm takes (channels, length) samples, as equinox's: like for like."""
    perf = _ext_module("unitnorm_perf")
    rows = [
        {"group": "group_norm", "shape_name": "large", "impl": i, "family": f, "median_s": m}
        for i, f, m in [
            ("unitnorm GroupNorm (Quantity)", "unitnorm", 4.0),
            ("unitnorm GroupNorm (array), channels first", "reference", 1.2),
            ("torch (cpu)", "torch", 1.0),
            ("flax.nnx, jax.jit", "flax", 5.0),
        ]
    ]
    for r in rows:
        r["ratio_to_fastest_peer"] = r["median_s"] / 1.0
    (gn,) = perf.summary({"results": rows})
    assert gn["ratio"] == pytest.approx(1.2) and gn["peer"] == "torch (cpu) (channels first, as its input)"
