"""The names the registries hold, without torch: what a ``TrainConfig`` accepts for
``norm``, ``optimizer`` and ``schedule``, so that validating a config (on the driver, or
reading a trials table) loads no torch. The registries (``norms.NORM_FACTORIES``,
``optim.OPTIMIZERS``, ``optim.SCHEDULES``) are keyed by exactly these, in this order, and
check it when they are built (``registered``)."""

from __future__ import annotations

from collections.abc import Mapping

NORMS = ("batch", "ghost_batch", "sync_batch", "layer", "group", "instance", "none", "hybrid")
OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")
SCHEDULES = ("cosine", "constant")
ADAM_FAMILY = ("adamw", "lamb")
"""The optimizers with Adam's moment estimates (``beta1``, ``beta2``)."""


def registered(kind: str, registry: Mapping[str, object], names: tuple[str, ...]) -> None:
    """Raise if ``registry`` is not keyed by ``names`` (a registry line without its name
    here, or the other way round)."""
    if tuple(registry) != names:
        raise RuntimeError(f"the {kind} registry {tuple(registry)} and lbt_study.train.names "
                           f"{names} differ: add a new {kind} to both")
