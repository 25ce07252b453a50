"""Stateful normalization layers; thin wrappers over :mod:`unitnorm.functional`."""

from unitnorm.nn._base import Module
from unitnorm.nn._batch_norm import BatchNorm0d, BatchNorm1d, BatchNorm2d, BatchNorm3d
from unitnorm.nn._batch_renorm import BatchRenorm0d, BatchRenorm1d, BatchRenorm2d, BatchRenorm3d
from unitnorm.nn._norms import GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from unitnorm.nn._weight_norms import SpectralNorm, WeightNorm

__all__ = [
    "BatchNorm0d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchRenorm0d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Module",
    "RMSNorm",
    "SpectralNorm",
    "WeightNorm",
]
