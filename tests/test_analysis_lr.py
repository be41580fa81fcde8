"""lr_scaling: planted optima lr*(B) = c B^k recovered from noisy searches, per-B vertices
checked by hand, edge and fallback cases, and the warmup fit of the best trials."""

import math

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from scipy import stats

from lbt_study.analysis import CannotCompute, lr_scaling

BATCHES = 2 ** np.arange(4, 11)  # 16 .. 1024
LR_RANGE = (1e-3, 1.0)  # the searched range, log-uniform, as in search_spaces/digits.py
# Accuracy lost per (ln lr)^2 away from the optimum: at B = 128 (optimum 10^-1.5, the middle
# of the range in logs) the objective drops 18 points to either end of the range.
CURVATURE = 0.015
NOISE = 0.011  # 1.1 accuracy points
SEEDS = range(10)


def lr_star(batch: np.ndarray | float, k: float) -> np.ndarray | float:
    return 10**-1.5 * (batch / 128) ** k


def surface(k: float, seed: int, per_batch: int = 5, noise: float = NOISE,
            star: dict | None = None, grid: bool = False) -> pd.DataFrame:
    """``per_batch`` trials at each batch size, lr log-uniform over LR_RANGE (evenly spaced
    in logs for ``grid``), accuracy 0.95 - CURVATURE (ln lr - ln lr*(B))^2 + N(0, noise);
    ``star`` overrides lr*(B) at some batch sizes."""
    rng = np.random.default_rng(seed)
    rows = []
    for batch in BATCHES:
        optimum = (star or {}).get(int(batch), lr_star(batch, k))
        lrs = (np.geomspace(*LR_RANGE, per_batch) if grid
               else np.exp(rng.uniform(*np.log(LR_RANGE), per_batch)))
        for i, lr in enumerate(lrs.tolist()):
            score = 0.95 - CURVATURE * math.log(lr / optimum) ** 2 + noise * rng.standard_normal()
            rows.append({"trial_id": f"{batch}-{i}", "status": "ok", "batch_size": int(batch),
                         "learning_rate": lr, "warmup_epochs": 0.5, "norm": "batch",
                         "final_objective": score})
    return pd.DataFrame(rows)


def lr_fit(result) -> pd.Series:
    return result.fits.set_index("parameter").loc["learning_rate"]


def fitted_batch_sizes(trials: pd.DataFrame, window: float = 2.0) -> int:
    """Batch sizes with 3 distinct lrs within ``window`` decades of their best trial's."""
    count = 0
    for _, part in trials.groupby("batch_size"):
        best = np.log10(part.loc[part["final_objective"].idxmax(), "learning_rate"])
        near = part[(np.log10(part["learning_rate"]) - best).abs() <= window]
        count += near["learning_rate"].nunique() >= 3
    return count


def argmax_exponent(trials: pd.DataFrame) -> float:
    """The old estimate: log lr of the best trial per batch size against log B, by OLS."""
    best = trials.loc[trials.groupby("batch_size")["final_objective"].idxmax()]
    return stats.linregress(np.log(best["batch_size"]), np.log(best["learning_rate"])).slope


@pytest.mark.parametrize("k", [0.5, 1.0])
def test_planted_exponent_recovered_over_seeds_and_better_than_the_argmax(k):
    """Every seed within +-0.25; the 95% profile interval covers k in at least 8 of 10
    seeds; the argmax errs twice as much or more. Every batch size with 3 distinct lrs inside
    the window enters the fit."""
    errors, covered, argmax_errors = [], 0, []
    for seed in SEEDS:
        trials = surface(k, seed)
        fit = lr_fit(lr_scaling(trials, "maximize"))
        assert fit["method"] == "free_curvature_profile"
        assert fit["n_points"] == fitted_batch_sizes(trials)
        errors.append(abs(fit["exponent"] - k))
        covered += fit["exponent_lower"] <= k <= fit["exponent_upper"]
        assert bool(fit["sqrt_rule_in_ci"]) == (fit["exponent_lower"] <= 0.5
                                                <= fit["exponent_upper"])
        argmax_errors.append(abs(argmax_exponent(trials) - k))
    assert max(errors) <= 0.25, errors  # a curvature per batch size costs precision
    assert covered >= 8
    assert np.mean(errors) < 0.5 * np.mean(argmax_errors)


