"""Read-only run directories (a report made from any machine that can read them) and output
paths checked before any work.

A run directory is made read-only with ``chmod -R a-w`` where that binds (not root); as root,
which ignores permission bits, it is bind-mounted read-only in a mount namespace of the
command's own (``unshare -m``); where neither can be had the test is skipped, saying why."""

import os
import shlex
import shutil
import subprocess
import sys

import pytest
from test_cli_errors import cli, finished_run, one_line, snapshot


def read_only_cli(run_dir, *args):
    """`lbt-study ARGS` with ``run_dir`` read-only for it."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(run_dir)], check=True)
        try:
            return cli(*args)
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(run_dir)], check=True)
    if shutil.which("unshare") is None:
        pytest.skip("root ignores chmod, and there is no unshare to mount the directory "
                    "read-only")
    where = shlex.quote(str(run_dir))
    command = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "lbt_study.cli",
                                                     *args))
    proc = subprocess.run(["unshare", "-m", "sh", "-c",
                           f"mount --bind -o ro {where} {where} && touch {where}/.probe "
                           f"2>/dev/null && exit 99; exec {command}"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode == 99 or "unshare:" in proc.stderr or "mount:" in proc.stderr:
        pytest.skip(f"root ignores chmod, and a read-only bind mount could not be made "
                    f"here: {proc.stderr.strip()[:200]}")
    return proc


@pytest.fixture
def run_dir(tmp_path):
    return finished_run(tmp_path)


def test_results_of_a_read_only_run_directory(run_dir):
    before = snapshot(run_dir)
    proc = read_only_cli(run_dir, "results", run_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("2 trials (ok 2), 4 evaluations, 2 batch sizes"), proc.stdout
    assert snapshot(run_dir) == before


def test_report_of_a_read_only_run_directory_into_out_elsewhere(run_dir, tmp_path):
    before = snapshot(run_dir)
    out = tmp_path / "elsewhere"
    proc = read_only_cli(run_dir, "report", run_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"report: {out / 'report.html'}"
    assert (out / "report.md").read_text().startswith("# lbt-study report: done")
    assert snapshot(run_dir) == before


def test_report_into_a_read_only_run_directory_is_one_line(run_dir):
    before = snapshot(run_dir)
    one_line(read_only_cli(run_dir, "report", run_dir),
             f"cannot write the report directory {run_dir / 'report'}",
             "a read-only run directory is reported with --out elsewhere")
    assert snapshot(run_dir) == before


def test_resume_of_a_read_only_run_directory_is_one_line(run_dir):
    before = snapshot(run_dir)
    one_line(read_only_cli(run_dir, "resume", run_dir), f"cannot write run directory {run_dir}",
             "run and resume need to write there")
    assert snapshot(run_dir) == before


def test_report_out_onto_an_existing_file(run_dir, tmp_path):
    target = tmp_path / "report.html"
    target.write_text("mine")
    one_line(cli("report", run_dir, "--out", target),
             f"--out {target} is a file, not a directory")
    assert target.read_text() == "mine"
    assert not (run_dir / "report").exists()


def test_report_out_below_a_file(run_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    one_line(cli("report", run_dir, "--out", tmp_path / "notes.txt" / "report"),
             "cannot make --out", f"{tmp_path / 'notes.txt'} is a file")


def test_report_out_where_nobody_can_write(run_dir):
    """/proc: not writable even for root."""
    one_line(cli("report", run_dir, "--out", "/proc/lbt-report"),
             "cannot write --out /proc/lbt-report")
    assert not (run_dir / "report").exists()  # refused before any analysis


def test_run_dir_that_is_a_file(tmp_path, write_spec):
    spec = write_spec("from lbt_study import Study\ndef space(trial):\n    return {'lr': 0.1}\n"
                      "study = Study(name='x', space=space, fixed={'batch_size': 32})\n")
    (tmp_path / "taken").write_text("mine")
    one_line(cli("run", spec, "--run-dir", tmp_path / "taken"),
             f"--run-dir {tmp_path / 'taken'} is a file, not a directory")
    assert (tmp_path / "taken").read_text() == "mine"
