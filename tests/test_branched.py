"""The branched critical batch size (Merrill et al. 2025): spec, branch states, the pure
analysis on literal tables, the known answer on linreg, and one study through the runner."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from lbt_study.analysis.branched import cbs_over_training, smoothed_final
from lbt_study.errors import UserError
from lbt_study.records.rowlog import read_rows
from lbt_study.records.rundir import trial_rows_path
from lbt_study.study.protocols.branched import branch_study
from lbt_study.study.spec import Branched, Study
from lbt_study.train import run_training
from lbt_study.train.branching import read_state, state_path
from lbt_study.train.config import TrainConfig, checkpoint_step, parse_config
from lbt_study.train.workloads import linreg

BRANCHED = dict(base_batch_size=16, fractions=[0.25, 0.5], ks=[1, 2, 4], lr_rule="linear",
                branch_examples=4096)


def _study(**kw):
    return Study(name="b", workload="linreg", space=lambda t: {"lr": 0.1},
                 fixed={"norm": "none"}, protocol="branched",
                 branched=Branched(**{**BRANCHED, **kw}))


def test_a_branched_study_has_a_base_cell_and_a_branches_cell():
    study = _study()
    base, branches = study.cells()
    assert (base.study_name, base.trials) == ("b/base", 1)
    assert base.overrides == {"batch_size": 16, "save_states_at": "0.25,0.5"}
    assert (branches.study_name, branches.trials) == ("b/branches", 6)
    assert study.total_trials == 7


@pytest.mark.parametrize(("kw", "words"), [
    ({"ks": [2, 4]}, "ks must increase from 1"),
    ({"fractions": [0.5, 0.25]}, "fractions must increase"),
    ({"fractions": [1.0]}, "fractions must increase"),
    ({"lr_rule": "cubic"}, "lr_rule"),
    ({"branch_examples": 100}, "less than one step of the largest branch"),
    ({"epsilon": 0.0}, "epsilon"),
])
def test_bad_branched_settings_are_one_clear_line(kw, words):
    with pytest.raises(ValidationError, match=words):
        _study(**kw)


def test_a_branched_study_runs_one_base_trial_and_owns_the_batch_size():
    with pytest.raises(ValidationError, match="one base trial"):
        Study(name="b", space=lambda t: None, trials=5, protocol="branched",
              branched=Branched(**BRANCHED))
    with pytest.raises(ValidationError, match="sets \\['batch_size'\\] itself"):
        Study(name="b", space=lambda t: None, fixed={"batch_size": 8}, protocol="branched",
              branched=Branched(**BRANCHED))
    with pytest.raises(ValidationError, match="go together"):
        Study(name="b", space=lambda t: None, protocol="branched")
    with pytest.raises(UserError, match="save_states_at"):
        parse_config({"batch_size": 8, "lr": 0.1, "save_states_at": "0.5,0.2"})


def test_smoothed_final_is_a_bias_corrected_ema():
    assert smoothed_final([2.0], 0.9) == pytest.approx(2.0)
    # weights 0.5 * 0.5 and 0.5 over 0.75
    assert smoothed_final([1.0, 3.0], 0.5) == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)
    assert math.isnan(smoothed_final([], 0.5))


def _literal_tables():
    """A base run (B0 = 8, 100 steps) and branches at fractions 0.1 and 0.5, k = 1, 2, 4."""
    trials = pd.DataFrame({
        "trial_id": ["base", "a1", "a2", "a4", "b1", "b2", "b4"],
        "status": ["ok", "ok", "ok", "ok", "ok", "ok", "diverged"],
        "batch_size": [8, 8, 16, 32, 8, 16, 32], "total_steps": [100, 4, 2, 1, 4, 2, 1],
        "branch_of": [None, "base", "base", "base", "base", "base", "base"],
        "branch_fraction": [np.nan, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5],
        "branch_k": [np.nan, 1, 2, 4, 1, 2, 4]})
    rows = [("base", 0, np.nan, 50.0), ("base", 12, np.nan, 60.0), ("base", 48, np.nan, 90.0),
            ("base", 100, np.nan, 120.0)]
    # (trial, step, minibatch_loss): ema 0 reads the last value alone
    for tid, losses in {"a1": [1.0, 0.50], "a2": [1.0, 0.52], "a4": [1.0, 0.60],
                        "b1": [0.4, 0.20], "b2": [0.4, 0.205], "b4": [0.4, 0.1]}.items():
        rows += [(tid, 0, np.nan, np.nan)] + [(tid, s + 1, v, np.nan)
                                               for s, v in enumerate(losses)]
    history = pd.DataFrame(rows, columns=["trial_id", "step", "minibatch_loss", "gns_probe"])
    return trials, history


def test_cbs_over_training_on_literal_tables():
    trials, history = _literal_tables()
    out = cbs_over_training(trials, history, epsilon=0.05, ema=0.0)
    assert out["branch_fraction"].tolist() == [0.1, 0.5]
    assert out["step"].tolist() == [10, 50] and out["examples_seen"].tolist() == [80, 400]
    # f = 0.1: k = 2 is 4% above k = 1 (within 5%), k = 4 20% above: CBS = 2 x 8
    # f = 0.5: k = 2 within, k = 4 diverged (NaN loss, outside) although its rows look good
    assert out["cbs"].tolist() == [16.0, 16.0]
    assert out["cbs_lower_bound"].tolist() == [False, False]
    assert out["loss_k1"].tolist() == [0.5, 0.2]
    assert math.isnan(out["loss_k4"].iloc[1])
    # B_simple: the base's probe nearest steps 10 and 50 (steps 12 and 48)
    assert out["b_simple"].tolist() == [60.0, 90.0]
    assert out["cbs_over_b_simple"].tolist() == pytest.approx([16 / 60, 16 / 90])
    loose = cbs_over_training(trials, history, epsilon=0.25, ema=0.0)
    assert loose["cbs"].tolist() == [32.0, 16.0]
    assert loose["cbs_lower_bound"].tolist() == [True, False]


def test_cbs_over_training_says_why_not():
    trials, history = _literal_tables()
    with pytest.raises(ValueError, match="not a branched study"):
        cbs_over_training(trials.drop(columns="branch_k"), history, 0.05)
    with pytest.raises(ValueError, match="no branch trial finished ok"):
        cbs_over_training(trials.assign(status="failed"), history, 0.05)


def test_checkpoint_step_is_the_nearest_step():
    assert [checkpoint_step(f, 10) for f in (0.01, 0.25, 0.5, 0.99)] == [1, 3, 5, 10]


# ------------------------------------------------------------------ the known answer: linreg

def _expected_half_sq(x0: float, eta: float, batch: int, steps: int) -> np.ndarray:
    """E|w - w*|^2 after each of ``steps`` SGD steps (no momentum) from E|delta|^2 = x0."""
    out, x = [], x0
    for _ in range(steps):
        # x' = (1 - eta)^2 x + eta^2 tr(S)/B, tr(S) = B_noise(x) x = (d+1) x + d sigma^2
        x = (1 - eta) ** 2 * x + eta**2 * linreg.closed_form_noise_scale(x)["trace_sigma"] / batch
        out.append(x)
    return np.array(out)


def _predicted_cbs(x0: float, c: float, b0: int, ks: list[int], delta: int, evals: int,
                   ema: float, epsilon: float) -> float:
    """The epsilon-CBS of the expected losses, read as the analysis reads the measured ones."""
    losses = {}
    for k in ks:
        b = k * b0
        xs = _expected_half_sq(x0, c * b, b, delta // b)
        every = delta // evals // b
        marks = [s - 1 for s in range(every, delta // b + 1, every)]
        losses[k] = smoothed_final(list(0.5 * (xs[marks] + linreg.SIGMA**2)), ema)
    largest = 1
    for k in ks:
        if losses[k] > (1 + epsilon) * losses[1]:
            break
        largest = k
    return float(largest * b0)


def _run_branches(tmp_path, base_cfg: TrainConfig, study: Study):
    """The base run and every branch as the runner would make them (protocols.branched),
    trained on this process; the trials and history tables they would give."""
    rows: list[dict] = []
    out = run_training(base_cfg, report=lambda r: rows.append({**r, "trial_id": "base"}))
    base = {**base_cfg.model_dump(), "trial_id": "base", "status": out.status,
            "total_steps": out.steps}
    plan = branch_study(study, base, str(tmp_path))
    trials = [base]
    for point in plan.initial_points:
        trial = type("T", (), {"suggest_categorical": lambda self, n, c, p=point: p[n]})()
        values = {**plan.space(trial), "workload": "linreg"}
        tid = f"f{point['branch_fraction']}k{point['branch_k']}"
        ran = run_training(parse_config(values),
                           report=lambda r, t=tid: rows.append({**r, "trial_id": t}))
        trials.append({**values, **point, "trial_id": tid, "status": ran.status})
    return pd.DataFrame(trials), pd.DataFrame(rows)


@pytest.mark.slow
def test_branched_cbs_on_linreg_tracks_the_closed_form_noise_scale(tmp_path):
    """Three checkpoints of a cosine-decayed base run (14 s on 2 idle cores, 90 s on busy
    ones): ``_known_answer``."""
    out = _known_answer(tmp_path, [0.25, 0.5, 0.75], list(range(10)))
    # tracking: B_noise grows about 6x from 25% to 75% as the base's lr decays (cosine),
    # and so does the CBS
    assert out["cbs"].is_monotonic_increasing
    assert out["cbs"].iloc[-1] >= 2 * out["cbs"].iloc[0]


def test_branched_cbs_on_linreg_one_checkpoint(tmp_path):
    """The fast version of the known answer: one checkpoint."""
    _known_answer(tmp_path, [0.5], list(range(9)))


def _known_answer(tmp_path, fractions: list[float], powers: list[int]) -> pd.DataFrame:
    r"""The known answer (H = I, SGD without momentum, linear rule).

    At delta = w - w*, x = |delta|^2, the linreg gradient is G = delta and the per-example
    gradient covariance has tr(S) = B_noise x, B_noise = B_simple = (d+1) + d sigma^2 / x
    (``closed_form_noise_scale``). One SGD step at lr eta and batch B gives exactly
        E x' = x [(1 - eta)^2 + eta^2 B_noise / B] = x [1 - eta (2 - eta (1 + B_noise / B))],
    whose best eta gives McCandlish et al.'s eps_opt = 1 / (1 + B_noise / B), the trade-off
    (S/S_min - 1)(E/E_min - 1) = 1 with B_crit = B_noise. Under the linear rule eta = c B,
    per example, dx/dE = -c (2 - c (d + 1 + B)) x + c^2 d sigma^2: the branch at B settles at
        x_inf(B) = c d sigma^2 / (2 - c (d + 1 + B)).
    The base run (B0, lr decaying slowly, cosine) sits near its own floor x_inf(B0), where
    B_noise = d + 1 + d sigma^2 / x_inf(B0) = 2 / c - B0 exactly: the noise scale at a
    checkpoint is set by the lr there. With m = B_noise - d - 1 the branches' floors are
        x_inf(B) / x_inf(B0) = m / (m - (B - B0)),
    a function of (B - B0) / m alone, and L = (x + sigma^2) / 2 gives L_k <= (1 + eps) L_1
    exactly when (B - B0) / m <= g / (1 + g), g = eps (1 + m / d). So the eps-CBS is
        B*_eps = B0 + (B_noise - d - 1) g / (1 + g),
    0.85 to 0.97 x B_noise here (eps 0.05, m from 900 to 5500, d = 8): the CBS tracks
    B_noise. What is asserted, at every checkpoint:
    (1) the measured CBS equals the CBS of the exact expected losses (the recursion above,
        from the base run's weights at the checkpoint, read as the analysis reads the
        measured ones) within a factor of 2, the resolution of the k grid (branches of
        finite length, evaluation noise and SGD noise move the measured losses a little);
    (2) CBS / B_noise, with B_noise = closed_form_noise_scale(|w - w*|^2) of the base's
        weights at the checkpoint, lies in [0.2, 2]: 0.85-0.97 from B*_eps, a factor of 2
        down for the grid (the CBS is the grid point at or below B*), and a factor of 2 either
        way for |w - w*|^2 at one checkpoint fluctuating about the floor (relative standard
        deviation about sqrt(2 / d) = 0.5 for d = 8 directions).
    """
    c0, b0, epsilon, ema, evals = 1 / 400, 16, 0.05, 0.5, 10
    ks = [2**p for p in powers]
    delta = ks[-1] * b0 * evals
    spec = Branched(base_batch_size=b0, fractions=fractions, ks=ks, lr_rule="linear",
                    branch_examples=delta, epsilon=epsilon, ema=ema, branch_evals=evals)
    study = Study(name="lin", workload="linreg", space=lambda t: None, protocol="branched",
                  branched=spec)
    base_cfg = TrainConfig(workload="linreg", norm="none", batch_size=b0, lr=c0 * b0,
                           momentum=0.0, schedule="cosine", budget="examples",
                           budget_examples=b0 * 4000,
                           save_states_at=",".join(f"{f:g}" for f in fractions),
                           states_dir=str(tmp_path), measure_flops=False,
                           gns_probe_examples=1024, precise_bn=False)
    trials, history = _run_branches(tmp_path, base_cfg, study)
    out = cbs_over_training(trials, history, epsilon, ema, loss_column="val_loss")
    for _, row in out.iterrows():
        state = read_state(state_path(tmp_path, row["branch_fraction"]))
        x0 = float(((state["model"]["0.weight"].flatten() - linreg.w_star()) ** 2).sum())
        b_noise = linreg.closed_form_noise_scale(x0)["b_simple"]
        predicted = _predicted_cbs(x0, state["lr"] / b0, b0, ks, delta, evals, ema, epsilon)
        print(f"f={row['branch_fraction']} lr={state['lr']:.4f} B_noise={b_noise:.0f} "
              f"(2/c - B0 = {2 * b0 / state['lr'] - b0:.0f}) probe={row['b_simple']:.0f} "
              f"predicted={predicted:.0f} measured={row['cbs']:.0f}")
        assert predicted / 2 <= row["cbs"] <= predicted * 2
        assert 0.2 <= row["cbs"] / b_noise <= 2
        assert not row["cbs_lower_bound"]
    return out


# ------------------------------------------------------------------ through the real runner

SPEC = '''
from lbt_study import Branched, Study

study = Study(name="tiny", workload="linreg", space=lambda trial: {"lr": 0.05},
              protocol="branched",
              branched=Branched(base_batch_size=16, fractions=[0.5], ks=[1, 2],
                                lr_rule="linear", branch_examples=256, branch_evals=4),
              fixed={"norm": "none", "budget": "examples", "budget_examples": 1024,
                     "schedule": "constant", "momentum": 0.0, "measure_flops": False})
'''


def test_a_tiny_branched_study_end_to_end(tmp_path, ray_local, capsys):
    from lbt_study.cli import main
    from lbt_study.records.results import load_results

    spec = tmp_path / "spec.py"
    spec.write_text(SPEC)
    run_dir = tmp_path / "run"
    assert main(["run", str(spec), "--run-dir", str(run_dir)]) == 0
    trials, history = load_results(run_dir)
    base = trials[trials["optuna_study"] == "tiny/base"]
    branches = trials[trials["optuna_study"] == "tiny/branches"]
    assert len(base) == 1 and len(branches) == 2
    assert base["branch_of"].isna().all() and base["branch_k"].isna().all()
    assert set(branches["branch_of"]) == {base["trial_id"].iloc[0]}
    assert sorted(zip(branches["branch_fraction"], branches["branch_k"], strict=True)) == \
        [(0.5, 1), (0.5, 2)]
    assert (branches["status"] == "ok").all()
    # each branch: k x B0, constant lr = the base's x k (linear), Delta examples from the state
    for _, b in branches.iterrows():
        assert b["batch_size"] == 16 * b["branch_k"]
        assert b["learning_rate"] == pytest.approx(0.05 * b["branch_k"])
        assert b["examples_seen"] == 256 and b["schedule"] == "constant"
        ran = json.loads(read_rows(trial_rows_path(run_dir, b["trial_id"]))[-1]["config_as_run"])
        assert ran["init_state"].endswith(f"branches/f={b['branch_fraction']:g}.pt")
    assert "init_state" not in trials.columns  # the protocol's internals are no columns
    assert (run_dir / "branches" / "f=0.5.pt").is_file()
    table = pd.read_csv(run_dir / "report" / "cbs_over_training.csv")
    assert table["branch_fraction"].tolist() == [0.5]
    assert table["step"].tolist() == [32] and table["cbs"].notna().all()
    report = (run_dir / "report" / "report.md").read_text()
    assert "Branched critical batch size over training" in report
    assert "cbs_over_training" in report


def test_the_section_appears_only_for_branched_studies():
    from lbt_study.analysis.summary import StudyInfo, analyze
    from lbt_study.report.sections import build_sections

    trials, history = _literal_tables()
    meta = {"protocol": "branched", "branched": {**BRANCHED, "epsilon": 0.05, "ema": 0.0,
                                                 "branch_evals": 10}}
    titles = {}
    for protocol in ("branched", "joint"):
        info = StudyInfo({**meta, "protocol": protocol}, "minimize", None)
        sections, tables = build_sections(analyze(trials, history, info))
        titles[protocol] = [s.title for s in sections]
        if protocol == "branched":
            assert tables["cbs_over_training"]["cbs"].tolist() == [16.0, 16.0]
    assert "Branched critical batch size over training" in titles["branched"]
    assert "Branched critical batch size over training" not in titles["joint"]


def test_a_bad_branched_spec_is_one_line_and_exit_2(tmp_path, capsys):
    from lbt_study.cli import main

    spec = tmp_path / "spec.py"
    spec.write_text(SPEC.replace("ks=[1, 2]", "ks=[2, 4]"))
    assert main(["run", str(spec), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ks must increase from 1, got [2, 4]" in err
