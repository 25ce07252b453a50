"""unitnorm: units-aware normalization layers for JAX."""

from unitnorm import functional, init
from unitnorm._checkpoint import load, save
from unitnorm._units import UnitError
from unitnorm.functional import weight_standardization
from unitnorm.nn import (
    BatchNorm0d,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    Module,
    RMSNorm,
)
from unitnorm.nn._params import load_params, merge, params, partition
from unitnorm.state import BatchState, NormalizationParamState, ParamState, State

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - module attribute hook
    # unitnorm.preprocessing reads recordings through unitnorm.io: imported on first use only
    if name == "preprocessing":
        import importlib

        return importlib.import_module("unitnorm.preprocessing")
    raise AttributeError(f"module 'unitnorm' has no attribute {name!r}")


__all__ = [
    "BatchNorm0d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchState",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Module",
    "NormalizationParamState",
    "ParamState",
    "RMSNorm",
    "State",
    "UnitError",
    "functional",
    "init",
    "load",
    "load_params",
    "merge",
    "params",
    "partition",
    "preprocessing",
    "save",
    "weight_standardization",
]
