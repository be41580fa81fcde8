"""The vocabulary of the result tables, below everything that writes or reads them.

Statuses, objective directions, the documented columns of the history table (one row per
trial and evaluation) and of the trials table (one row per trial), and the at-target columns.
The trial-config columns of the trials table are ``TrainConfig``'s fields
(``lbt_study.records.results.TRIALS_COLUMNS`` adds them) and the measurements' columns are
declared, with their meanings, by the measurement registry (``lbt_study.train.measurements``,
torch-free); everything else is named here once.
"""

from __future__ import annotations

from lbt_study.train.measurements import (
    about_columns,
    evaluation_columns,
    final_columns,
    seconds_columns,
)

STATUSES = ("ok", "pruned", "diverged", "oom", "failed")
"""How a trial ended."""
DIRECTIONS = ("maximize", "minimize")
"""How an objective is optimised; a workload declares it, nothing guesses it from a name."""

HISTORY_COLUMNS: dict[str, str] = {
    "trial_id": "Tune trial id (joins the trials table)",
    "step": "optimizer steps taken (0 = before training)",
    "examples_seen": "steps x global batch size",
    "epoch": "examples seen / training-set size",
    "batch_size_current": "global batch size of the last step (grows under batch_growth)",
    "train_seconds": "training time so far, evaluation excluded",
    "lr": "learning rate of the last step",
    "minibatch_loss": "mean training loss of the steps since the previous evaluation",
    "train_loss": "loss on a fixed training subset, eval mode",
    "train_accuracy": "accuracy on the same subset, eval mode",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
    "gap_loss": "val_loss - train_loss",
    "gap_accuracy": "train_accuracy - val_accuracy",
    "throughput": "training examples/s since the previous evaluation",
    "replica_spread": "max - min over DDP workers of the parameter sum (0: replicas agree)",
    "world_size": "workers in the process group, as the workers measured it",
    "worker_nodes": "Ray node id of each worker in rank order, comma-separated",
    **evaluation_columns(),
    "step_time_median": "median seconds per optimizer step since the previous evaluation",
    "step_time_p90": "90th percentile of the same",
    "peak_memory_bytes": "CUDA max allocated (GPU) or process peak RSS (CPU), so far",
    "mfu": "model FLOPs utilisation since the previous evaluation (GPU; NaN on CPU)",
    "objective": "the workload's objective on the validation set",
}
"""Documented history columns (the measurements' from the registry). A workload's own
metrics add ``train_<name>`` and ``val_<name>`` columns (``metric_columns``)."""

TRIAL_ONLY_KEYS: frozenset[str] = frozenset({
    "status", "error", "diverged_step", "total_steps", "warmup_steps", "train_examples",
    "eval_seconds", "flops_per_example", "micro_batch_size", "accumulation_steps_used",
    "norm_batch_size", "mfu_run", "step_time_median_run", "step_time_p90_run",
    "learning_rate", "adam_beta2", "adamw_tau_epochs", "batch_schedule", "config_as_run",
    "stopped_at_target",
    *final_columns(), *about_columns(), *seconds_columns(),
})
"""Keys a trial reports with its evaluations that describe the trial, not the evaluation:
they go to the trials table and are deliberately left out of the history table."""


def metric_columns(metrics: tuple[str, ...] | list[str]) -> list[str]:
    """History columns of a workload's metrics (loss first): train_<m> and val_<m>."""
    names = ["loss", *[m for m in metrics if m != "loss"]]
    return [f"{split}_{m}" for split in ("train", "val") for m in names]


FINAL_METRICS = (
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "gap_loss", "gap_accuracy",
    "objective", "gns_probe",
)
"""Evaluation columns copied into the trials table as ``final_<name>``."""

AT_TARGET: dict[str, str] = {
    "steps_to_target": "step",
    "examples_to_target": "examples_seen",
    "seconds_to_target": "train_seconds",  # training time only, evaluation excluded
    "epoch_to_target": "epoch",
    "gap_accuracy_at_target": "gap_accuracy",
    "gap_loss_at_target": "gap_loss",
}
"""At-target column -> the history column it is read from, interpolated at the crossing of the
target (``lbt_study.records.targets.time_to_target``: the evaluation that counts as reaching
it under the study's ``target_crossing`` rule, placed between it and the evaluation before it
in log steps)."""

