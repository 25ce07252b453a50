"""Recording normalizations with the scikit-learn protocol, statistics kept as Quantities.

- :class:`StandardScaler`, :class:`RobustScaler`, :class:`QuantileScaler`:
  ``fit`` / ``partial_fit`` / ``transform`` / ``inverse_transform`` /
  ``fit_transform`` per channel (or per physical dimension), exact in float64,
  on arrays, Quantities, Recordings (streamed) or iterables of chunks; saved and
  loaded with :func:`unitnorm.save` / :func:`unitnorm.load`; ``as_layer()`` puts
  them at the front of a model.
- :func:`exponential_moving_standardize` and :class:`ExponentialMovingStandardizer`
  (Schirrmeister et al. 2017, as in Braindecode), with ``eps`` in units.
- Streaming statistics of recordings larger than memory: :func:`channel_stats`,
  :func:`robust_stats`, :func:`normalize_recording`, :func:`write_normalized`.
- Corpora (many recordings, one set of statistics): :func:`fit_corpus`,
  :func:`normalize_corpus` (one Zarr store per recording) and :func:`find_recordings`;
  per-file tasks run here, on a local Dask cluster or on yours (``unitnorm[scale]``).
"""

from unitnorm.preprocessing._corpus import CorpusReport, find_recordings, fit_corpus, normalize_corpus
from unitnorm.preprocessing._ems import ExponentialMovingStandardizer, exponential_moving_standardize
from unitnorm.preprocessing._layer import ScalerLayer
from unitnorm.preprocessing._scalers import NotFittedError, QuantileScaler, RobustScaler, StandardScaler
from unitnorm.preprocessing._stream import (
    ChannelStats,
    RobustStats,
    channel_stats,
    normalize_recording,
    robust_stats,
    scaler_for,
    write_normalized,
)

__all__ = [
    "ChannelStats",
    "CorpusReport",
    "ExponentialMovingStandardizer",
    "NotFittedError",
    "QuantileScaler",
    "RobustScaler",
    "RobustStats",
    "ScalerLayer",
    "StandardScaler",
    "channel_stats",
    "exponential_moving_standardize",
    "find_recordings",
    "fit_corpus",
    "normalize_corpus",
    "normalize_recording",
    "robust_stats",
    "scaler_for",
    "write_normalized",
]
