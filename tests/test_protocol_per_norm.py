"""The per-normalization protocol: a new protocol as one module and one registry line."""

import pytest
from pydantic import ValidationError

from lbt_study import Study, load_results
from lbt_study.study.driver import run_study
from lbt_study.study.preflight import check_study


def _space(trial):
    return {"batch_size": trial.suggest_categorical("batch_size", [32, 64]),
            "lr": trial.suggest_float("lr", 0.02, 0.2, log=True)}


def _study(**kwargs):
    return Study(**{"name": "pn", "space": _space, "protocol": "per_norm",
                    "norms": ["batch", "layer"], "trials": 2,
                    "fixed": {"model": "mlp", "epochs": 1, "eval_every_examples": 512}, **kwargs})


def test_every_norm_is_its_own_search_over_the_rest():
    study = _study()
    assert [(c.study_name, c.overrides, c.trials) for c in study.cells()] == [
        ("pn/norm=batch", {"norm": "batch"}, 2), ("pn/norm=layer", {"norm": "layer"}, 2)]
    assert study.sampler_name == "tpe" and study.total_trials == 4


@pytest.mark.parametrize("kwargs,message", [
    ({"norms": ["batch"]}, "needs norms with at least 2, got ['batch']"),
    ({"fixed": {"norm": "batch"}}, "sets 'norm' itself"),
    ({"batch_sizes": [32]}, "batch_sizes belongs to protocol 'per_batch_size'"),
])
def test_its_settings_are_checked(kwargs, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _study(**kwargs)


@pytest.mark.ray
def test_a_per_norm_study_tunes_each_norm_alike(tmp_path, ray_local):
    study = _study()
    checked = check_study(study)
    run_study(study, tmp_path, checked.workload.objective_direction,
              max_trial_cpus=checked.max_trial_cpus, progress=lambda line: None)
    trials, history = load_results(tmp_path)
    assert (trials["status"] == "ok").all()
    per_norm = trials.groupby("optuna_study")["norm"].agg(["count", "unique"])
    assert per_norm["count"].to_dict() == {"pn/norm=batch": 2, "pn/norm=layer": 2}
    assert [list(u) for u in per_norm["unique"]] == [["batch"], ["layer"]]
    assert set(trials["batch_size"]) <= {32, 64} and len(history) >= 4 * 2
