"""Branch states for the branched critical batch size (Merrill et al. 2025).

A base run (``save_states_at``) saves its model and optimizer state at fractions of its
examples budget; a branch (``init_state``) starts from such a file: the weights and the
optimizer state (momentum or Adam moments included), with its own batch size, learning rate
and schedule (the runner gives it a constant learning rate: the base run's at the
checkpoint times the rule's factor).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lbt_study.errors import UserError
from lbt_study.train.config import checkpoint_step
from lbt_study.train.setup import Parts


def state_path(states_dir: str | Path, fraction: float) -> Path:
    """Where the state at ``fraction`` of the base run's budget is saved."""
    return Path(states_dir) / f"f={fraction:g}.pt"


class StateSaver:
    """Saves the base run's state after the step nearest each fraction (rank 0 writes)."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        fractions = parts.cfg.state_fractions()
        if fractions and not parts.cfg.states_dir:
            raise UserError("save_states_at needs states_dir, the directory to save into")
        if fractions and len(parts.schedule.plans) > 1:
            raise UserError("save_states_at needs a constant batch size (no batch_growth)")
        total = parts.schedule.total_steps
        self.at = {checkpoint_step(f, total): f for f in fractions}

    def after(self, step: int) -> None:
        fraction = self.at.get(step)
        if fraction is None or self.parts.rank != 0:
            return
        p = self.parts
        path = state_path(str(p.cfg.states_dir), fraction)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"model": p.model.state_dict(), "optimizer": p.opt.state_dict(),
                 "lr": float(p.opt.param_groups[0]["lr"]), "step": step, "fraction": fraction,
                 "examples_seen": int(p.schedule.examples_after[step]),
                 "batch_size": p.schedule.plan_at(step).global_batch_size}
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)  # a reader never sees half a file


def read_state(path: str | Path) -> dict:
    """A saved branch state, or a one-line ``UserError`` when it is missing or unreadable."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, EOFError) as exc:
        raise UserError(f"cannot read branch state {path}: {exc}") from None


def start_from_state(parts: Parts) -> None:
    """Load ``init_state`` into the assembled parts: the weights, then the optimizer state,
    whose learning rate is replaced by this config's (the scheduler's base lr too)."""
    state = read_state(str(parts.cfg.init_state))
    parts.model.load_state_dict(state["model"])
    opt, lr = parts.opt, parts.schedule.learning_rate
    opt.load_state_dict(state["optimizer"])
    for group in opt.param_groups:
        group["lr"] = lr
        group["initial_lr"] = lr
    if parts.sched is not None:
        parts.sched.base_lrs = [lr for _ in opt.param_groups]
