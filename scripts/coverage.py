"""Coverage of the planted critical batch size by its 95% interval, before and after issue 21.

Planted studies (``lbt_study.analysis.planted``; no training, no Ray): steps to target from
S(B) = S_min (1 + B_crit / B) at B = 16 ... 1024, trials at the same scrambled Sobol points at
every batch size (a tuning penalty curvature x (u - x*)^2) plus seed noise on log steps.

Table 1, the default design (5 trials at every batch size): the trial bootstrap of before
(``resample="trials"``) and the studentized residual bootstrap of after (``"residuals"``,
the default), on the same planted sweeps. Table 2, the adaptive design (digits_adaptive.py's
rule: 3 trials per batch size, 7 a round, at most 49, stop at relative width <= 1): before
(95% at every look, influence allocation, trial bootstrap), after (Bonferroni over the looks,
balanced allocation, residual bootstrap) and the steps between. Table 3, the adaptive rules
on independent one-sided trials (the plant the old trial bootstrap under-covers). Each
replicate r is drawn from default_rng(r), so the tables are reproducible.

    python scripts/coverage.py [--reps 1000] [--old-reps 150] [--adaptive-reps 400]
        [--old-adaptive-reps 60] [--tables 1,2,3]

The trial bootstrap refits every distinct resampled frontier (about 1 s a sweep, 10 s an
adaptive study with the influence allocation on a busy 2-core machine), so its rows get
fewer replicates; the counts are in the tables.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from lbt_study.analysis.planted import AdaptiveRule, Plant, adaptive_coverage, fixed_coverage

PLANTS = {
    "shared points, B_crit 60, noise 0.2 (the default plant)": Plant(),
    "shared points, B_crit 200, noise 0.2": Plant(b_crit=200.0),
    "shared points, B_crit 60, noise 0.3": Plant(noise=0.3),
    "independent abs N(0, 0.2), B_crit 200 (tests/test_analysis_bootstrap.py)":
        Plant(b_crit=200.0, design="independent", curvature=0.2, noise=0.0),
    "shared points, curvature 30x larger at 1024 (limit: a bias)":
        Plant(growth=30.0, curvature=0.3),
}
RULES = {
    "before: 95% each look, influence, trial bootstrap":
        AdaptiveRule(adjust="none", allocation="influence", resample="trials"),
    "95% each look, balanced, trial bootstrap":
        AdaptiveRule(adjust="none", allocation="balanced", resample="trials"),
    "95% each look, balanced, residual bootstrap-t":
        AdaptiveRule(adjust="none", allocation="balanced"),
    "after: Bonferroni (99% each look), balanced, residual bootstrap-t": AdaptiveRule(),
    "Bonferroni, nearest B_crit, residual bootstrap-t": AdaptiveRule(allocation="nearest"),
}


def _show(rows: list[dict], row: dict) -> None:
    """Keep ``row`` and print it at once (a long run shows its rows as they come)."""
    rows.append(row)
    print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()),
          flush=True)


def markdown(frame: pd.DataFrame) -> str:
    """``frame`` as a markdown table, floats to 3 decimals (no tabulate needed)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
             for row in frame.itertuples(index=False)]
    lines = [list(frame.columns), ["---"] * frame.shape[1], *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def fixed_table(reps: int, old_reps: int) -> pd.DataFrame:
    rows: list[dict] = []
    for name, plant in PLANTS.items():
        for label, resample, n in (("before (trials)", "trials", old_reps),
                                   ("after (residuals)", "residuals", reps)):
            _show(rows, {"plant": name, "interval": label,
                         **fixed_coverage(plant, n, resample=resample)})
    return pd.DataFrame(rows)


DEFAULT = Plant()
INDEPENDENT = Plant(design="independent", curvature=0.8, noise=0.0)  # digits-like width
INDEPENDENT_RULES = ("before: 95% each look, influence, trial bootstrap",
                     "95% each look, balanced, residual bootstrap-t",
                     "after: Bonferroni (99% each look), balanced, residual bootstrap-t")


def adaptive_table(reps: int, old_reps: int, plant: Plant = DEFAULT,
                   names: tuple[str, ...] = tuple(RULES)) -> pd.DataFrame:
    rows: list[dict] = []
    for name in names:
        rule = RULES[name]
        n = old_reps if rule.resample == "trials" else reps
        _show(rows, {"rule": name, **adaptive_coverage(plant, rule, n)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=1000, help="planted sweeps per row (after)")
    p.add_argument("--old-reps", type=int, default=150,
                   help="planted sweeps per row for the trial bootstrap (slower)")
    p.add_argument("--adaptive-reps", type=int, default=400)
    p.add_argument("--old-adaptive-reps", type=int, default=60,
                   help="planted adaptive studies per row with the trial bootstrap")
    p.add_argument("--tables", type=lambda text: {int(t) for t in text.split(",")},
                   default={1, 2, 3}, help="which tables, e.g. 2,3 (default 1,2,3)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    pd.set_option("display.width", 200, "display.max_colwidth", 80)
    tables = []
    if 1 in args.tables:
        print("Table 1: default design, 5 trials per batch size, nominal 95%, 1,000 resamples")
        tables.append(fixed_table(args.reps, args.old_reps))
    if 2 in args.tables:
        print("\nTable 2: adaptive design (3 per B, +7 a round, <= 49, stop at width <= 1), "
              "default plant, 1,000 resamples a look")
        tables.append(adaptive_table(args.adaptive_reps, args.old_adaptive_reps))
    if 3 in args.tables:
        print("\nTable 3: the adaptive design on independent one-sided trials, "
              "abs N(0, 0.8), B_crit 60")
        tables.append(adaptive_table(args.adaptive_reps, args.old_adaptive_reps, INDEPENDENT,
                                     INDEPENDENT_RULES))
    for table in tables:
        print()
        print(markdown(table))
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
