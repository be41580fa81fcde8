"""Bad input: one line on stderr, exit code 2, no traceback, nothing started."""

import json
import os
import subprocess
import sys
import textwrap

import optuna
import pandas as pd
import pytest

from lbt_study.cli import main
from lbt_study.records.results import HISTORY_COLUMNS, TRIALS_COLUMNS, write_table

GOOD_SPACE = """
from lbt_study import Study
def space(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", [32, 64]), "lr": 0.1}
"""


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def cli(*args):
    """``lbt-study ARGS`` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "lbt_study.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def one_line(proc, *fragments):
    """``assert_one_line`` of a finished ``cli`` process; its line (also printed)."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert_one_line(proc.returncode, proc.stderr, *fragments)
    line = proc.stderr.strip().splitlines()[0]
    print(line)
    return line


def test_missing_spec_file(capsys, tmp_path):
    code, err = run_cli(capsys, "run", str(tmp_path / "nope.py"))
    assert_one_line(code, err, "spec file not found", "nope.py")


def test_spec_without_space(capsys, write_spec):
    spec = write_spec("from lbt_study import Study\nstudy = Study(name='x', trials=2)\n")
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "space", "Field required")


def test_spec_without_study(capsys, write_spec):
    spec = write_spec("x = 1\n")
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "must define `study = Study(")


def test_spec_syntax_error(capsys, write_spec):
    spec = write_spec("def space(:\n")
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "syntax error at line 1")


def test_unknown_normalization(capsys, write_spec):
    spec = write_spec(GOOD_SPACE + "study = Study(name='x', space=space, fixed={'norm': 'bn'})\n")
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "unknown norm 'bn'", "ghost_batch", "sync_batch", "instance")


def test_batch_not_divisible(capsys, write_spec, tmp_path):
    spec = write_spec("""
        from lbt_study import Study
        def space(trial):
            return {"batch_size": trial.suggest_categorical("batch_size", [48, 100]),
                    "lr": 0.1}
        study = Study(name="x", space=space, fixed={"workers": 2, "accumulation_steps": 4})
    """)
    code, err = run_cli(capsys, "run", str(spec), "--run-dir", str(tmp_path / "run"))
    assert_one_line(code, err, "batch_size 100 is not divisible by", "2 x 4 = 8")
    assert not (tmp_path / "run").exists()  # rejected before anything was created


def test_unknown_workload(capsys, write_spec):
    spec = write_spec(GOOD_SPACE + "study = Study(name='x', space=space, workload='cifar99')\n")
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "unknown workload 'cifar99'", "digits")


def test_unknown_fixed_key(capsys, write_spec):
    spec = write_spec(GOOD_SPACE + "study = Study(name='x', space=space, fixed={'epoch': 3})\n")
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "unknown keys ['epoch'] (did you mean 'epochs'?)")


def test_space_that_raises(capsys, write_spec):
    spec = write_spec("""
        from lbt_study import Study
        def space(trial):
            raise KeyError("oops")
        study = Study(name="x", space=space)
    """)
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "space function raised KeyError")


def test_instance_norm_on_mlp(capsys, write_spec):
    spec = write_spec(GOOD_SPACE + (
        "study = Study(name='x', space=space, fixed={'norm': 'instance', 'model': 'mlp'})\n"))
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "norm 'instance' needs feature maps")


def test_warmup_longer_than_training(capsys, write_spec):
    spec = write_spec(GOOD_SPACE + (
        "study = Study(name='x', space=space, fixed={'warmup_epochs': 5, 'epochs': 2})\n"))
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "warmup_epochs 5.0 must be shorter than training")


def test_space_and_fixed_overlap(capsys, write_spec):
    spec = write_spec(GOOD_SPACE + "study = Study(name='x', space=space, fixed={'lr': 0.2})\n")
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, "space and fixed both set ['lr']")


