"""Recording normalizations: exponential moving standardization (more to come with the scalers)."""

from unitnorm.preprocessing._ems import ExponentialMovingStandardizer, exponential_moving_standardize

__all__ = ["ExponentialMovingStandardizer", "exponential_moving_standardize"]
