"""Study protocols: per batch size (equal quasi-random tuning), multi-objective."""

import pickle

import optuna
import pytest

from lbt_study import Study, load_results
from lbt_study.errors import UserError
from lbt_study.study.driver import run_study
from lbt_study.study.preflight import check_study
from lbt_study.study.search import make_sampler


def _space(trial):
    return {"lr": trial.suggest_float("lr", 1e-3, 0.5, log=True)}


FIXED = {"model": "mlp", "norm": "batch", "epochs": 1, "eval_every_examples": 256,
         "gns_probe_examples": 256}


@pytest.mark.parametrize("name", ["tpe", "qmc", "random"])
def test_every_sampler_pickles_and_samples_the_same_after(name):
    """Tune pickles its searcher, sampler included, into tuner.pkl (Optuna 5.1's NSGA-II holds
    a lock that does not pickle); the copy must sample what the original samples."""
    sampler = make_sampler(name, seed=3, multi=True)
    copy = pickle.loads(pickle.dumps(sampler))
    drawn = []
    for s in (sampler, copy):
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)),
                       n_trials=3)
        drawn.append([t.params["x"] for t in study.trials])
    assert drawn[0] == drawn[1]


def test_cells_of_the_per_batch_size_protocol():
    study = Study(name="s", space=_space, protocol="per_batch_size", batch_sizes=[32, 128],
                  norms=["batch", "layer"], trials=3, fixed={"lr": 0.1})
    cells = study.cells()
    assert [c.study_name for c in cells] == [
        "s/B=32/norm=batch", "s/B=32/norm=layer", "s/B=128/norm=batch", "s/B=128/norm=layer"]
    assert cells[1].overrides == {"batch_size": 32, "norm": "layer"}
    assert study.total_trials == 12 and study.sampler_name == "qmc"
    with pytest.raises(UserError, match=r"the protocol sets \['batch_size'\] for this search"):
        cells[0].apply({"batch_size": 64})


@pytest.mark.parametrize("kwargs,message", [
    ({"protocol": "per_batch_size"}, "needs batch_sizes"),
    ({"batch_sizes": [32]}, "batch_sizes belongs to protocol 'per_batch_size' or 'adaptive'"),
    ({"protocol": "per_batch_size", "batch_sizes": [32], "fixed": {"batch_size": 32}},
     "sets ['batch_size'] itself"),
])
def test_protocol_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Study(name="s", space=_space, **kwargs)


def test_preflight_checks_every_cell():
    study = Study(name="s", space=_space, protocol="per_batch_size", batch_sizes=[32, 100],
                  fixed={**FIXED, "workers": 1, "accumulation_steps": 8})
    with pytest.raises(UserError, match="batch_size 100 is not divisible .* in s/B=100"):
        check_study(study)


@pytest.mark.ray
def test_per_batch_size_protocol_gives_every_batch_size_the_same_trials(tmp_path, ray_local):
    study = Study(name="pb", space=_space, protocol="per_batch_size", batch_sizes=[32, 128, 512],
                  trials=3, fixed=FIXED)
    checked = check_study(study)
    run_study(study, tmp_path, "maximize", max_trial_cpus=checked.max_trial_cpus,
              progress=lambda line: None)
    trials, _ = load_results(tmp_path)
    assert trials.groupby("batch_size").size().to_dict() == {32: 3, 128: 3, 512: 3}
    assert set(trials["optuna_study"]) == {"pb/B=32", "pb/B=128", "pb/B=512"}
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for name, group in trials.groupby("optuna_study"):
        ot = optuna.load_study(study_name=name, storage=storage)
        assert len(ot.trials) == 3
        assert sorted(t.number for t in ot.trials) == sorted(group["optuna_trial_number"])
    # the same quasi-random points at every batch size (common random numbers)
    lrs = trials.sort_values("optuna_trial_number").groupby("batch_size")["lr"].apply(list)
    assert lrs[32] == lrs[128] == lrs[512]


@pytest.mark.ray
def test_multi_objective_tells_optuna_both_objectives(tmp_path, ray_local):
    study = Study(name="mo", space=_space, trials=4, multi_objective=True, target=0.5,
                  fixed={**FIXED, "batch_size": 64},
                  initial_points=[{"lr": 0.1}, {"lr": 1e-3}])  # reaches 0.5; may not
    checked = check_study(study)
    run_study(study, tmp_path, "maximize", max_trial_cpus=checked.max_trial_cpus,
              target=0.5, progress=lambda line: None)
    trials, _ = load_results(tmp_path)
    ot = optuna.load_study(study_name="mo", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [d.name for d in ot.directions] == ["MAXIMIZE", "MINIMIZE"]
    by_number = trials.set_index("optuna_trial_number")
    for t in ot.trials:
        rec = by_number.loc[t.number]
        assert t.values[0] == pytest.approx(rec["final_objective"])
        expected = rec["seconds_to_target"] if rec["reached_target"] else float("inf")
        assert t.values[1] == pytest.approx(expected)
    assert by_number.loc[0, "reached_target"]
    assert len(ot.best_trials) >= 1
