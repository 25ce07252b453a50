"""Stateful normalization layers; thin wrappers over :mod:`unitnorm.functional`."""

from unitnorm.nn._base import Module
from unitnorm.nn._batch_norm import BatchNorm0d, BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = ["BatchNorm0d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Module"]
