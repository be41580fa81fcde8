"""Whole studies on a real local Ray (2 CPUs): tables, Optuna DB, DDP trials, ASHA, failures."""

import math

import optuna
import pytest
import torch

from lbt_study import Study, load_results
from lbt_study.study.driver import run_study
from lbt_study.study.preflight import check_study

pytestmark = pytest.mark.ray


def _space(trial):
    return {
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "lr": trial.suggest_float("lr", 1e-3, 0.3, log=True),
        "norm": trial.suggest_categorical("norm", ["batch", "layer"]),
        # 0: every micro-batch "runs out of memory" (an injected fault)
        "fault_oom_above": trial.suggest_categorical("fault_oom_above", [None, 0]),
    }


def _run(study, tmp_path, ray_local):
    checked = check_study(study)
    lines = []
    run_study(study, tmp_path, checked.workload.objective_direction,
              max_trial_cpus=checked.max_trial_cpus, progress=lines.append)
    trials, history = load_results(tmp_path)
    return trials, history, [line for line in lines if not line.startswith("... ")]


def test_study_tables_match_optuna_and_record_divergence_and_oom(tmp_path, ray_local):
    study = Study(
        name="e2e", space=_space, trials=5, sampler_seed=3, optuna_intermediate_values=True,
        fixed={"model": "mlp", "epochs": 1, "eval_every_examples": 512},
        initial_points=[
            {"batch_size": 32, "lr": 0.1, "norm": "batch", "fault_oom_above": None},
            {"batch_size": 64, "lr": 1e4, "norm": "layer", "fault_oom_above": None},  # diverges
            {"batch_size": 64, "lr": 0.1, "norm": "layer", "fault_oom_above": 0},  # no fit
        ],
    )
    trials, history, lines = _run(study, tmp_path, ray_local)

    assert len(trials) == 5 and len(lines) == 5
    by_number = trials.set_index("optuna_trial_number")
    assert by_number.loc[1, "status"] == "diverged"
    assert by_number.loc[1, "diverged_step"] >= 1
    assert by_number.loc[2, "status"] == "oom"
    assert by_number.loc[2, "error"].startswith("out of memory at every micro-batch for B=64")
    assert by_number.loc[0, "status"] == "ok"  # and the study went on after both
    ok = trials[trials["status"] == "ok"]
    # every finished trial evaluated at step 0, at each 512 examples and at its last step
    for row in ok.itertuples():
        steps = history.loc[history["trial_id"] == row.trial_id, "step"].tolist()
        assert steps[0] == 0 and steps[-1] == row.total_steps and len(steps) >= 3
        assert row.total_steps == math.ceil(1437 / row.batch_size)
        assert row.examples_seen == row.total_steps * row.batch_size
        assert row.fixed_cost_seconds == pytest.approx(
            row.wall_seconds - row.train_seconds - row.eval_seconds)

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    ot = optuna.load_study(study_name="e2e", storage=storage)
    assert len(ot.trials) == 5
    for t in ot.trials:
        rec = by_number.loc[t.number]
        assert t.user_attrs["tune_trial_id"] == rec["trial_id"]
        assert t.user_attrs["status"] == rec["status"]
        assert t.params["batch_size"] == rec["batch_size"]
        assert t.params["lr"] == pytest.approx(rec["lr"])
        if rec["status"] == "ok":
            assert t.state == optuna.trial.TrialState.COMPLETE
            assert t.value == pytest.approx(rec["final_objective"])
            # intermediate values are reported at examples seen
            assert max(t.intermediate_values) == rec["examples_seen"]
        else:
            assert t.state == optuna.trial.TrialState.FAIL
    joined = trials.merge(ot.trials_dataframe(), left_on="optuna_trial_number", right_on="number")
    assert len(joined) == 5
    assert (joined["params_batch_size"] == joined["batch_size"]).all()


def test_two_worker_trial_runs_ddp_through_ray_train(tmp_path, ray_local):
    def space(trial):
        return {"batch_size": trial.suggest_categorical("batch_size", [64]), "lr": 0.05}

    study = Study(name="ddp", space=space, trials=1,
                  fixed={"workers": 2, "norm": "sync_batch", "model": "mlp", "epochs": 1})
    trials, history, _ = _run(study, tmp_path, ray_local)
    assert trials.loc[0, "status"] == "ok", trials.loc[0, "error"]
    assert trials.loc[0, "micro_batch_size"] == 32
    assert trials.loc[0, "norm_batch_size"] == 64  # SyncBN pools both workers' micro-batches
    assert (history["world_size"] == 2).all()
    assert (history["replica_spread"].abs() < 1e-6).all()
    assert history["val_accuracy"].iloc[-1] > 0.5


