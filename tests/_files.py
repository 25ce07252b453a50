"""Files the tests generate: recordings of any size, written fast."""

from pathlib import Path

import numpy as np


def write_edf(path: Path, n_channels: int, seconds: int, rate: int = 256, seed: int = 0) -> None:
    """A plain EDF of int16 samples in uV, written field by field (fast for files of many MB)."""

    def field(value, width):
        text = str(value).encode("ascii")
        assert len(text) <= width, value
        return text.ljust(width)

    header = b"".join(
        [
            field(0, 8),
            field("X X X X", 80),
            field("Startdate 01-JAN-2020 X X X", 80),
            field("01.01.20", 8),
            field("00.00.00", 8),
            field(256 * (n_channels + 1), 8),
            field("", 44),
            field(seconds, 8),
            field(1, 8),
            field(n_channels, 4),
        ]
    )
    per_signal = [
        ([f"EEG{i:03d}" for i in range(n_channels)], 16),
        (["AgAgCl electrode"] * n_channels, 80),
        (["uV"] * n_channels, 8),
        (["-3276.8"] * n_channels, 8),
        (["3276.7"] * n_channels, 8),
        (["-32768"] * n_channels, 8),
        (["32767"] * n_channels, 8),
        ([""] * n_channels, 80),
        ([rate] * n_channels, 8),
        ([""] * n_channels, 32),
    ]
    for values, width in per_signal:
        header += b"".join(field(v, width) for v in values)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write(header)
        for _ in range(0, seconds, 60):  # a minute of records at a time: (records, channels, samples)
            block = rng.integers(-2000, 2000, size=(60, n_channels, rate), dtype=np.int16)
            fh.write(block.astype("<i2").tobytes())