def test_non_empty_run_dir(capsys, write_spec, tmp_path):
    spec = write_spec(GOOD_SPACE + "study = Study(name='x', space=space)\n")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "trials.csv").write_text("keep me")
    code, err = run_cli(capsys, "run", str(spec), "--run-dir", str(tmp_path / "old"))
    assert_one_line(code, err, "exists and is not empty")
    assert (tmp_path / "old" / "trials.csv").read_text() == "keep me"


@pytest.mark.parametrize("argv,fragment", [
    (["run", "x.py", "--trials", "0"], "--trials must be >= 1, got 0"),
    (["run", "x.py", "--trials", "many"], "invalid int value: 'many'"),
    (["run", "x.py", "--address", "auto", "--num-cpus", "2"], "cannot be combined"),
    (["results", "/nonexistent/run"], "run directory not found"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_cli_usage_errors(capsys, argv, fragment):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert_one_line(code, capsys.readouterr().err, fragment)


def test_results_of_a_directory_that_is_not_a_run(capsys, tmp_path):
    code, err = run_cli(capsys, "results", str(tmp_path))
    assert_one_line(code, err, "has no trials table")


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lbt_study.cli", "run", str(tmp_path / "missing.py")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"lbt-study: error: spec file not found: {tmp_path / 'missing.py'}"
    ]


@pytest.mark.parametrize("fixed,fragment", [
    ({"lr": -0.1}, "lr: Input should be greater than 0 (got -0.1)"),
    ({"optimizer": "adam"}, "unknown optimizer 'adam'; known: sgd, adamw, lars, lamb"),
    ({"schedule": "step"}, "unknown schedule 'step'; known: cosine, constant"),
    ({"norm": "ghost_batch", "ghost_batch_size": 24}, "ghost_batch_size 24 does not divide the "
                                                      "micro-batch"),
    ({"batch_growth": "0.5:x"}, "batch_growth part '0.5:x' is not 'fraction:multiplier'"),
])
def test_invalid_trial_settings(capsys, write_spec, fixed, fragment):
    fixed = {"lr": 0.1, **fixed}
    spec = write_spec(f"""
from lbt_study import Study
def space(trial):
    return {{"batch_size": trial.suggest_categorical("batch_size", [32, 64])}}
study = Study(name="x", space=space, fixed={fixed!r})
""")
    code, err = run_cli(capsys, "run", str(spec))
    assert_one_line(code, err, fragment)


def test_unwritable_run_directory(capsys, write_spec, tmp_path):
    spec = write_spec(GOOD_SPACE + "study = Study(name='x', space=space)\n")
    (tmp_path / "a_file").write_text("")
    code, err = run_cli(capsys, "run", str(spec), "--run-dir", str(tmp_path / "a_file" / "run"))
    assert_one_line(code, err, "cannot write run directory")


def test_unreachable_cluster_address(capsys, write_spec, tmp_path):
    spec = write_spec(GOOD_SPACE + "study = Study(name='x', space=space)\n")
    code, err = run_cli(capsys, "run", str(spec), "--address", "127.0.0.1:1",
                        "--run-dir", str(tmp_path / "run"))
    assert_one_line(code, err, "cannot reach a Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "run").exists()


def test_malformed_cluster_address(capsys, write_spec):
    spec = write_spec(GOOD_SPACE + "study = Study(name='x', space=space)\n")
    code, err = run_cli(capsys, "run", str(spec), "--address", "localhost")
    assert_one_line(code, err, "--address must be 'auto' or host:port, got 'localhost'")


def test_resume_of_a_directory_that_is_not_a_study(capsys, tmp_path):
    code, err = run_cli(capsys, "resume", str(tmp_path))
    assert_one_line(code, err, "is not an lbt-study run directory (no study.json)")


def test_resume_of_a_corrupted_study(capsys, tmp_path):
    (tmp_path / "study.json").write_text('{"name": "x", "trials": ')
    code, err = run_cli(capsys, "resume", str(tmp_path))
    assert_one_line(code, err, "study.json is corrupted")


def test_resume_of_a_study_without_its_database(capsys, tmp_path):
    (tmp_path / "study.json").write_text(
        '{"name": "x", "trials": 3, "objective_direction": "maximize"}')
    (tmp_path / "spec.py").write_text("")
    code, err = run_cli(capsys, "resume", str(tmp_path))
    assert_one_line(code, err, "is corrupted: optuna.db is missing")


def test_report_of_a_directory_that_is_not_a_run(capsys, tmp_path):
    code, err = run_cli(capsys, "report", str(tmp_path / "nope"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ------------------------------------------------ the real CLI, in a subprocess, on bad input

def lbt_study_cli(*argv, env=None):
    """(exit code, stderr) of `lbt-study ARGV` in a subprocess of its own."""
    proc = subprocess.run([sys.executable, "-m", "lbt_study.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, proc.stderr


def assert_error_line(code, err, *fragments):
    assert_one_line(code, err, *fragments)
    assert err.startswith("lbt-study: error: "), err


def snapshot(root):
    """Every path under ``root`` with its mtime and contents (None for directories)."""
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns,
                                             p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


RUN_SPEC = """
from lbt_study import Study

def space(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", [32, 64]),
            "lr": trial.suggest_float("lr", 1e-3, 0.3, log=True)}

study = Study(name="done", workload=WORKLOAD, space=space, trials=2,
              fixed={"model": "mlp", "norm": "layer", "epochs": 1})
"""


def finished_run(tmp_path, workload="digits"):
    """A finished 2-trial run directory as `lbt-study run` leaves it (built without Ray:
    real tables, a real Optuna SQLite database)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.py").write_text(RUN_SPEC.replace("WORKLOAD", repr(workload)))
    (run_dir / "study.json").write_text(json.dumps({
        "name": "done", "workload": workload, "trials": 2, "trials_per_search": 2,
        "protocol": "joint", "searches": ["done"], "multi_objective": False,
        "objective": "val_accuracy", "objective_direction": "maximize", "target": 0.95}))
    study = optuna.create_study(study_name="done", direction="maximize",
                                storage=f"sqlite:///{run_dir / 'optuna.db'}")
    trials, history = [], []
    for number, (batch_size, objective) in enumerate([(32, 0.8), (64, 0.7)]):
        trial = study.ask()
        trial.suggest_categorical("batch_size", [32, 64])
        trial.suggest_float("lr", 1e-3, 0.3, log=True)
        study.tell(trial, objective)
        trials.append({"trial_id": f"t{number}", "optuna_study": "done",
                       "optuna_trial_number": number, "status": "ok", "error": None,
                       "batch_size": batch_size, "norm": "layer", "final_objective": objective})
        history += [{"trial_id": f"t{number}", "step": step, "objective": objective}
                    for step in (0, 10)]
    write_table(pd.DataFrame(history).reindex(columns=list(HISTORY_COLUMNS)), run_dir, "history")
    write_table(pd.DataFrame(trials).reindex(columns=list(TRIALS_COLUMNS)), run_dir, "trials")
    return run_dir


def garbage(path):
    path.write_bytes(b"\x00\xff\xfe not a table \x89PNG\n" * 64)


def empty(path):
    path.write_bytes(b"")


def truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def not_ours(path):  # readable, but not a table lbt-study wrote
    path.write_text("hello,world\n1,2\n")


def corrupt(run_dir, name, damage):
    """Damage ``name`` in ``run_dir``; for a CSV, remove the Parquet copy so it is read."""
    if name.endswith(".csv"):
        (run_dir / name.replace(".csv", ".parquet")).unlink()
    damage(run_dir / name)
    return run_dir / name


def test_an_intact_run_directory_is_summarised_and_resumed(tmp_path):
    """Control for the tests below: the same directory undamaged is fine."""
    run_dir = finished_run(tmp_path)
    before = snapshot(run_dir)
    proc = subprocess.run([sys.executable, "-m", "lbt_study.cli", "results", str(run_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(run_dir) == before  # the database was checked read-only
    assert proc.stdout.startswith("2 trials (ok 2), 4 evaluations, 2 batch sizes"), proc.stdout
    proc = subprocess.run([sys.executable, "-m", "lbt_study.cli", "resume", str(run_dir),
                           "--no-report"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 of 2 trials finished, 0 interrupted (will be replaced), 0 to run" in proc.stdout


@pytest.mark.parametrize("name,damage,fragment", [
    ("trials.parquet", garbage, "is corrupt or truncated"),
    ("trials.parquet", empty, "is empty (0 bytes)"),
    ("trials.parquet", truncated, "is corrupt or truncated"),
    ("history.parquet", truncated, "is corrupt or truncated"),
    ("trials.csv", garbage, "is corrupt or truncated"),
    ("trials.csv", empty, "is empty (0 bytes)"),
    ("trials.csv", truncated, "is truncated (its last line is incomplete)"),
    ("history.csv", not_ours, "is not an lbt-study history table: it has no column trial_id"),
])
def test_results_of_a_damaged_table(tmp_path, name, damage, fragment):
    path = corrupt(finished_run(tmp_path), name, damage)
    before = snapshot(path.parent)
    assert_error_line(*lbt_study_cli("results", path.parent), str(path), fragment)
    assert snapshot(path.parent) == before


@pytest.mark.parametrize("damage,fragment", [
    (garbage, "is not a readable Optuna database: DatabaseError: file is not a database"),
    (empty, "is empty (0 bytes), not an Optuna database"),
    (truncated, "is not a readable Optuna database: DatabaseError: database disk image is "
                "malformed"),
])
def test_resume_of_a_damaged_optuna_database(tmp_path, damage, fragment):
    """Checked read-only before anything is settled and before Ray starts."""
    path = corrupt(finished_run(tmp_path), "optuna.db", damage)
    before = snapshot(path.parent)
    assert_error_line(*lbt_study_cli("resume", path.parent, "--num-cpus", "1"), str(path),
                      fragment)
    assert snapshot(path.parent) == before


@pytest.mark.parametrize("name,damage", [("trials.parquet", truncated),
                                         ("history.csv", garbage)])
def test_resume_of_a_damaged_table(tmp_path, name, damage):
    path = corrupt(finished_run(tmp_path), name, damage)
    before = snapshot(path.parent)
    assert_error_line(*lbt_study_cli("resume", path.parent), str(path), "is corrupt or truncated")
    assert snapshot(path.parent) == before


def test_results_of_a_damaged_optuna_database(tmp_path):
    path = corrupt(finished_run(tmp_path), "optuna.db", truncated)
    before = snapshot(path.parent)
    assert_error_line(*lbt_study_cli("results", path.parent), str(path),
                      "is not a readable Optuna database", "the result tables are readable")
    assert snapshot(path.parent) == before


@pytest.mark.parametrize("name,damage", [("trials.parquet", truncated),
                                         ("history.parquet", garbage)])
def test_report_of_a_damaged_table(tmp_path, name, damage):
    path = corrupt(finished_run(tmp_path), name, damage)
    before = snapshot(path.parent)
    assert_error_line(*lbt_study_cli("report", path.parent), str(path), "is corrupt or truncated")
    assert not (path.parent / "report").exists()
    assert snapshot(path.parent) == before


# ---------------------------------------------------------------- a user's workload, broken

LAB_MODULES = {
    "__init__.py": "",
    "broken.py": 'raise RuntimeError("no GPU driver here")\n',
    "missing_dep.py": "import a_package_nobody_installed  # noqa: F401\n",
    "invalid_at_import.py": """
        from lbt_study.train.workload import Workload
        WORKLOAD = Workload(name="empty", models={}, load_data=None)
    """,
    "factories.py": """
        from torch import nn
        from lbt_study.train.workload import Workload
        NOT_A_WORKLOAD = {"name": "blobs"}
        def wrong_objective():
            return Workload(name="w", models={"mlp": lambda norm: nn.Linear(2, 2)},
                            load_data=None, objective="top5_accuracy")
        def needs_args(size):
            return None
        def raises():
            raise KeyError("config.yaml")
    """,
    "bad_model.py": """
        from lbt_study.train.workload import Workload
        def mlp(norm):
            raise RuntimeError("weights file missing")
        WORKLOAD = Workload(name="bad_model", models={"mlp": mlp}, load_data=None)
    """,
}


@pytest.fixture
def lab(tmp_path):
    """A user's package `bad_lab` of broken workloads, importable through PYTHONPATH."""
    package = tmp_path / "lab" / "bad_lab"
    package.mkdir(parents=True)
    for name, source in LAB_MODULES.items():
        (package / name).write_text(textwrap.dedent(source))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(package.parent), os.environ.get("PYTHONPATH")) if p)}


@pytest.mark.parametrize("workload,fragments", [
    ("bad_lab.broken:WORKLOAD", ["importing 'bad_lab.broken' raised RuntimeError: no GPU "
                                 "driver here"]),
    ("bad_lab.missing_dep:WORKLOAD", ["cannot import workload module 'bad_lab.missing_dep'",
                                      "No module named 'a_package_nobody_installed'"]),
    ("bad_lab.invalid_at_import:WORKLOAD", ["importing 'bad_lab.invalid_at_import' raised "
                                            "ValueError: workload 'empty' declares no models"]),
    ("bad_lab.factories:NOT_A_WORKLOAD", ["is a dict, not an lbt_study Workload"]),
    ("bad_lab.factories:wrong_objective", ["calling wrong_objective() raised ValueError: "
                                           "objective 'top5_accuracy' is not one of"]),
    ("bad_lab.factories:needs_args", ["calling needs_args() raised TypeError"]),
    ("bad_lab.factories:raises", ["calling raises() raised KeyError: 'config.yaml'"]),
    ("bad_lab.bad_model:WORKLOAD", ["could not build model 'mlp' with norm 'layer'",
                                    "RuntimeError: weights file missing"]),
])
def test_a_broken_user_workload(tmp_path, lab, workload, fragments):
    spec = tmp_path / "spec.py"
    spec.write_text(RUN_SPEC.replace("WORKLOAD", repr(workload)))
    code, err = lbt_study_cli("run", spec, "--run-dir", tmp_path / "run", env=lab)
    assert_error_line(code, err, f"workload {workload!r}", *fragments)
    assert not (tmp_path / "run").exists()


def test_resume_of_a_study_whose_workload_broke(tmp_path, lab):
    run_dir = finished_run(tmp_path, workload="bad_lab.broken:WORKLOAD")
    before = snapshot(run_dir)
    assert_error_line(*lbt_study_cli("resume", run_dir, env=lab),
                      "workload 'bad_lab.broken:WORKLOAD'", "RuntimeError: no GPU driver here")
    assert snapshot(run_dir) == before


# -------------------------------------------------- strict numbers and types in the trial config

@pytest.mark.parametrize("space,fixed,field", [
    ('{"batch_size": trial.suggest_categorical("batch_size", [32, 64])}',
     '{"lr": float("nan")}', "lr"),
    ('{"batch_size": trial.suggest_categorical("batch_size", [32, 64])}',
     '{"lr": 0.1, "epochs": float("inf")}', "epochs"),
    ('{"lr": trial.suggest_float("lr", 0.01, 0.1)}', '{"batch_size": "64"}', "batch_size"),
])
def test_non_finite_or_mistyped_setting(tmp_path, space, fixed, field):
    """The run directory exists and is not empty: a config that passed would be stopped there
    (after the config checks, before Ray), so a missed check fails fast with that error."""
    spec = tmp_path / "spec.py"
    spec.write_text(f"from lbt_study import Study\n\ndef space(trial):\n    return {space}\n\n"
                    f"study = Study(name='x', space=space, fixed={fixed})\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "keep").write_text("keep me")
    before = snapshot(run_dir)
    code, err = lbt_study_cli("run", spec, "--run-dir", run_dir)
    assert_error_line(code, err, f"{field}: ")
    assert "not empty" not in err
    assert snapshot(run_dir) == before
