"""The loop of one trial: steps, evaluations at the schedule's marks, divergence, reports."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from lbt_study.train.branching import StateSaver, start_from_state
from lbt_study.train.config import TrainConfig
from lbt_study.train.measurements.active import ActiveMeasurements
from lbt_study.train.rows import Checkpointer, Reporter, Row, RowBuilder
from lbt_study.train.setup import Cadence, Parts, agreed, assemble
from lbt_study.train.state import TrainState
from lbt_study.train.step import timed_step


@dataclass
class Outcome:
    """How a training run ended, with the trained (unwrapped) model."""

    status: str  # "ok", "diverged" or "oom"
    steps: int
    examples_seen: int
    diverged_step: int | None
    model: nn.Module = field(repr=False)


class Loop:
    """Runs a trial's steps from ``state.step`` on, reporting every evaluation."""

    def __init__(self, parts: Parts, state: TrainState, report: Reporter,
                 checkpoint: Checkpointer | None) -> None:
        self.parts, self.state = parts, state
        self.report, self.checkpoint = report, checkpoint
        self.measurements = state.measurements
        self.rows = RowBuilder(parts, state)
        self.eval_at = parts.schedule.eval_steps(parts.cfg)
        self.checkpoints = Cadence(parts.cfg.checkpoint_every_s, parts.device)
        self.saver = StateSaver(parts)  # save_states_at: the branch states

    def emit(self, row: Row) -> None:
        """Report a row; with a checkpointer, together with the state to resume from at the
        last evaluation and every ``checkpoint_every_s`` seconds (agreed by all workers)."""
        last = row["status"] == "ok"
        if self.checkpoint is not None and row["status"] in ("running", "ok") and \
                (last or self.checkpoints.due()):
            self.checkpoint(row, self.state.state_dict())
            self.checkpoints.mark()
        else:
            self.report(row)

    def run(self) -> Outcome:
        p, state = self.parts, self.state
        if p.oom_error is not None:
            self.report(self.rows.stopped(0, "oom", p.oom_error))
            return Outcome("oom", 0, 0, None, p.model)
        if state.step == 0:
            self.emit(self.rows.with_config(self.rows.evaluation(0, "running")))
        total = p.schedule.total_steps
        for step in range(state.step + 1, total + 1):
            mean_loss, seconds, examples = self.advance(step)
            reason = self.diverged(step, mean_loss)
            if reason is not None:
                self.report(self.rows.stopped(step, "diverged", reason))
                return Outcome("diverged", step, p.schedule.examples_after[step], step, p.model)
            self.rows.interval.add(mean_loss, seconds, examples)
            if step == total or self.out_of_time():
                self.emit(self.rows.final())
                if step < total:
                    return Outcome("ok", step, p.schedule.examples_after[step], None, p.model)
            elif step in self.eval_at:
                row = self.rows.evaluation(step, "running")
                if self.at_target(row):
                    self.emit(self.rows.final(row))
                    return Outcome("ok", step, p.schedule.examples_after[step], None, p.model)
                self.emit(row)
        return Outcome("ok", total, p.schedule.examples_after[-1], None, p.model)

    def out_of_time(self) -> bool:
        """Under ``budget='seconds'``: whether the training seconds are spent (agreed by all
        workers, each timing its own steps)."""
        cfg = self.parts.cfg
        if cfg.budget != "seconds" or cfg.budget_seconds is None:
            return False
        return agreed(self.state.train_seconds >= cfg.budget_seconds, self.parts.device)

    def at_target(self, row: Row) -> bool:
        """With ``stop_at_target``: whether the objective has now reached the target at
        ``stop_at_target_patience`` evaluations in a row (the same on every worker: the
        evaluation is all-reduced)."""
        cfg = self.parts.cfg
        if not cfg.stop_at_target:
            return False
        value = float(row["objective"])
        maximize = self.parts.workload.objective_direction == "maximize"
        hit = value >= cfg.target if maximize else value <= cfg.target
        self.state.at_target = self.state.at_target + 1 if hit else 0
        return self.state.at_target >= cfg.stop_at_target_patience

    def advance(self, step: int) -> tuple[float, float, int]:
        """Take step ``step``, then the measurements' ``after_update`` (the SWA average):
        (mean minibatch loss over workers, seconds, examples)."""
        p, state = self.parts, self.state
        state.step = step
        plan = p.schedule.plan_at(step)
        mean_loss, seconds = timed_step(p, plan, step, self.measurements)
        self.saver.after(step)
        state.train_seconds += seconds
        state.step_times.append(seconds)
        self.measurements.after_update(step)
        return mean_loss, seconds, plan.global_batch_size

    def diverged(self, step: int, mean_loss: float) -> str | None:
        """Why the run diverged at this step, or None."""
        if not math.isfinite(mean_loss):
            return f"non-finite loss at step {step}"
        if step == 1:
            self.state.first_loss = mean_loss
        factor = self.parts.cfg.divergence_factor
        if factor is not None and mean_loss > factor * self.state.first_loss:
            return (f"loss {mean_loss:.4g} at step {step} > {factor:g} x the first step's "
                    f"{self.state.first_loss:.4g}")
        return None


def run_training(
    cfg: TrainConfig, report: Reporter | None = None, device: torch.device | None = None,
    checkpoint: Checkpointer | None = None, resume: dict | None = None,
) -> Outcome:
    """Train one configuration on this process (one worker of a DDP group, or alone).

    ``report(row)`` gets every evaluation; with ``checkpoint``, evaluations go to
    ``checkpoint(row, state)`` instead, and ``resume=state`` continues from such a state.
    Resources are the caller's: on CPU, torch's thread count is left as it is (the Ray
    runner sets it to the trial's ``cpus_per_worker``).
    """
    parts = assemble(cfg, device or torch.device("cpu"), resume)
    state = TrainState(parts, ActiveMeasurements.build(parts))  # before any weights load
    if resume is not None:
        state.load_state_dict(resume)
    elif cfg.init_state:  # a branch: the base run's weights and optimizer state
        start_from_state(parts)
    return Loop(parts, state, report or (lambda row: None), checkpoint).run()
