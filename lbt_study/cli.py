"""``lbt-study``: run a study, summarise its results.

User mistakes end with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from lbt_study import __version__
from lbt_study.errors import UserError
from lbt_study.records.lock import acquire, in_use, live_holder
from lbt_study.records.record import StudyRecord
from lbt_study.records.rundir import OPTUNA_DB, SPEC, STUDY_JSON, check_optuna_db
from lbt_study.study.storage import claim, connect, handle_of, recorded, summary_line, url_of

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"lbt-study: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lbt-study", description=(
        "Batch-size scaling studies on Ray: each trial is a data-parallel training run "
        "(Ray Train), chosen by Optuna through Ray Tune; results are tidy tables."))
    p.add_argument("--version", action="version", version=f"lbt-study {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a study from a spec file",
                         description="Run the study a spec file defines. The spec is Python "
                         "and is executed: run only specs you trust.")
    run.add_argument("spec", help="a Python file defining `study = Study(...)`")
    run.add_argument("--trials", type=int, help="number of trials (default: the spec's)")
    run.add_argument("--run-dir", type=_path,
                     help="where tables, the Optuna DB and Ray state go "
                     "(default: runs/<study name>-<time>)")
    run.add_argument("--address", type=_text, help="an existing Ray cluster ('auto' or host:port); "
                     "default: start a local one")
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    run.add_argument("--preflight-samples", type=_at_least(1), default=64,
                     help="configs drawn from the space and checked before starting (default 64)")
    run.add_argument("--no-report", action="store_true",
                     help="do not write the report at the end (lbt-study report does it later)")
    _storage_flags(run)

    resume = sub.add_parser("resume", help="continue a study whose driver died",
                            description="Continue a study from its run directory: finished "
                            "trials are kept, none runs twice, and the study ends with the "
                            "number of trials first asked for. Runs the spec copy in the "
                            "run directory (spec.py), which is Python and is executed.")
    resume.add_argument("run_dir", type=_path)
    resume.add_argument("--address", type=_text,
                        help="an existing Ray cluster ('auto' or host:port)")
    resume.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    resume.add_argument("--no-report", action="store_true", help="do not write the report")
    _storage_flags(resume)
    _reading_commands(sub)
    return p


def _reading_commands(sub: Any) -> None:
    """The commands that only read a run directory: report, recommend, results."""
    rep = sub.add_parser("report", help="write report.html, report.md and the analysis CSVs",
                         description="Write the report of a run directory (finished, partial "
                         "or failed) into RUN_DIR/report, or --out.")
    rep.add_argument("run_dir", type=_path)
    rep.add_argument("--out", type=_path, help="output directory (default RUN_DIR/report)")
    rep.add_argument("--price-per-hour", type=_positive_float, default=None,
                     help="price of one device (worker) hour, for the cost to the target")

    rec = sub.add_parser("recommend", help="print what to run for a goal",
                         description="From a run directory's measured frontier and fitted "
                         "curve: the batch size, workers, learning rate, warmup and norm "
                         "that reach the target with the fewest steps, examples, training "
                         "seconds or the least cost.")
    rec.add_argument("run_dir", type=_path)
    rec.add_argument("--goal", choices=("steps", "examples", "time", "cost"), default=None,
                     help="one goal (default: every goal)")
    rec.add_argument("--workers", type=_at_least(1), default=None,
                     help="only trials with this many workers")
    rec.add_argument("--price-per-hour", type=_positive_float, default=None,
                     help="price of one device (worker) hour (needed for --goal cost)")

    res = sub.add_parser("results", help="print a summary of a run directory")
    res.add_argument("run_dir", type=_path)
    res.add_argument("--top", type=_at_least(0), default=10,
                     help="best trials to list (default 10)")
    res.add_argument("--storage", type=_text,
                     help="the Optuna storage URL (default: study.json's)")


def _text(value: str) -> str:
    """A flag's value that may not be blank (a blank one would silently mean the default)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"is blank ({value!r}); give a value or leave "
                                         "the flag out")
    return value


def _path(value: str) -> Path:
    return Path(_text(value))


def _at_least(minimum: int) -> Any:
    def count(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
        return number

    return count


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
    if not (number > 0 and number != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {value!r}")
    return number


def _storage_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--storage", type=_text, help="Optuna storage: "
                     "postgresql://USER@HOST:PORT/DB, sqlite:///PATH or journal:PATH "
                     "(default: RUN/optuna.db; on resume, study.json's); password from "
                     "$LBT_STORAGE_PASSWORD or ~/.pgpass")
    cmd.add_argument("--log", action="append", metavar="NAME", type=_text,
                     help="Ray Tune loggers: "
                     "tensorboard, mlflow, csv (repeat or comma-separate)")


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """A host:port cluster address must accept a TCP connection within ``timeout`` (Ray
    itself retries an unreachable address without end)."""
    if not address or address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--address must be 'auto' or host:port, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise UserError(f"cannot reach a Ray cluster at {address}: "
                        f"{exc.strerror or exc} (within {timeout:g} s)") from None


def check_ray_flags(args: argparse.Namespace) -> None:
    """--num-cpus and --address: each valid, and not both (run and resume alike)."""
    _positive("--num-cpus", args.num_cpus)
    if args.address and args.num_cpus:
        raise UserError("--num-cpus sizes a local Ray; it cannot be combined with --address")
    check_address(args.address)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"{name} must be >= 1, got {value}")


