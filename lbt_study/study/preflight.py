"""Check a study before any Ray work: the workload, the fixed settings and a sample of the space.

The space is define-by-run, so its configs cannot be enumerated; ``check_study`` draws
``samples`` configs from it with Optuna's random sampler (no training), after the study's
``initial_points``, and validates each one
completely (trial config, batch plan, model construction), so a batch size that does not
divide or a norm a model cannot take is reported before the study starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

from lbt_study.errors import UserError, one_line
from lbt_study.study.spec import Study, suggest
from lbt_study.train.batching import phase_plans, step_batch_sizes
from lbt_study.train.config import TrainConfig, parse_config
from lbt_study.train.norms import NormSpec
from lbt_study.train.workload import Workload, get_workload


def check_config(values: dict[str, Any], workload: Workload, seen: set[tuple]) -> TrainConfig:
    cfg = parse_config(values)
    phase_plans(cfg)  # the batch arithmetic of every growth phase divides
    key = (cfg.model, cfg.norm, cfg.ghost_batch_size, cfg.norm_groups)
    if key not in seen:
        norm = NormSpec(cfg.norm, cfg.ghost_batch_size, cfg.norm_groups)
        try:
            workload.make_model(cfg.model, norm)
        except UserError:
            raise
        except Exception as exc:  # a user's model factory is user code
            raise UserError(f"workload {cfg.workload!r} could not build model {cfg.model!r} "
                            f"with norm {cfg.norm!r}: {one_line(exc)}") from None
        seen.add(key)
    return cfg


@dataclass(frozen=True)
class Checked:
    """What the preflight learnt: the workload, the largest trial in CPUs (workers x
    cpus_per_worker) among the sampled configs, and the study's target."""

    workload: Workload
    max_trial_cpus: int
    target: float | None
    """The objective threshold: the study's, else the workload's."""


def check_study(study: Study, samples: int = 64) -> Checked:
    """Raise ``UserError`` (one line) for the first invalid thing found."""
    workload = get_workload(study.workload)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=study.sampler_seed))
    for point in study.initial_points:
        probe.enqueue_trial(point)
    seen: set[tuple] = set()
    target = study.target if study.target is not None else workload.target
    check_targets(study, workload)
    max_cpus = 1
    cells = study.cells()
    draws = len(study.initial_points) + max(samples, len(cells))
    for i in range(draws):
        trial = probe.ask()
        suggested = suggest(study, trial)
        cell = cells[i % len(cells)]  # every cell's protocol values are checked too
        try:
            values = study.trial_values(cell.apply(suggested), target)
            cfg = check_config(values, workload, seen)
        except UserError as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in sorted(suggested.items()))
            where = f" in {cell.study_name}" if cell.overrides else ""
            raise UserError(f"{exc} (space gave{where}: {shown})") from None
        max_cpus = max(max_cpus, cfg.workers * cfg.cpus_per_worker)
        probe.tell(trial, 0.0)
        if i == 0 and study.branched is not None:  # cell 0 is the base run
            check_branch_steps(study.branched.fractions, cfg, workload)
    return Checked(workload, max_cpus, target)


BOUNDED = {"accuracy": (0.0, 1.0)}
"""Objectives whose every value lies in a closed range: a target outside it is reached by
every trial at step 0 (below) or by none (above)."""


def check_targets(study: Study, workload: Workload) -> None:
    """``target`` and ``targets`` inside the objective's range (accuracy: [0, 1])."""
    bounds = BOUNDED.get(workload.objective)
    if bounds is None:
        return
    low, high = bounds
    named = [("target", study.target)] if study.target is not None else []
    named += [(f"targets[{i}]", t) for i, t in enumerate(study.targets)]
    for name, value in named:
        if not low <= value <= high:
            raise UserError(f"{name} {value:g} is outside [{low:g}, {high:g}], the range of "
                            f"val_{workload.objective} (workload {workload.name!r}): every "
                            f"trial would {'reach' if value < low else 'miss'} it")


def check_branch_steps(fractions: list[float], base: TrainConfig, workload: Workload) -> None:
    """Every branch fraction lands on a step of its own, at step 1 or later, of the base
    run (a fraction before step 1, or two on one step, would be found only once the base
    trial ran: its states would be missing). An epochs budget needs the training set's
    size: a workload whose data cannot be loaded here is checked by the trial itself."""
    try:
        n = 0 if base.budget != "epochs" else len(workload.load_data(base.seed).x_train)
    except Exception:  # a dataset only the workers can reach
        return
    total = len(step_batch_sizes(base, n))
    steps = [math.floor(f * total + 0.5) for f in fractions]
    early = [f for f, s in zip(fractions, steps, strict=True) if s < 1]
    shared = len(set(steps)) < len(steps)
    if early or shared:
        what = (f"{early} fall before step 1" if early else
                f"{fractions} share steps ({steps})")
        raise UserError(f"branched.fractions {what} of the base run ({total} steps at batch "
                        f"size {base.batch_size}): each fraction must be at least "
                        f"{0.5 / total:.3g} and the fractions at least {1 / total:.3g} apart")
