"""The study report: every analysis of a run directory, as HTML, Markdown, PNG and CSV.

``write_report(run_dir)`` reads the result tables and study.json (``reading``), runs the
pure analyses (``lbt_study.analysis.summary.analyze``), turns their output into sections of
text, tables and figures (``sections``, one module per section, each a ``SectionSpec`` of
``framework`` rendering the typed results; the figures only draw what the analyses
returned, see ``figures``), and writes them into the report directory: report.html
(self-contained: figures embedded as base64 PNG, inline CSS, no scripts; ``html``),
report.md (the same content, figures as PNG files beside it; ``markdown``) and one CSV per
analysis table. An analysis that cannot be computed (no target, too few batch sizes, no
trial reached the target, no noise-scale measurements, ...) shows its reason where its
figure would be; no number is made up, and for a finished, partial or failed study no
exception escapes but a bug's. Every string that came from the user (study name, workload,
norms, error messages, fixed settings, table cells) is HTML-escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lbt_study.analysis.settings import AnalysisSettings, StudyInfo
from lbt_study.analysis.summary import Analyses, add_targets_from_history, analyze
from lbt_study.errors import UserError
from lbt_study.records.rundir import REPORT_DIR, check_writable_dir
from lbt_study.report.document import Figure, Reason, Section, Table, Text
from lbt_study.report.html import render_html
from lbt_study.report.markdown import render_markdown
from lbt_study.report.reading import read_study, read_tables
from lbt_study.report.sections import FIGURES, SECTIONS, TABLES, build_sections

HTML_FILE, MARKDOWN_FILE = "report.html", "report.md"

__all__ = [
    "FIGURES",
    "SECTIONS",
    "TABLES",
    "Figure",
    "Reason",
    "ReportPaths",
    "Section",
    "Table",
    "Text",
    "build_sections",
    "render_html",
    "render_markdown",
    "write_report",
]


@dataclass(frozen=True)
class ReportPaths:
    """Where ``write_report`` put things: the two documents, and each figure and table."""

    out_dir: Path
    html: Path
    markdown: Path
    figures: dict[str, Path]
    tables: dict[str, Path]


def write_report(run_dir: Path, out_dir: Path | None = None,
                 settings: AnalysisSettings | None = None) -> ReportPaths:
    """Analyse the run directory ``run_dir`` and write the report into ``out_dir``.

    ``out_dir`` defaults to ``run_dir / "report"``. Writes report.html, report.md, one PNG
    per figure and one CSV per analysis table, and returns their paths. Raises ``UserError``
    only when ``run_dir`` is not a run directory (neither result tables nor study.json).
    """
    run_dir = existing_run_dir(run_dir)
    given = out_dir is not None
    out_dir = Path(out_dir) if given else run_dir / REPORT_DIR
    check_writable_dir(out_dir, "--out" if given else "the report directory", "" if given else
                       " (a read-only run directory is reported with --out elsewhere)")
    analyses = analyses_of(run_dir, settings)
    sections, tables = build_sections(analyses)
    title = f"lbt-study report: {analyses.study.meta.get('name', run_dir.name)}"
    return _write(out_dir, title, sections, tables)


def existing_run_dir(run_dir: Path) -> Path:
    """``run_dir`` as a Path; ``UserError`` when it is not a directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    return run_dir


def tables_of(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, StudyInfo, tuple[str, ...]]:
    """The run directory's trials (the targets' steps added from the history), history,
    study.json and the notes on reading them: what ``analyze`` takes."""
    trials, history, notes = read_tables(run_dir)
    study = read_study(run_dir)
    trials, more = add_targets_from_history(trials, history, study)
    return trials, history, study, (*notes, *more)


def analyses_of(run_dir: Path, settings: AnalysisSettings | None = None) -> Analyses:
    """Every analysis of the run directory ``run_dir`` with ``settings``."""
    return analyze(*tables_of(run_dir), settings)


def _write(out_dir: Path, title: str, sections: list[Section],
           tables: dict[str, pd.DataFrame]) -> ReportPaths:
    """Write the documents, figures and CSVs; remove this report's files left from before."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = [item for s in sections for item in s.items if isinstance(item, Figure)]
    figure_paths = {f.name: out_dir / f"{f.name}.png" for f in shown}
    table_paths = {name: out_dir / f"{name}.csv" for name in tables}
    for stale in [*(out_dir / f"{n}.png" for n in FIGURES if n not in figure_paths),
                  *(out_dir / f"{n}.csv" for n in TABLES if n not in table_paths)]:
        stale.unlink(missing_ok=True)
    for figure in shown:
        figure_paths[figure.name].write_bytes(figure.png)
    for name, frame in tables.items():
        frame.to_csv(table_paths[name], index=False)
    html_path, md_path = out_dir / HTML_FILE, out_dir / MARKDOWN_FILE
    html_path.write_text(render_html(title, sections), encoding="utf-8")
    md_path.write_text(render_markdown(title, sections), encoding="utf-8")
    return ReportPaths(out_dir, html_path, md_path, figure_paths, table_paths)