def test_the_rules_are_told_apart_when_the_data_can_tell():
    half = lr_fit(lr_scaling(surface(0.5, 3), "maximize"))
    assert half["sqrt_rule_in_ci"] and not half["linear_rule_in_ci"]
    assert not half["constant_in_ci"]
    linear = lr_fit(lr_scaling(surface(1.0, 3), "maximize"))
    assert linear["linear_rule_in_ci"] and not linear["sqrt_rule_in_ci"]


def test_noise_free_surface_gives_the_plant_exactly():
    result = lr_scaling(surface(0.7, 0, noise=0.0, grid=True), "maximize")
    fit = lr_fit(result)
    assert fit["exponent"] == pytest.approx(0.7, abs=1e-9)
    assert fit["coefficient"] == pytest.approx(lr_star(1.0, 0.7), rel=1e-8)
    assert fit["r_squared"] == pytest.approx(1.0)
    assert (fit["exponent_lower"], fit["exponent_upper"]) == pytest.approx((0.7, 0.7), abs=1e-5)
    points = result.points
    assert points["batch_size"].tolist() == BATCHES.tolist()
    assert points["lr_opt"].to_numpy() == pytest.approx(lr_star(BATCHES, 0.7), rel=1e-8)
    assert (points["method"] == "vertex").all() and not points["edge"].any()
    assert points["lr_opt_lower"].to_numpy() == pytest.approx(points["lr_opt"], rel=1e-6)


def test_vertex_of_three_trials_is_the_parabola_through_them():
    """lr/2, lr, 2 lr scoring 0.80, 0.90, 0.85: the parabola in log lr peaks at lr 2^(1/6)."""
    trials = sweep(0.01 * POWERS)
    points = lr_scaling(trials, "maximize").points
    assert points["lr_opt"].to_numpy() == pytest.approx(0.01 * POWERS * 2 ** (1 / 6))
    assert points["lr_opt_lower"].isna().all()
    assert (points["reason"] == "3 trials: the quadratic is exact, no interval (needs 4)").all()
    assert (points["final_objective"] == 0.90).all()  # the best trial; diverged ones ignored
    assert (points["n_trials"] == 3).all()


def test_vertex_interval_is_fiellers():
    """At each end of the interval, (c1 + 2 c2 v)^2 = t^2 Var(c1 + 2 c2 v), with the
    covariance from numpy.polyfit."""
    trials = surface(0.5, 4, per_batch=8)
    point = lr_scaling(trials, "maximize", window=None).points.set_index("batch_size").loc[128]
    part = trials[trials["batch_size"] == 128]
    x = np.log(part["learning_rate"].to_numpy())
    (c2, c1, _), cov = np.polyfit(x, part["final_objective"].to_numpy(), 2, cov=True)
    t = stats.t.ppf(0.975, len(x) - 3)
    assert math.log(point["lr_opt"]) == pytest.approx(-c1 / (2 * c2))
    for end in (point["lr_opt_lower"], point["lr_opt_upper"]):
        v = math.log(end)
        variance = cov[1, 1] + 4 * v * cov[0, 1] + 4 * v * v * cov[0, 0]
        assert (c1 + 2 * c2 * v) ** 2 == pytest.approx(t * t * variance, rel=1e-6)
    assert point["lr_opt_lower"] < lr_star(128, 0.5) < point["lr_opt_upper"]


def test_an_optimum_beyond_the_range_is_flagged_and_falls_back_to_the_best_trial():
    trials = surface(0.5, 1, noise=0.0, grid=True, star={1024: 3.0})
    result = lr_scaling(trials, "maximize")
    points = result.points.set_index("batch_size")
    edge = points.loc[1024]
    assert edge["edge"] and edge["method"] == "best_trial"
    part = trials[trials["batch_size"] == 1024]
    assert edge["lr_opt"] == part.loc[part["final_objective"].idxmax(), "learning_rate"]
    assert edge["reason"] == ("the vertex (3) lies above the largest lr tried: the best "
                              "trial's lr is shown (a bound on the optimum)")
    assert math.isnan(edge["lr_opt_upper"])
    assert not points.drop(index=1024)["edge"].any()
    assert "optimum at the edge of the lrs tried at batch_size 1024" in lr_fit(result)["reason"]


