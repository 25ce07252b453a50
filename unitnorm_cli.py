"""The ``unitnorm`` command's entry point: parses the command line with the standard library only.

``unitnorm --help``, ``unitnorm SUBCOMMAND --help``, ``unitnorm --version`` and usage
errors are answered here, before anything heavy is imported: this module is a
top-level module (not ``unitnorm.something``), because importing any submodule of
``unitnorm`` runs the package's ``__init__``, which imports JAX (2-3 s). The
subcommands themselves live in :mod:`unitnorm.__main__` and are imported only
once the arguments are parsed. ``python -m unitnorm --help`` goes through the
package and so still imports JAX; the installed ``unitnorm`` command does not.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main", "version"]

DEMO_PLOT = "unitnorm-demo.png"


def version() -> str:
    """Return unitnorm's version without importing the package.

    Read from the ``__version__ = "..."`` line of the package's ``__init__.py``
    (found with :func:`importlib.util.find_spec`, which does not run it), so the
    command reports the version of the code it runs, installed or not.
    """
    spec = importlib.util.find_spec("unitnorm")
    origin = None if spec is None else spec.origin
    try:
        with open(origin or "", encoding="utf-8") as f:
            found = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
        if found:
            return found.group(1)
    except OSError:  # not a plain file (a zip or frozen install): ask the installed metadata
        pass
    try:
        return importlib.metadata.version("unitnorm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="unitnorm", description="Units-aware normalization for JAX and recordings.")
    parser.add_argument("--version", action="version", version=f"unitnorm {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,normalize,stats}")
    d = sub.add_parser(
        "demo", help="normalize the bundled EEG recording; print statistics, plot before/after"
    )
    d.add_argument("--plot", default=DEMO_PLOT, help=f"where to write the PNG (default: ./{DEMO_PLOT})")
    n = sub.add_parser(
        "normalize",
        help="normalize a recording per channel into an .npz, or a corpus into Zarr stores (--out-dir)",
    )
    n.add_argument(
        "inputs",
        nargs="+",
        metavar="PATH",
        help="an EDF/BDF, NWB or FIF file, or any format neo reads; with --out-dir, files, glob "
        "patterns, folders or a BIDS root",
    )
    where = n.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="the .npz to write (atomically), for one recording")
    where.add_argument("--out-dir", metavar="DIR", help="write DIR/<file stem>.zarr for every recording")
    _corpus_options(n)
    n.add_argument(
        "--method",
        choices=["zscore", "robust", "mad", "quantile", "ems"],
        default=None,
        help="zscore: (x - mean) / std (default); robust: (x - median) / IQR; "
        "mad: (x - median) / (1.4826 MAD); quantile: (x - median) / (q99 - q1); "
        "ems: exponential moving standardization",
    )
    n.add_argument(
        "--stats", metavar="STATS", help="apply a scaler saved with --save-stats instead of fitting"
    )
    n.add_argument("--save-stats", metavar="STATS", help="save the fitted scaler (a unitnorm checkpoint)")
    n.add_argument(
        "--factor-new", type=float, metavar="F", help="ems: weight of each new sample (default 1e-3)"
    )
    n.add_argument(
        "--init-block-size", type=int, metavar="N", help="ems: samples standardized as one block first"
    )
    n.add_argument("--eps", metavar="EPS", help="ems: floor of the std, with a unit, e.g. 1e-4uV")
    n.add_argument(
        "--channels",
        nargs="+",
        metavar="NAME",
        help="channels to keep (names, or comma-separated); with --out-dir also intersection or union",
    )
    n.add_argument("--chunk-seconds", type=float, metavar="S", help="seconds of samples read at a time")
    n.add_argument("--name", help="NWB: the TimeSeries to read; neo: the signal (segment/name when several)")
    n.add_argument(
        "--skip-unknown-units",
        action="store_true",
        help="EDF/BDF: leave out channels whose unit unitnorm does not know (one warning names them)",
    )
    t = sub.add_parser("stats", help="fit statistics over a corpus of recordings; save them for --stats")
    t.add_argument("inputs", nargs="+", metavar="PATH", help="files, glob patterns, folders or a BIDS root")
    t.add_argument("--out", required=True, metavar="STATS", help="the fitted scaler (a unitnorm checkpoint)")
    t.add_argument(
        "--method",
        choices=["zscore", "robust", "mad", "quantile"],
        default=None,
        help="zscore (default), robust, mad or quantile, as for normalize",
    )
    t.add_argument(
        "--channels",
        nargs="+",
        metavar="NAME",
        help="intersection (default: the channels every recording has), union, or names A,B,C",
    )
    _corpus_options(t)
    return parser


def _corpus_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nan-policy",
        choices=["propagate", "omit", "raise"],
        default=None,
        help="non-finite samples (gaps of an EDF+D file read as NaN): propagate into the statistics "
        "(default), omit them, or stop with an error naming the channels",
    )
    p.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="a recording that cannot be read: stop (default, before writing anything) or skip it",
    )
    p.add_argument(
        "--scheduler",
        metavar="processes|ADDRESS",
        help="run the per-file tasks on a local Dask cluster (processes) or a running one (tcp://HOST:PORT)",
    )
    p.add_argument("--workers", type=int, metavar="N", help="worker processes for --scheduler processes")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar (default: on a terminal; otherwise one line every 10 s on stderr)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``unitnorm`` command; returns the exit status.

    Parses ``argv`` (default: ``sys.argv[1:]``) without importing JAX or unitnorm;
    then runs the subcommand (:func:`unitnorm.__main__.run`).
    """
    for stream in (sys.stdout, sys.stderr):  # channel names from files may not fit the terminal's encoding
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    from unitnorm.__main__ import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
