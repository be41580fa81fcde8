"""Bad settings of the newer features: one line, exit code 2, no traceback, nothing made.

Each Study and TrainConfig setting is checked against its meaning (not its type alone), with
the allowed values in the message and suggestions drawn from the right names; a CLI flag a
protocol ignores, a blank flag and a negative count are refused; ``resume --storage`` must
name a storage that holds the run's studies."""

import subprocess
import sys

import optuna
import pytest
from test_cli_errors import assert_one_line, finished_run, run_cli, snapshot

BASE = """
from lbt_study import Branched, Study, StopWhen

def space(trial):
    return {"lr": trial.suggest_float("lr", 1e-3, 0.3, log=True)}

"""


def spec_of(write_spec, study):
    return str(write_spec(BASE + f"study = Study({study})\n"))


def refused(capsys, write_spec, tmp_path, study, *fragments, argv=()):
    run_dir = tmp_path / "run"
    code, err = run_cli(capsys, "run", spec_of(write_spec, study), "--run-dir", str(run_dir),
                        *argv)
    assert_one_line(code, err, *fragments)
    assert not run_dir.exists()  # refused before anything was made
    return err.strip()


PBS = "name='x', space=space, protocol='per_batch_size', fixed={'epochs': 1}, "


@pytest.mark.parametrize("study,fragments", [
    # a repeated batch size: two searches sharing one Optuna study, twice the trials
    (PBS + "batch_sizes=[32, 64, 32]", ["batch_sizes repeats [32] (got [32, 64, 32])"]),
    (PBS + "batch_sizes=[32, 0]", ["batch_sizes must be >= 1, got [0]"]),
    (PBS + "batch_sizes=[32, 64], norms=['layer', 'layer']", ["norms repeats ['layer']"]),
    (PBS + "batch_sizes=[32, 64], norms=['layr']",
     ["unknown norm 'layr' in norms (did you mean 'layer'?)", "known: batch, ghost_batch"]),
    ("name='x', space=space, targets=[0.5, 0.5]", ["targets repeats [0.5]"]),
    ("name='x', space=space, log=['csv', 'csv']", ["log repeats ['csv']"]),
    ("name='   ', space=space", ["name is blank ('   ')"]),
    ("name='x', space=space, workload=' '", ["workload is blank"]),
    ("name='x', space=space, sampler_seed=-1", ["sampler_seed: Input should be greater than or "
                                                "equal to 0 (got -1)"]),
])
def test_study_lists_and_names(capsys, write_spec, tmp_path, study, fragments):
    refused(capsys, write_spec, tmp_path, study, *fragments)


@pytest.mark.parametrize("study,fragment", [
    ("name='x', space=space, target=-0.1",
     "target -0.1 is outside [0, 1], the range of val_accuracy (workload 'digits'): every "
     "trial would reach it"),
    ("name='x', space=space, target=1.5", "target 1.5 is outside [0, 1]"),
    ("name='x', space=space, targets=[0.9, 2.0]", "targets[1] 2 is outside [0, 1]"),
    ("name='x', space=space, targets=[-0.5]", "every trial would reach it"),
])
def test_accuracy_targets_outside_zero_one(capsys, write_spec, tmp_path, study, fragment):
    refused(capsys, write_spec, tmp_path, study, fragment)


def test_a_loss_target_is_not_bounded(write_spec):
    """Control: the [0, 1] rule is accuracy's; a workload minimising a loss may target 2.5."""
    from lbt_study.study.preflight import check_targets
    from lbt_study.study.spec import load_spec
    from lbt_study.train.workload import get_workload

    study, _ = load_spec(spec_of(write_spec, "name='x', space=space, workload='linreg', "
                                 "target=2.5, targets=[1.5]"))
    check_targets(study, get_workload("linreg"))  # no error


def test_stop_when_with_budgets_is_refused(capsys, write_spec, tmp_path):
    """Budgets would multiply round 0 past max_trials: the adaptive protocol takes none."""
    refused(capsys, write_spec, tmp_path, PBS + "batch_sizes=[32, 64, 128], trials=2, "
            "budgets=[{'budget': 'epochs', 'epochs': 1}, {'budget': 'steps', 'budget_steps': "
            "50}], stop_when=StopWhen(b_crit_rel_width=0.5, max_trials=6)",
            "budgets belongs to protocol 'per_batch_size', not 'adaptive' (stop_when makes a "
            "study adaptive)")


BRANCHED = ("name='b', space=space, trials=1, protocol='branched', fixed={'model': 'mlp', "
            "'norm': 'none', 'epochs': 1}, branched=Branched(base_batch_size=BATCH, "
            "fractions=FRACTIONS, ks=[1, 2], lr_rule='linear', branch_examples=10240)")


