"""unitnorm: units-aware normalization layers for JAX."""

from unitnorm import functional, init
from unitnorm._units import UnitError
from unitnorm.nn import BatchNorm0d, BatchNorm1d, BatchNorm2d, BatchNorm3d, Module
from unitnorm.nn._params import load_params, merge, params, partition
from unitnorm.state import BatchState, NormalizationParamState, ParamState, State

__version__ = "0.1.0"

__all__ = [
    "BatchNorm0d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchState",
    "Module",
    "NormalizationParamState",
    "ParamState",
    "State",
    "UnitError",
    "functional",
    "init",
    "load_params",
    "merge",
    "params",
    "partition",
]
