"""Ray Tune's own loggers (``Study(log=[...])``, ``--log``): every evaluation reaches
TensorBoard and MLflow at its examples seen, though trials send many rows per Tune result.
Each is read back with the tool's own reader (tensorboard's EventAccumulator; MLflow's
search_runs and metric history) and compared with the lbt-study tables."""

import os

import pytest

from lbt_study import Study, load_results
from lbt_study.errors import UserError
from lbt_study.study.driver import run_study
from lbt_study.study.integrations import parse_logs
from lbt_study.study.preflight import check_study


def _space(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
            "lr": trial.suggest_float("lr", 1e-3, 0.3, log=True)}


def _tensorboard(run_dir):
    """{trial_id: [(step, examples_seen, val_accuracy)]} from every trial's event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted(run_dir.glob("ray/tune-*/*/events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        trial_id = events.parent.name.split("_")[2]  # _trial_<id>_<n>_<params>_<time>
        seen = acc.Scalars("ray/tune/examples_seen")
        val = {e.step: e.value for e in acc.Scalars("ray/tune/val_accuracy")}
        out[trial_id] = [(e.step, e.value, val.get(e.step)) for e in seen]
    return out


def _mlflow(run_dir, experiment):
    """{trial_id: [(step, examples_seen, val_accuracy)]} from the MLflow file store."""
    import mlflow

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow.set_tracking_uri(f"file:{run_dir / 'mlruns'}")
    runs = mlflow.search_runs(experiment_names=[experiment])
    client = mlflow.tracking.MlflowClient()
    out = {}
    for run_id, name in zip(runs["run_id"], runs["tags.trial_name"], strict=True):
        seen = client.get_metric_history(run_id, "examples_seen")
        val = {m.step: m.value for m in client.get_metric_history(run_id, "val_accuracy")}
        out[name.split("_")[2]] = sorted((m.step, m.value, val.get(m.step)) for m in seen)
    return out


@pytest.mark.ray
def test_every_evaluation_reaches_tensorboard_and_mlflow(tmp_path, ray_local):
    # one Tune report per trial's end (and per checkpoint): many evaluations in each
    study = Study(name="logged", space=_space, trials=4, max_concurrent_trials=1,
                  log=["tensorboard", "mlflow"],
                  fixed={"model": "mlp", "norm": "layer", "epochs": 2, "gns_probe_examples": 0,
                         "report_every_s": 600.0, "checkpoint_every_s": 600.0})
    checked = check_study(study)
    run_study(study, tmp_path, "maximize", max_trial_cpus=1, progress=lambda line: None)
    trials, history = load_results(tmp_path)
    assert len(trials) == 4 and (trials["status"] == "ok").all()
    expected = {tid: sorted((int(r.examples_seen), float(r.examples_seen), r.val_accuracy)
                            for r in rows.itertuples())
                for tid, rows in history.groupby("trial_id")}
    assert checked.workload.name == "digits" and len(history) > 4 * 10

    for tool, read in (("tensorboard", _tensorboard(tmp_path)),
                       ("mlflow", _mlflow(tmp_path, "logged"))):
        print(f"{tool}: {len(read)} trials, {sum(map(len, read.values()))} evaluations; "
              f"tables: {len(trials)} trials, {len(history)} evaluations")
        assert set(read) == set(trials["trial_id"])  # one TensorBoard dir / MLflow run each
        assert sum(len(points) for points in read.values()) == len(history)
        for tid, points in read.items():
            assert [p[:2] for p in points] == [e[:2] for e in expected[tid]]  # step = seen
            assert [p[2] for p in points] == pytest.approx([e[2] for e in expected[tid]],
                                                           abs=1e-6)


def test_log_names_are_checked():
    assert parse_logs(["tensorboard,mlflow", "csv", "mlflow"]) == ["tensorboard", "mlflow",
                                                                   "csv"]
    with pytest.raises(UserError, match="unknown --log wandb; allowed: tensorboard, mlflow, csv"):
        parse_logs(["wandb"])


def test_an_unknown_logger_on_the_command_line_is_one_line(capsys, tmp_path):
    from lbt_study.cli import main

    spec = tmp_path / "spec.py"
    spec.write_text("from lbt_study import Study\n"
                    "def space(trial):\n"
                    "    return {'batch_size': 32, 'lr': 0.1}\n"
                    "study = Study(name='x', space=space, fixed={'model': 'mlp'})\n")
    code = main(["run", str(spec), "--run-dir", str(tmp_path / "run"), "--log", "csv,wandb"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == ("lbt-study: error: unknown --log wandb; allowed: "
                                         "tensorboard, mlflow, csv")
    assert not (tmp_path / "run").exists()
