"""The command line in batch jobs: SIGTERM leaves no partial output, memory is bounded, progress is logged."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_corpus import write_edf  # noqa: E402 - the benchmarks' fast EDF writer


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_removes_the_temporary_output_and_exits_143(tmp_path):
    src = tmp_path / "long.edf"
    write_edf(src, n_channels=64, seconds=1800, seed=0)  # 59 MB: the write pass lasts long enough to stop
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unitnorm",
            "normalize",
            str(src),
            "--out",
            str(out_dir / "z.npz"),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(out_dir.iterdir()):  # the temporary file appears when the write pass starts
            assert proc.poll() is None, "the run ended before it could be stopped: " + proc.stderr.read()
            assert time.monotonic() < deadline, "no temporary output appeared within 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert os.listdir(out_dir) == [], "a partial or temporary file was left behind"
    lines = stderr.strip().splitlines()
    assert lines == ["unitnorm: terminated (SIGTERM); no output was written"], stderr


def _anon_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` that is not backed by a file (heap, arrays), in KiB."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_anon_mib(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _anon_kib(proc.pid) or 0)
        time.sleep(0.005)
    stdout, stderr = proc.communicate()
    return peak / 1024, subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status")
@pytest.mark.parametrize(
    "method, allowance",
    [
        ("zscore", 80),
        pytest.param("robust", 80, marks=pytest.mark.slow),
        pytest.param("ems", 160, marks=pytest.mark.slow),
    ],
)
def test_normalize_memory_is_bounded_by_the_chunk_not_the_file(tmp_path, method, allowance):
    """The whole CLI run stays within a few chunks of the interpreter's own memory, whatever the file size."""
    src = tmp_path / "long.edf"
    write_edf(src, n_channels=64, seconds=1800, seed=0)  # 59 MB int16: 118 MB float32 out, 236 MB float64
    baseline, _ = _peak_anon_mib(
        [sys.executable, "-c", "import jax.numpy as jnp, unitnorm, unitnorm.io; jnp.ones(3)"]
    )
    peak, proc = _peak_anon_mib(
        [
            sys.executable,
            "-m",
            "unitnorm",
            "normalize",
            str(src),
            "--out",
            str(tmp_path / "z.npz"),
            "--method",
            method,
        ]
    )
    assert proc.returncode == 0, proc.stderr
    # a chunk is 2**20 values (8 MiB in float64); allow a few of them plus the reader's buffers, far
    # below the 118 MB output that reading the result back would take (ems: plus XLA's compiled scan)
    assert peak - baseline < allowance, (
        f"peak non-file-backed memory {peak:.0f} MiB, interpreter alone {baseline:.0f} MiB"
    )


def test_progress_lines_when_not_on_a_terminal(tmp_path, monkeypatch, capsys):
    """Without a terminal (batch jobs, nohup logs) the run logs percent, MB/s and the time left."""
    from unitnorm.__main__ import main
    from unitnorm.io import _stream

    src = tmp_path / "short.edf"
    write_edf(src, n_channels=4, seconds=120, seed=0)
    monkeypatch.setattr(_stream, "PROGRESS_SECONDS", 0.0)  # a line at every chunk instead of every 10 s
    assert not sys.stderr.isatty()
    argv = ["normalize", str(src), "--out", str(tmp_path / "z.npz"), "--chunk-seconds", "30"]
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    pattern = r"unitnorm: (statistics|writing): \d+% \(\d+/30720 samples, [\d.]+ MB/s, ETA \d+:\d\d:\d\d\)"
    assert lines and all(re.fullmatch(pattern, line) for line in lines), lines
    assert {line.split(":")[1].strip() for line in lines} == {"statistics", "writing"}
    assert any("100% (30720/30720" in line for line in lines)
    # --no-progress: nothing on stderr
    assert main([*argv[:3], str(tmp_path / "y.npz"), *argv[4:], "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
