import os

import hypothesis

hypothesis.settings.register_profile(
    "default", deadline=None, max_examples=30, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.register_profile(
    "slow", deadline=None, max_examples=300, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the project's addopts): one worker per core this process may use, at most 4.

    Each worker imports JAX and compiles its own programs (about 1 GB at its peak), so a
    many-core machine gains little beyond 4 and would spend memory.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))
