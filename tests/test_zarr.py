"""unitnorm.io's Zarr writer and reader: atomic stores, chunks, attributes, errors that name the field."""

import os

import brainunit as u
import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from unitnorm.io import Recording, read_zarr, write_zarr  # noqa: E402


def test_array_round_trip_with_chunks_and_attributes(tmp_path):
    x = np.random.default_rng(0).normal(size=(1000, 3))
    path = tmp_path / "x.zarr"
    write_zarr(path, x, {"channel_names": ["a", "b", "c"], "sampling_rate_hz": 500.0}, chunk_samples=128)
    store = zarr.open_group(str(path), mode="r")
    assert store["data"].dtype == np.float32 and store["data"].chunks == (128, 3)
    np.testing.assert_array_equal(store["data"][:], x.astype(np.float32))
    rec = read_zarr(path)
    assert rec.channel_names == ("a", "b", "c") and float(rec.sampling_rate.mantissa) == 500.0
    assert rec.stats == {} and rec.attrs["sampling_rate_hz"] == 500.0
    np.testing.assert_array_equal(rec.mantissa(100, 300), x[100:300].astype(np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["x.zarr"]  # no temporary store left


def test_recording_is_streamed_in_chunks(tmp_path):
    rec = Recording(np.arange(20.0).reshape(10, 2) * u.mV, 10.0, channel_names=["p", "q"])
    write_zarr(
        tmp_path / "r.zarr", rec, {"channel_names": ["p", "q"], "sampling_rate_hz": 10.0}, chunk_samples=3
    )
    back = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")["data"]
    assert back.chunks == (3, 2)
    np.testing.assert_array_equal(back[:], np.arange(20.0).reshape(10, 2))


def test_statistics_come_back_as_quantities(tmp_path):
    attrs = {
        "channel_names": ["Cz", "B"],
        "sampling_rate_hz": 100.0,
        "stats": {
            "mean": {"values": [1.5, -2.0], "unit": ["uV", "fT"]},
            "var": {"values": [4.0, 9.0], "unit": ["uV^2", "fT^2"]},
            "flat": {"values": [0.0, None], "unit": ["", ""]},
        },
    }
    write_zarr(tmp_path / "s.zarr", np.zeros((4, 2)), attrs)
    stats = read_zarr(tmp_path / "s.zarr").stats
    assert stats["mean"][0].unit == u.uvolt and float(stats["mean"][0].mantissa) == 1.5
    assert stats["var"][1].unit == u.ftesla**2 and float(stats["var"][1].mantissa) == 9.0
    assert float(stats["flat"][0]) == 0.0 and np.isnan(stats["flat"][1])


def test_existing_store_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "x.zarr"
    write_zarr(path, np.ones((3, 1)), {"v": 1})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_zarr(path, np.zeros((3, 1)), {"v": 2})
    assert zarr.open_group(str(path), mode="r").attrs["v"] == 1
    write_zarr(path, np.zeros((3, 1)), {"v": 2}, overwrite=True)
    assert zarr.open_group(str(path), mode="r").attrs["v"] == 2
    assert sorted(os.listdir(tmp_path)) == ["x.zarr"]


class _Boom(Exception):
    pass


class _FailingSource:
    """Reads two blocks, then the file 'breaks' (a real failure mode: a truncated file)."""

    n_samples = 30

    def open(self):
        import contextlib

        @contextlib.contextmanager
        def opened():
            def read(start, stop, columns):
                if start >= 20:
                    raise _Boom("the file ended early")
                return np.zeros((stop - start, len(list(columns))))

            yield read

        return opened()


def test_a_failure_midway_leaves_nothing_behind(tmp_path):
    rec = Recording._from_source(_FailingSource(), ["a"], [u.UNITLESS], 10.0)
    write_zarr(tmp_path / "x.zarr", np.ones((2, 1)), {"keep": True})
    with pytest.raises(_Boom):
        write_zarr(tmp_path / "x.zarr", rec, {}, chunk_samples=10, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["x.zarr"]  # the old store intact, no temporary left
    assert zarr.open_group(str(tmp_path / "x.zarr"), mode="r").attrs["keep"] is True


def test_bad_input_and_bad_stores_are_named(tmp_path):
    with pytest.raises(TypeError, match="Quantity"):
        write_zarr(tmp_path / "q.zarr", np.ones((2, 2)) * u.mV)
    with pytest.raises(TypeError, match="2-D"):
        write_zarr(tmp_path / "v.zarr", np.ones(3))
    with pytest.raises(FileNotFoundError, match="output folder"):
        write_zarr(tmp_path / "no" / "x.zarr", np.ones((2, 2)))
    with pytest.raises(FileNotFoundError, match="no such Zarr store"):
        read_zarr(tmp_path / "missing.zarr")
    write_zarr(tmp_path / "bare.zarr", np.ones((2, 2)), {"sampling_rate_hz": 1.0})
    with pytest.raises(ValueError, match="'channel_names' is missing"):
        read_zarr(tmp_path / "bare.zarr")
    write_zarr(tmp_path / "wrong.zarr", np.ones((2, 2)), {"channel_names": ["a"], "sampling_rate_hz": 1.0})
    with pytest.raises(ValueError, match="shape"):
        read_zarr(tmp_path / "wrong.zarr")
    attrs = {"channel_names": ["a", "b"], "sampling_rate_hz": 1.0, "stats": {"mean": {"values": [1.0]}}}
    write_zarr(tmp_path / "stats.zarr", np.ones((2, 2)), attrs)
    with pytest.raises(ValueError, match="'stats.mean'"):
        read_zarr(tmp_path / "stats.zarr")
