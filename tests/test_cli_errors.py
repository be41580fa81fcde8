"""Bad input: one line on stderr, exit code 2, no traceback, nothing started."""

import subprocess
import sys

import pytest

from lbt_study.cli import main

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