def test_a_fit_without_a_peak_is_flagged():
    trials = surface(0.5, 2)
    valley = trials["batch_size"] == 64  # curved the wrong way at B = 64
    trials.loc[valley, "final_objective"] = 1.9 - trials.loc[valley, "final_objective"]
    point = lr_scaling(trials, "maximize").points.set_index("batch_size").loc[64]
    assert point["edge"] and point["method"] == "best_trial"
    assert point["reason"] == ("the quadratic is not concave-down (no optimum inside): the best "
                               "trial's lr is shown")


def test_minimize_is_maximize_of_the_negated_objective():
    trials = surface(1.0, 5)
    loss = trials.assign(final_objective=1 - trials["final_objective"])
    got = lr_scaling(loss, "minimize")
    want = lr_scaling(trials.assign(final_objective=trials["final_objective"] - 1), "maximize")
    assert_frame_equal(got.fits, want.fits)
    assert lr_fit(got)["exponent"] == pytest.approx(1.0, abs=0.15)
    assert got.points["lr_opt"].to_numpy() == pytest.approx(want.points["lr_opt"].to_numpy())
    wrong = loss["batch_size"] == 256
    loss.loc[wrong, "final_objective"] = -loss.loc[wrong, "final_objective"]
    point = lr_scaling(loss, "minimize").points.set_index("batch_size").loc[256]
    assert point["reason"].startswith("the quadratic is not convex")


def test_too_few_trials_give_nan_and_a_reason():
    two = surface(0.5, 0, per_batch=2)
    points = lr_scaling(two, "maximize", window=None).points
    assert points["lr_opt"].isna().all() and points["method"].isna().all()
    assert (points["reason"] == "2 distinct learning rates; a vertex needs 3").all()
    assert lr_scaling(two.head(1), "maximize").points["reason"].tolist() == [
        "1 distinct learning rate; a vertex needs 3"]
    one_batch = lr_scaling(surface(0.5, 0)[lambda t: t["batch_size"] == 16], "maximize").fits
    assert one_batch["exponent"].isna().all()
    assert (one_batch["reason"] == "1 batch sizes to fit; k needs 2").all()
    none_ok = lr_scaling(surface(0.5, 0).assign(status="diverged"), "maximize")
    assert none_ok.fits["exponent"].isna().all() and none_ok.points.empty


def test_too_few_for_the_joint_model_falls_back_to_the_best_trials():
    table = surface(0.5, 0, per_batch=2)
    table = table[table["batch_size"].isin([16, 256])]
    fit = lr_fit(lr_scaling(table, "maximize"))
    assert fit["method"] == "best_trial_power_fit"
    assert fit["exponent"] == pytest.approx(argmax_exponent(table))
    assert fit["reason"] == ("batch_size 16, 256 left out of the fit of k (fewer than 3 "
                             "distinct learning rates: no curvature of their own); 0 batch "
                             "sizes to fit; k needs 2: k from the best trial of each batch size "
                             "instead; 2 batch sizes: k is exact, no interval (needs 3)")
    three = surface(0.5, 0, per_batch=3, grid=True)
    three = three[three["batch_size"].isin([16, 256])]
    fit = lr_fit(lr_scaling(three, "maximize"))
    assert fit["method"] == "best_trial_power_fit"
    assert fit["reason"].startswith("6 trials at 2 batch sizes: the fit needs 7 (an offset and "
                                    "a curvature per batch size, the optimum line's 2 "
                                    "coefficients, 1 spare): k from the best trial")
    assert pd.isna(fit["linear_rule_in_ci"])
    fixed = surface(0.5, 0, per_batch=3)  # lr set by a rule: one lr per batch size
    fixed["learning_rate"] = lr_star(fixed["batch_size"], 0.5)
    fit = lr_fit(lr_scaling(fixed, "maximize"))
    assert fit["method"] == "best_trial_power_fit"
    assert fit["exponent"] == pytest.approx(0.5)
    assert fit["reason"].startswith("batch_size 16, 32, 64, 128, 256, 512, 1024 left out of "
                                    "the fit of k (fewer than 3 distinct learning rates")


