"""Starting or joining Ray, once per driver, and how many trials it runs at once."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import ray

from lbt_study.errors import UserError, one_line

SLOT = "lbt_cpu"
"""Custom resource mirroring CPUs: a trial reserves all its workers' CPUs up front, so a
multi-worker trial never waits for CPUs held by other trials."""


def start_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to a cluster (``address``) or start a local one; True if it has trial slots."""
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            cpus = num_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, resources={SLOT: cpus}, include_dashboard=None,
                     dashboard_host="127.0.0.1", **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"cannot start or reach Ray at {address or 'local'}: {one_line(exc)}") \
            from None
    return SLOT in ray.cluster_resources()


def ray_running() -> bool:
    """Whether this process has started or joined Ray (``start_ray``)."""
    return ray.is_initialized()


def stop_ray() -> None:
    """Leave the Ray that ``start_ray`` started or joined (a local one shuts down)."""
    ray.shutdown()


def concurrency(requested: int | None, max_trial_cpus: int, slots: bool) -> int | None:
    """How many trials may run at once: the requested limit, else one per CPU.

    Tune asks Ray for the resources of every pending trial at once, so a 2-worker trial
    could wait forever while 1-worker trials take each CPU as it frees; the search holds
    back new trials while a multi-CPU one waits (``StudySearch.suggest``), so it starts as
    soon as enough CPUs are free, and 1-worker trials fill every CPU otherwise. A trial
    larger than the cluster would wait forever: that is a ``UserError``.
    """
    if not slots:
        return requested
    total = int(ray.cluster_resources()[SLOT])
    if max_trial_cpus > total:
        raise UserError(f"the space gives trials of {max_trial_cpus} CPUs (workers x "
                        f"cpus_per_worker) but the cluster has {total} {SLOT}: they could "
                        "never start")
    return requested or total




@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[bool]:
    """Within: Ray, started (or joined, with ``address``) here unless this process already
    has it, and left again on the way out only if started here. Yields whether the cluster
    has trial slots (``SLOT``). The one place a driver starts Ray: a study's cells and an
    adaptive study's rounds all run inside one session."""
    started_here = not ray.is_initialized()
    slots = start_ray(address, num_cpus) if started_here else SLOT in ray.cluster_resources()
    try:
        yield slots
    finally:
        if started_here:
            ray.shutdown()