def test_asha_stops_poor_trials_and_optuna_records_them_pruned(tmp_path, ray_local):
    def space(trial):
        return {"lr": trial.suggest_float("lr", 1e-5, 0.5, log=True)}

    from lbt_study import Asha

    study = Study(
        name="asha", space=space, trials=3,
        # long enough (a few seconds) for ASHA's decisions to reach a running trial: a
        # trial that ends before its stop arrives ran its whole budget and is recorded "ok"
        fixed={"batch_size": 16, "model": "mlp", "norm": "batch", "epochs": 20,
               "eval_every_examples": 512},
        asha=Asha(grace_examples=512, max_examples=20 * 1437, reduction_factor=2),
        initial_points=[{"lr": 0.1}, {"lr": 1e-5}, {"lr": 1.1e-5}],
    )
    trials, history, _ = _run(study, tmp_path, ray_local)
    by_number = trials.set_index("optuna_trial_number")
    assert by_number.loc[0, "status"] == "ok"
    assert by_number.loc[2, "status"] == "pruned"
    assert by_number.loc[2, "steps"] < by_number.loc[2, "total_steps"]
    ot = optuna.load_study(study_name="asha", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = {t.number: t.state for t in ot.trials}
    assert states[0] == optuna.trial.TrialState.COMPLETE
    assert states[2] == optuna.trial.TrialState.PRUNED


def test_a_killed_worker_resumes_from_its_checkpoint_and_ends_as_if_uninterrupted(
        tmp_path, ray_local):
    import glob
    import os
    import tempfile

    def space(trial):
        return {"workers": trial.suggest_categorical("workers", [1, 2]),
                "fault_exit_at_step": trial.suggest_categorical("fault", [None, 20])}

    study = Study(
        name="faults", space=space, trials=4,
        fixed={"model": "mlp", "norm": "batch", "batch_size": 64, "lr": 0.05, "epochs": 2,
               "eval_every_examples": 400, "dtype": "float64", "seed": 5},
        initial_points=[{"workers": w, "fault": f} for w in (2, 1) for f in (20, None)],
    )
    try:
        trials, history, _ = _run(study, tmp_path, ray_local)
    finally:
        for marker in glob.glob(os.path.join(tempfile.gettempdir(), "lbt_fault_*")):
            os.remove(marker)
    by_number = trials.set_index("optuna_trial_number")
    assert (trials["status"] == "ok").all(), trials[["status", "error"]]
    for killed, clean in ((0, 1), (2, 3)):
        a, b = by_number.loc[killed], by_number.loc[clean]
        for col in ("final_val_loss", "final_val_accuracy", "final_train_loss", "examples_seen"):
            assert a[col] == b[col], col
        steps_a = history.loc[history["trial_id"] == a["trial_id"], "step"].tolist()
        steps_b = history.loc[history["trial_id"] == b["trial_id"], "step"].tolist()
        assert steps_a == steps_b == sorted(set(steps_b))  # no gaps, no duplicates
    # the killed trials really restarted: a second attempt left its marker behind
    assert by_number.loc[0, "workers"] == 2 and by_number.loc[2, "workers"] == 1


def test_a_trial_killed_mid_run_leaves_every_evaluation_row_it_had_written(
        tmp_path, ray_local):
    """Killed hard (os._exit) before it had reported or checkpointed anything, with no
    retries: its evaluations are in the history anyway, as the trial wrote them."""
    import glob
    import os
    import tempfile

    study = Study(
        name="killed", space=lambda t: {"workers": t.suggest_categorical("workers", [1, 2])},
        trials=2, max_failures=0,
        fixed={"model": "mlp", "norm": "layer", "batch_size": 64, "lr": 0.05, "epochs": 2,
               "eval_every_examples": 320, "fault_exit_at_step": 20, "max_failures": 0,
               "report_every_s": 3600.0, "checkpoint_every_s": 3600.0},
        initial_points=[{"workers": 1}, {"workers": 2}],
    )
    try:
        trials, history, _ = _run(study, tmp_path, ray_local)
    finally:
        for marker in glob.glob(os.path.join(tempfile.gettempdir(), "lbt_fault_*")):
            os.remove(marker)
    assert list(trials["status"]) == ["failed", "failed"], trials[["status", "error"]]
    for row in trials.itertuples():
        steps = history.loc[history["trial_id"] == row.trial_id, "step"].tolist()
        # an evaluation every 5 steps (320 / 64) until the last worker died at step 20;
        # rank 0 of the 2-worker trial may have written step 20's before the peer died
        assert steps[:4] == [0, 5, 10, 15] and steps == list(range(0, 5 * len(steps), 5))
        assert len(steps) <= 5 and row.steps == steps[-1]  # how far it got, from its rows
        assert row.evaluations == len(steps)
    one = trials.set_index("workers").loc[1]
    assert one["error"].startswith("the trial's process ended without an error message")


def test_one_worker_trials_fill_every_cpu_and_a_larger_trial_is_never_overtaken(
        tmp_path, ray_local):
    """2 CPUs, trials of 1, 1, 1, 2 and 1 workers in that order: the 1-worker trials run two
    at a time; the 2-worker trial waits for both CPUs, and no later trial starts before it."""
    def space(trial):  # the 1-worker trials long enough to overlap; the other one short
        workers = trial.suggest_categorical("workers", [1, 2])
        return {"workers": workers, "epochs": 15 if workers == 1 else 1}

    study = Study(
        name="fill", space=space, trials=5,
        fixed={"model": "mlp", "norm": "layer", "batch_size": 16, "lr": 0.05,
               "eval_every_examples": 5000},
        initial_points=[{"workers": w} for w in (1, 1, 1, 2, 1)],
    )
    trials, _, _ = _run(study, tmp_path, ray_local)
    assert (trials["status"] == "ok").all(), trials[["status", "error"]]
    t = trials.set_index("optuna_trial_number").sort_index()
    # the 2-worker trial started after every earlier trial, and no later one before it
    assert t.loc[3, "started_at"] > t.loc[[0, 1, 2], "started_at"].max()
    assert t.loc[4, "started_at"] > t.loc[3, "started_at"]

    def overlap(a, b):
        return min(t.loc[a, "finished_at"], t.loc[b, "finished_at"]) - \
            max(t.loc[a, "started_at"], t.loc[b, "started_at"])

    assert max(overlap(0, 1), overlap(1, 2)) > 1.0  # two 1-worker trials at once
    for other in (0, 1, 2, 4):  # nothing ran beside the 2-worker trial
        assert overlap(3, other) <= 0.5, (other, overlap(3, other))


def test_efficiency_line_counts_training_cpu_seconds_over_held_cpu_seconds():
    from lbt_study.study.driver import efficiency_line

    trials = [{"train_seconds": 10.0, "workers": 2, "cpus_per_worker": 1},
              {"train_seconds": 5.0, "workers": 1, "cpus_per_worker": 1},
              {"train_seconds": float("nan"), "workers": 1}]  # failed before training
    line = efficiency_line(trials, wall=25.0, cpus=2.0)
    assert line.startswith("study efficiency 50.0%: 25.0 CPU-s of training in 25.0 s on 2 CPUs")


def test_reports_carry_every_row_since_the_last_and_flush_keeps_the_rest(tmp_path):
    from lbt_study.records.results import reported_rows
    from lbt_study.records.rowlog import read_rows
    from lbt_study.study.trial import _Reports
    from lbt_study.train.config import TrainConfig

    sent = []
    cfg = TrainConfig(batch_size=32, lr=0.1, report_every_s=3600.0)
    reports = _Reports(cfg, 0, "t", "node-a", lambda row, checkpoint=None: sent.append(row),
                       None, torch.device("cpu"), str(tmp_path / "t.jsonl"))
    for step in (0, 5, 10):
        reports.report({"step": step, "status": "running", "objective": 0.1 * step})
    assert sent == []  # within the report interval: held
    # ... but already in the trial's own file, each as it was made
    assert [r["step"] for r in read_rows(tmp_path / "t.jsonl")] == [0, 5, 10]
    reports.flush()  # as a trial that raises does before its failed row
    assert len(sent) == 1 and sent[0]["step"] == 10  # the result's own keys: the latest row
    rows = reported_rows(sent[0])
    assert [r["step"] for r in rows] == [0, 5, 10]
    assert {r["worker_nodes"] for r in rows} == {"node-a"}
    reports.report({"step": 12, "status": "diverged", "objective": float("nan")})
    assert [r["step"] for r in reported_rows(sent[1])] == [12]  # an ending row goes at once
    reports.flush()
    assert len(sent) == 2  # nothing left to send
    assert [r["step"] for r in read_rows(tmp_path / "t.jsonl")] == [0, 5, 10, 12]
    other = _Reports(cfg, 1, "t", "node-b", lambda row, checkpoint=None: None, None,
                     torch.device("cpu"), str(tmp_path / "rank1.jsonl"))
    other.report({"step": 0, "status": "ok", "objective": 0.0})
    assert not (tmp_path / "rank1.jsonl").exists()  # rank 0 writes the trial's rows