def test_window_leaves_out_trials_far_from_the_best():
    trials = surface(0.5, 6, per_batch=8)
    result = lr_scaling(trials, "maximize", window=1.0)
    best = trials.loc[trials.groupby("batch_size")["final_objective"].idxmax()]
    far = (np.log10(trials["learning_rate"])
           - np.log10(trials["batch_size"].map(best.set_index("batch_size")["learning_rate"])))
    near = trials[far.abs() <= 1.0]
    fit = lr_fit(result)
    assert fit["n_trials"] == len(near) < len(trials)
    assert fit["reason"].startswith(f"{len(trials) - len(near)} trials more than 1 decades of "
                                    "lr from the best trial of their batch size left out")
    by_hand = lr_scaling(near, "maximize", window=None)
    assert fit["exponent"] == pytest.approx(lr_fit(by_hand)["exponent"], rel=1e-12)
    assert_frame_equal(result.points, by_hand.points)
    assert lr_fit(lr_scaling(trials, "maximize", window=None))["n_trials"] == len(trials)


def test_an_optimum_outside_the_lrs_tried_at_most_batch_sizes_gives_no_exponent():
    """Every optimum 10x above the largest lr tried: the joint parabola still peaks, beyond
    the lrs tried; that is an extrapolation, not a measurement of k."""
    far = {int(b): 10 * LR_RANGE[1] for b in BATCHES}
    fit = lr_fit(lr_scaling(surface(0.5, 3, noise=0.001, star=far), "maximize"))
    assert fit["method"] == "free_curvature_profile" and math.isnan(fit["exponent"])
    assert "puts the optimum outside the lrs tried at batch_size 16, 32" in fit["reason"]
    inside = lr_fit(lr_scaling(surface(0.5, 3, noise=0.001), "maximize"))
    assert inside["exponent"] == pytest.approx(0.5, abs=0.05)


def test_interval_ends_are_where_the_profile_rss_meets_the_f_threshold():
    """At each end of the interval, min over a of RSS(a, k) (found here by a plain scipy
    search from many starts) equals RSS_min (1 + F(0.95; 1, df) / df)."""
    from scipy import optimize

    trials = surface(0.5, 7)
    fit = lr_fit(lr_scaling(trials, "maximize", window=None))
    x, y = np.log(trials["learning_rate"].to_numpy()), trials["final_objective"].to_numpy()
    codes = pd.factorize(trials["batch_size"], sort=True)[0]
    u = np.log(BATCHES.astype(float))

    def rss(a: float, k: float) -> float:
        total = 0.0
        for g in range(len(BATCHES)):
            z2 = (x[codes == g] - a - k * u[g]) ** 2
            design = np.column_stack([np.ones_like(z2), z2])
            coef = np.linalg.lstsq(design, y[codes == g], rcond=None)[0]
            if coef[1] > 0:  # no peak: a flat line
                coef = np.array([y[codes == g].mean(), 0.0])
            total += float(np.sum((y[codes == g] - design @ coef) ** 2))
        return total

    def profile(k: float) -> float:
        starts = np.linspace(-8, 2, 21)
        return min(optimize.minimize_scalar(lambda a: rss(a, k), bounds=(s - 0.5, s + 0.5),
                                            method="bounded").fun for s in starts)

    df = len(trials) - 2 * len(BATCHES) - 2
    best = profile(fit["exponent"])
    threshold = best * (1 + stats.f.ppf(0.95, 1, df) / df)
    assert fit["exponent_lower"] < 0.5 < fit["exponent_upper"]
    for end in (fit["exponent_lower"], fit["exponent_upper"]):
        assert profile(end) == pytest.approx(threshold, rel=1e-4)
    assert fit["r_squared"] == pytest.approx(1 - best / sum(
        float(np.sum((y[codes == g] - y[codes == g].mean()) ** 2)) for g in range(7)), rel=1e-6)