TRIALS_AT_TARGET = ("steps_to_target", "examples_to_target", "seconds_to_target",
                    "gap_accuracy_at_target", "gap_loss_at_target")
"""The at-target columns the trials table keeps."""

TRIAL_IDENTITY_COLUMNS: dict[str, str] = {
    "trial_id": "Tune trial id",
    "optuna_study": "Optuna study name (the study's name; name/B=.. per protocol cell)",
    "optuna_trial_number": "Optuna trial number (joins trials_dataframe's `number`)",
    "status": "ok, pruned, diverged, oom or failed",
    "error": "one-line reason for failed trials",
}
"""The first columns of the trials table; the trial-config columns follow them."""

TRIAL_RESULT_COLUMNS: dict[str, str] = {
    "learning_rate": "the learning rate used (lr, or base_lr scaled to the batch size)",
    "adam_beta2": "the Adam-family second-moment decay used (beta2, or under beta2_rule "
                  "half_life beta2 ** (B / beta2_ref_batch_size)); empty for other optimizers",
    "adamw_tau_epochs": "AdamW's timescale B / (lr x weight_decay x training-set size) in "
                        "epochs (Bergsma et al. 2025); empty without AdamW and weight decay",
    "micro_batch_size": "examples per forward/backward on one worker (as run)",
    "accumulation_steps_used": "micro-batches per worker per step as run (more than asked when "
                               "memory forced a smaller micro-batch; B unchanged)",
    "norm_batch_size": "examples one normalization statistic sees (empty if none)",
    "batch_schedule": "the trial's batch arithmetic in one line, as printed at its start",
    "train_examples": "training-set size",
    "total_steps": "steps the trial was configured for",
    "warmup_steps": "linear-warmup steps",
    "steps": "steps actually taken",
    "examples_seen": "steps x global batch size",
    **{f"final_{m}": f"{m} at the last evaluation" for m in FINAL_METRICS},
    "best_objective": "best objective over the trial's evaluations",
    "throughput": "examples_seen / train_seconds",
    "train_seconds": "training time, evaluation excluded",
    "eval_seconds": "evaluation time, the measurements' included",
    **seconds_columns(),
    "wall_seconds": "trial wall time seen by the driver (start to finish)",
    "started_at": "when the trial started (Unix seconds, the driver's clock)",
    "finished_at": "when the driver recorded it finished (Unix seconds)",
    "fixed_cost_seconds": "wall_seconds - train_seconds - eval_seconds",
    "diverged_step": "step with a non-finite loss (diverged trials)",
    "evaluations": "rows in the history table",
    "final_gns_simple": "gradient noise scale at the last evaluation",
    **about_columns(),
    "gns_at_target": "gns_probe at the evaluation that counts as reaching the target under "
                     "the study's target_crossing (steps_to_target, interpolated, lies just "
                     "before it); NaN if never reached or not measured there",
    "gns_probe_se_at_target": "its jackknife standard error",
    "gns_mean_to_target": "mean gns_probe over the evaluations it was measured at, up to and "
                          "including that one (log-spaced: once per doubling by default)",
    "flops_per_example": "forward+backward FLOPs per training example (torch FlopCounterMode)",
    "mfu": "model FLOPs utilisation over the whole run (GPU; NaN on CPU)",
    "step_time_median": "median seconds per optimizer step over the run",
    "step_time_p90": "90th percentile of the same",
    "peak_memory_bytes": "CUDA max allocated (GPU) or process peak RSS (CPU)",
    **final_columns(),
    "worker_nodes": "Ray node id of each worker in rank order (as the workers reported)",
    "branch_of": "branched protocol: the base trial a branch starts from (empty otherwise)",
    "branch_fraction": "branched protocol: the fraction of the base run's budget at which the "
                       "branch starts (NaN otherwise)",
    "branch_k": "branched protocol: the branch's batch size over the base's (NaN otherwise)",
    "stopped_at_target": "whether the trial ended at its target (stop_at_target) before its "
                         "budget",
    "target": "the objective threshold for time-to-target (the workload's, or the study's)",
    "reached_target": "whether an evaluation reached the target",
    **{c: f"{c.replace('_', ' ')} (interpolated at the target's crossing; NaN if never)"
       for c in TRIALS_AT_TARGET},
}
"""The trials-table columns after the trial config: what the trial did and measured."""