def cmd_run(args: argparse.Namespace) -> int:
    from lbt_study.study.preflight import check_study
    from lbt_study.study.protocols import protocol_of
    from lbt_study.study.spec import load_spec

    _positive("--trials", args.trials)
    check_ray_flags(args)
    study, module = load_spec(args.spec)
    protocol = protocol_of(study)
    if args.trials:
        asked = study.model_copy(update={"trials": args.trials})
        if asked.total_trials == study.total_trials and args.trials != study.trials:
            raise UserError(f"--trials does not apply to protocol {study.protocol!r} "
                            f"({protocol.shape(study)} whatever --trials says); leave it out")
        study = asked
    checked = check_study(study, samples=args.preflight_samples)
    protocol.preflight(study, checked.target)
    store = connect(args.storage or study.storage)  # unreachable: one line, nothing made
    study = study.model_copy(update={"storage": store.masked if store else None,
                                     "log": _logs(args.log or study.log)})
    run_dir = args.run_dir or Path("runs") / f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    _prepare_run_dir(run_dir)
    with acquire(run_dir, "run"):
        return _run_in(run_dir, study, args, module, checked, store, protocol)


def _run_in(run_dir: Path, study: Any, args: argparse.Namespace, module: Any, checked: Any,
            store: Any, protocol: Any) -> int:
    """``run``, once its run directory is made and held."""
    workload = checked.workload
    direction = workload.objective_direction
    claim(store, run_dir, [c.study_name for c in study.cells()], direction,
          study.multi_objective, Path(args.spec).read_text(), new_run=True)
    target = checked.target
    _write_meta(run_dir, study, args.spec, direction, study.total_trials, target,
                workload.objective)
    print(f"lbt-study: study {study.name!r}, workload {workload.name!r}, "
          f"{protocol.shape(study)} ({study.protocol} protocol, {study.sampler_name} sampler), "
          f"objective val_{workload.objective} ({direction})\nrun directory: {run_dir}",
          flush=True)

    from lbt_study.study import launch  # imports Ray: only once the input is good

    t0 = time.time()
    launch.run(study, run_dir, direction, address=args.address, storage=url_of(store),
               num_cpus=args.num_cpus, spec_module=module,
               max_trial_cpus=checked.max_trial_cpus, target=target, progress=_say,
               announce=_say)
    print(f"finished in {time.time() - t0:.0f} s\n")
    return _finish(run_dir, args.no_report, url_of(store))


def _say(line: str) -> None:
    print(line, flush=True)