def test_by_norm_fits_each_norm_on_its_own():
    batch = surface(0.5, 8)
    layer = surface(1.0, 9).assign(norm="layer")
    lonely = surface(1.0, 9).head(1).assign(norm="none")
    result = lr_scaling(pd.concat([batch, layer, lonely]), "maximize", by="norm")
    fits = result.fits[result.fits["parameter"] == "learning_rate"].set_index("norm")
    assert fits.index.tolist() == ["batch", "layer", "none"]
    assert fits.loc["batch", "exponent"] == pytest.approx(0.5, abs=0.15)
    assert fits.loc["layer", "exponent"] == pytest.approx(1.0, abs=0.15)
    assert fits.loc["batch", "exponent"] == lr_fit(lr_scaling(batch, "maximize"))["exponent"]
    assert math.isnan(fits.loc["none", "exponent"])
    assert fits.loc["none", "reason"] == ("batch_size 16 left out of the fit of k (fewer than 3 "
                                          "distinct learning rates: no curvature of their own); "
                                          "0 batch sizes to fit; k needs 2")
    assert result.points.groupby("norm").size().to_dict() == {"batch": 7, "layer": 7, "none": 1}
    assert result.points.columns[0] == "norm"


POWERS = 2 ** np.arange(4, 13)  # 16 .. 4096


def sweep(best_lr: np.ndarray, warmup: np.ndarray | None = None) -> pd.DataFrame:
    """Three trials per batch size at best_lr / 2, best_lr, 2 best_lr; the middle one scores
    best. Plus a diverged trial with the highest score at every batch size, to be ignored."""
    rows = []
    for i, (batch, lr) in enumerate(zip(POWERS, best_lr, strict=True)):
        for factor, score, status in ((0.5, 0.80, "ok"), (1.0, 0.90, "ok"), (2.0, 0.85, "ok"),
                                      (8.0, 0.99, "diverged")):
            rows.append({"trial_id": f"{batch}-{factor}", "status": status,
                         "batch_size": int(batch), "learning_rate": lr * factor,
                         "warmup_epochs": 1.0 if warmup is None else warmup[i],
                         "final_objective": score})
    return pd.DataFrame(rows)


def test_warmup_fit_of_the_best_trials_leaves_out_trials_without_warmup():
    warmup = np.where(POWERS >= 64, 0.5 * POWERS**0.5, 0.0)
    got = lr_scaling(sweep(0.01 * POWERS, warmup), "maximize")
    fit = got.fits.set_index("parameter").loc["warmup_epochs"]
    assert fit["method"] == "best_trial_power_fit"
    assert fit["exponent"] == pytest.approx(0.5, abs=1e-12)
    assert fit["coefficient"] == pytest.approx(0.5)
    assert fit["n_points"] == 7
    assert fit["sqrt_rule_in_ci"] and not fit["linear_rule_in_ci"]
    assert fit["reason"] == ("2 of 9 best trials left out (warmup_epochs or batch_size missing "
                             "or not > 0)")
    assert lr_fit(got)["exponent"] == pytest.approx(1.0)


def test_missing_warmup_column_is_a_reason_not_an_error():
    fits = lr_scaling(sweep(0.01 * POWERS).drop(columns="warmup_epochs"), "maximize").fits
    assert fits["exponent"].iloc[0] == pytest.approx(1.0)
    assert fits["reason"].iloc[1] == "the trials table has no warmup_epochs column"
    assert math.isnan(fits["exponent"].iloc[1])
    assert len(lr_scaling(sweep(0.01 * POWERS), "maximize", warmup_col=None).fits) == 1


def test_lr_scaling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="not 'max'"):
        lr_scaling(sweep(0.01 * POWERS), "max")
    with pytest.raises(CannotCompute, match="has no lr column"):
        lr_scaling(sweep(0.01 * POWERS), "maximize", lr_col="lr")
    with pytest.raises(ValueError, match="window must be > 0"):
        lr_scaling(sweep(0.01 * POWERS), "maximize", window=-1.0)