@pytest.mark.parametrize("batch,fractions,fragment", [
    # digits' 1437 training examples at B0 = 512, 1 epoch: 3 steps
    (512, [0.1, 0.5], "branched.fractions [0.1] fall before step 1 of the base run (3 steps at "
                      "batch size 512): each fraction must be at least 0.167"),
    (512, [0.5, 0.6], "branched.fractions [0.5, 0.6] share steps ([2, 2]) of the base run (3 "
                      "steps at batch size 512): each fraction must be at least 0.167 and the "
                      "fractions at least 0.333 apart"),
])
def test_branch_fractions_checked_before_the_base_run(capsys, write_spec, tmp_path, batch,
                                                      fractions, fragment):
    study = BRANCHED.replace("BATCH", str(batch)).replace("FRACTIONS", repr(fractions))
    refused(capsys, write_spec, tmp_path, study, fragment)


def test_trials_flag_a_protocol_ignores(capsys, write_spec, tmp_path):
    study = BRANCHED.replace("BATCH", "16").replace("FRACTIONS", "[0.25, 0.5]")
    refused(capsys, write_spec, tmp_path, study, "--trials does not apply to protocol "
            "'branched' (1 base trial, then 4 branches", argv=("--trials", "5"))


@pytest.mark.parametrize("key,fragments", [
    ("trails=3", ["invalid Study: trails: unknown key (did you mean 'trials'?); allowed: ",
                  "asha, batch_sizes, branched, budgets"]),
    ("stop_when=StopWhen(b_crit_rel_width=0.5, max_trials=6, max_trial=6)",
     ["invalid StopWhen: max_trial: unknown key (did you mean 'max_trials'?); allowed: "
      "adjust, allocation, b_crit_rel_width, lr_exponent_width, max_trials"]),
])
def test_unknown_keys_suggest_from_their_own_model(capsys, write_spec, tmp_path, key,
                                                   fragments):
    """A Study keyword is suggested from Study's fields (not TrainConfig's), a StopWhen one
    from StopWhen's, each with every allowed name."""
    err = refused(capsys, write_spec, tmp_path, f"name='x', space=space, {key}", *fragments)
    assert "batch_size," not in err  # TrainConfig's names are not offered


@pytest.mark.parametrize("url,fragment", [
    ("postgresql://me:secret@db.example:notaport/lbt",
     "storage URL postgresql://me@db.example:notaport/lbt is malformed: port 'notaport' (a "
     "port is a number in 1..65535)"),
    ("postgresql://me@db.example:99999/lbt", "port '99999'"),
    ("mysql://me@[::1/lbt", "host '[::1' (an IPv6 address needs its closing ']')"),
])
def test_malformed_storage_url_names_the_part(capsys, write_spec, tmp_path, url, fragment):
    err = refused(capsys, write_spec, tmp_path, "name='x', space=space, fixed={'batch_size': "
                  "32}", fragment, argv=("--storage", url))
    assert "secret" not in err


@pytest.mark.parametrize("argv,fragment", [
    (["run", "SPEC", "--storage", ""], "argument --storage: is blank ('')"),
    (["run", "SPEC", "--address", " "], "argument --address: is blank"),
    (["run", "SPEC", "--log", ""], "argument --log: is blank"),
    (["run", "SPEC", "--run-dir", ""], "argument --run-dir: is blank"),
    (["run", "SPEC", "--preflight-samples", "0"], "--preflight-samples: must be >= 1, got 0"),
    (["results", "RUN", "--top", "-1"], "argument --top: must be >= 0, got -1"),
    (["report", "RUN", "--out", ""], "argument --out: is blank"),
    (["resume", ""], "argument run_dir: is blank"),
])
def test_blank_flags_and_negative_counts(capsys, write_spec, tmp_path, argv, fragment):
    spec = spec_of(write_spec, "name='x', space=space, fixed={'batch_size': 32}")
    argv = [spec if a == "SPEC" else str(tmp_path / "run") if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as exit_:
        run_cli(capsys, *argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lbt_study.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_resume_storage_without_the_runs_studies(tmp_path):
    """Refused before anything is settled: the Optuna record is not split in two."""
    run_dir = finished_run(tmp_path)
    other = tmp_path / "other.db"
    optuna.create_study(study_name="unrelated", storage=f"sqlite:///{other}")
    before = snapshot(run_dir)
    proc = cli("resume", run_dir, "--storage", f"sqlite:///{other}", "--no-report")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"the storage sqlite:///{other} holds none of this run's Optuna studies ('done'; " \
           "spec hash " in lines[0], lines[0]
    print(lines[0])
    assert snapshot(run_dir) == before
    assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{other}")] == \
        ["unrelated"]  # no study started there


@pytest.mark.parametrize("log,fragment", [
    ("tensorbord", "unknown --log tensorbord (did you mean 'tensorboard'?); allowed: "
                   "tensorboard, mlflow, csv"),
    (" , ", "--log [' , '] names no logger; allowed: tensorboard, mlflow, csv"),
])
def test_log_names_from_the_loggers(capsys, write_spec, tmp_path, log, fragment):
    refused(capsys, write_spec, tmp_path, "name='x', space=space, fixed={'batch_size': 32}",
            fragment, argv=("--log", log))


def test_a_negative_trial_seed(capsys, write_spec, tmp_path):
    """numpy and scikit-learn refuse it inside the trial: refused before the study."""
    refused(capsys, write_spec, tmp_path, "name='x', space=space, fixed={'batch_size': 32, "
            "'seed': -1}", "seed: Input should be greater than or equal to 0 (got -1)")