def _finish(run_dir: Path, no_report: bool, storage: str | None = None) -> int:
    code = cmd_results(argparse.Namespace(run_dir=run_dir, top=10, storage=storage))
    if not no_report:
        cmd_report(argparse.Namespace(run_dir=run_dir, out=None))
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from lbt_study.analysis.settings import AnalysisSettings
    from lbt_study.report import write_report

    price = getattr(args, "price_per_hour", None)
    paths = write_report(Path(args.run_dir), args.out, AnalysisSettings(price_per_hour=price))
    print(f"report: {paths.html}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from lbt_study.report.recommend import recommendation_text

    if args.goal == "cost" and args.price_per_hour is None:
        raise UserError("--goal cost needs --price-per-hour X (the price of one device hour)")
    print(recommendation_text(Path(args.run_dir), args.goal, args.workers,
                              args.price_per_hour))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from lbt_study.study.resume import read_meta

    check_ray_flags(args)
    run_dir = args.run_dir
    holder = live_holder(run_dir) if run_dir.is_dir() else None
    if holder is not None:  # said first: its study.json may not be written yet
        raise in_use(run_dir, holder)
    meta = read_meta(run_dir)
    with acquire(run_dir, "resume") as lock:
        if lock.previous is not None:
            _say(f"lbt-study: {run_dir}: taking over from a driver that is no longer running "
                 f"({lock.previous.said()})")
        return _resume_in(run_dir, meta, args)


def _resume_in(run_dir: Path, meta: StudyRecord, args: argparse.Namespace) -> int:
    """``resume``, once the run directory is held."""
    from lbt_study.study.preflight import check_study
    from lbt_study.study.protocols import protocol_of
    from lbt_study.study.spec import load_spec

    study, module = load_spec(run_dir / SPEC)
    refusal = protocol_of(study).resume_refusal(study)
    if refusal is not None:
        raise UserError(f"{run_dir}: {refusal}")
    study = study.model_copy(update={"trials": meta.trials_per_search or meta.trials})
    checked = check_study(study)
    store = connect(recorded(meta.storage, args.storage))
    study = study.model_copy(update={"log": _logs(args.log or meta.log)})
    if store is not None:  # another spec's study of this name is refused before any change
        claim(store, run_dir, [c.study_name for c in study.cells()],
              meta.objective_direction, study.multi_objective,
              (run_dir / SPEC).read_text(), new_run=False)

    from lbt_study.study import launch  # imports Ray

    launch.resume(study, run_dir, meta.objective_direction, storage_handle=handle_of(store),
                  trials=meta.trials, say=_say, address=args.address,
                  num_cpus=args.num_cpus, spec_module=module,
                  max_trial_cpus=checked.max_trial_cpus, target=meta.target,
                  storage=url_of(store), progress=_say, announce=_say)
    return _finish(run_dir, args.no_report, url_of(store))


def _prepare_run_dir(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir} is a file, not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        holder = live_holder(run_dir)
        if holder is not None:
            raise in_use(run_dir, holder)
        hint = (" (its driver is not running: `lbt-study resume` continues it)"
                if (run_dir / STUDY_JSON).is_file() else "")
        raise UserError(f"run directory {run_dir} exists and is not empty; "
                        f"choose another --run-dir{hint}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ".write_test").touch()
        (run_dir / ".write_test").unlink()
    except OSError as exc:
        raise UserError(f"cannot write run directory {run_dir}: {exc.strerror}") from None


def _write_meta(run_dir: Path, study: Any, spec: str, direction: str, total: int,
                target: float | None, objective: str) -> None:
    StudyRecord(
        name=study.name, workload=study.workload, spec=str(Path(spec).resolve()), trials=total,
        trials_per_search=study.trials, protocol=study.protocol,
        searches=[c.study_name for c in study.cells()], fixed=study.fixed,
        sampler=study.sampler_name, sampler_seed=study.sampler_seed,
        multi_objective=study.multi_objective, objective=f"val_{objective}",
        objective_direction=direction, target=target, target_crossing=study.target_crossing,
        targets=sorted({*([target] if target is not None else []), *study.targets}),
        asha=study.asha.model_dump() if study.asha else None,
        branched=study.branched.model_dump() if study.branched else None,
        budgets=study.budgets, storage=study.storage, log=study.log,
        lbt_study_version=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    ).write(run_dir)
    (run_dir / SPEC).write_text(Path(spec).read_text())


def cmd_results(args: argparse.Namespace) -> int:
    import pandas as pd

    from lbt_study.records.results import load_results

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    trials, history = load_results(run_dir)
    meta = StudyRecord.read(run_dir)
    _check_database(run_dir, meta, getattr(args, "storage", None))
    ascending = meta is not None and meta.objective_direction == "minimize"
    counts = trials["status"].value_counts().to_dict()
    print(f"{len(trials)} trials ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
          f"{len(history)} evaluations, {_distinct(trials, 'batch_size')} batch sizes, "
          f"{_distinct(trials, 'norm')} normalizations")
    cols = ["optuna_trial_number", "status", "batch_size", "workers", "norm", "learning_rate",
            "warmup_epochs", "final_objective", "final_gap_accuracy", "throughput",
            "wall_seconds"]
    top = trials.sort_values("final_objective", ascending=ascending).head(args.top)
    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        print(top[[c for c in cols if c in top.columns]].to_string(index=False))
    return 0


def _logs(values: list[str] | None) -> list[str]:
    from lbt_study.study.integrations import check_logs  # imports Ray

    return check_logs(values) if values else []


def _check_database(run_dir: Path, meta: StudyRecord | None, given: str | None) -> None:
    """A damaged Optuna database is reported, not summarised around: the study could not be
    resumed from it. (A run directory of tables alone, without one, is fine.) A storage
    elsewhere (study.json's, or ``given``) is opened and its trials counted."""
    url = recorded(meta.storage if meta else None, given)
    if url and meta is not None:
        store = connect(url)
        print(summary_line(store, list(meta.searches or [meta.name])))
    elif (run_dir / OPTUNA_DB).exists():
        try:
            check_optuna_db(run_dir)
        except UserError as exc:
            raise UserError(f"{exc} (the result tables are readable: "
                            "lbt_study.load_results)") from None


def _distinct(trials: Any, column: str) -> int:
    return trials[column].nunique() if column in trials.columns else 0


class _Warnings(logging.Handler):
    """lbt-study's warnings (a damaged row file skipped, ...) as one stderr line each."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"lbt-study: warning: {record.getMessage()}", file=sys.stderr, flush=True)


def _say_warnings() -> None:
    logger = logging.getLogger("lbt_study")
    if not any(isinstance(h, _Warnings) for h in logger.handlers):
        logger.addHandler(_Warnings(logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _say_warnings()
    try:
        commands = {"run": cmd_run, "resume": cmd_resume, "results": cmd_results,
                    "report": cmd_report, "recommend": cmd_recommend}
        return commands[args.command](args)
    except UserError as exc:
        print(f"lbt-study: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lbt-study: interrupted; finished trials are in the run directory", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
