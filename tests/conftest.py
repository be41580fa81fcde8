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
def ray_local():
    """A 2-CPU local Ray for one test, always shut down."""
    import ray

    from lbt_study.runner import SLOT

    ray.init(num_cpus=2, resources={SLOT: 2}, include_dashboard=None,
             dashboard_host="127.0.0.1", log_to_driver=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
