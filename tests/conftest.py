import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a spec file from source text and return its path."""

    def write(source: str, name: str = "spec.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.fixture
def start_local_ray():
    """A function that starts a 2-CPU local Ray the way the runner does (trial slots,
    dashboard on 127.0.0.1); Ray is shut down after the test. Fixtures that must first set
    environment variables for Ray's workers (they inherit the environment Ray starts with)
    call it after setting them."""
    import ray

    from lbt_study.study.cluster import SLOT

    def start():
        ray.init(num_cpus=2, resources={SLOT: 2}, include_dashboard=None,
                 dashboard_host="127.0.0.1", log_to_driver=False, logging_level="WARNING")
        return ray

    yield start
    ray.shutdown()  # a no-op if it was never started


@pytest.fixture
def ray_local(start_local_ray):
    """A 2-CPU local Ray for one test, always shut down."""
    return start_local_ray()
