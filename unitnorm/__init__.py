"""unitnorm: units-aware normalization layers for JAX.

Submodules are attributes of the package: ``functional``, ``init``, ``nn`` and
``state`` are imported with it; ``io`` and ``preprocessing`` on first use
(``un.io.read_edf(...)``), so ``import unitnorm`` never imports pyedflib, pynwb,
MNE or neo.
"""

import importlib
from typing import Any

from unitnorm import functional, init, nn, state  # noqa: F401 - submodules as attributes
from unitnorm._checkpoint import load, save
from unitnorm._orbax import orbax_restore_args, orbax_save_args, restore_orbax, save_orbax, with_units
from unitnorm._units import UnitError
from unitnorm.functional import weight_standardization
from unitnorm.nn import (
    BatchNorm0d,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    BatchRenorm0d,
    BatchRenorm1d,
    BatchRenorm2d,
    BatchRenorm3d,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    Module,
    RMSNorm,
    SpectralNorm,
    WeightNorm,
)
from unitnorm.nn._params import load_params, merge, params, partition
from unitnorm.state import BatchState, NormalizationParamState, ParamState, State

__version__ = "0.1.0"

# submodules imported on first attribute access (module-level __getattr__, PEP 562)
_LAZY_SUBMODULES = ("io", "preprocessing")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module  # later lookups skip this function
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


__all__ = [
    "BatchNorm0d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchRenorm0d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "BatchState",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Module",
    "NormalizationParamState",
    "ParamState",
    "RMSNorm",
    "SpectralNorm",
    "State",
    "UnitError",
    "WeightNorm",
    "functional",
    "init",
    "load",
    "load_params",
    "merge",
    "orbax_restore_args",
    "orbax_save_args",
    "params",
    "partition",
    "preprocessing",
    "restore_orbax",
    "save",
    "save_orbax",
    "weight_standardization",
    "with_units",
]
