"""The workload contract: registry errors, user workloads by module:attr, the digits data."""

import pytest
import torch

from lbt_study.errors import UserError
from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.workload import get_workload


def test_unknown_workload_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown workload 'imagenet'; known: <module>:<attr>, "
                                         r"charlm, cifar, digits, linreg"):
        get_workload("imagenet")


@pytest.mark.parametrize("name,message", [
    ("no_such_module_xyz:W", "cannot import workload module 'no_such_module_xyz'"),
    ("lbt_study.train.workloads.template:NOPE", "has no attribute 'NOPE'"),
    ("lbt_study.train.workloads.template:N_TRAIN", "is a int, not an lbt_study Workload"),
])
def test_bad_module_attr_workloads(name, message):
    with pytest.raises(UserError, match=message):
        get_workload(name)


def test_user_workload_by_module_attr_trains():
    name = "lbt_study.train.workloads.template:WORKLOAD"
    assert get_workload(name).name == "template-blobs"
    rows = []
    run_training(TrainConfig(workload=name, batch_size=64, lr=0.1, epochs=2, norm="layer"),
                 rows.append)
    assert rows[0]["val_accuracy"] < 0.5 < 0.9 < rows[-1]["val_accuracy"]


def test_unknown_model_lists_the_models():
    with pytest.raises(UserError, match=r"unknown model of workload 'digits' 'vit'; known: cnn"):
        run_training(TrainConfig(model="vit", batch_size=32, lr=0.1, epochs=1))


def test_digits_split_is_fixed_and_stratified():
    wl = get_workload("digits")
    a, b = wl.load_data(0), wl.load_data(99)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert (len(a.x_train), len(a.x_val)) == (1437, 360)
    assert a.x_train.shape[1:] == (1, 8, 8) and a.x_train.min() >= 0 and a.x_train.max() <= 1
    counts = torch.bincount(a.y_val, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of each class


def test_objective_direction_is_declared_not_guessed():
    wl = get_workload("digits")
    assert wl.objective == "accuracy" and wl.objective_direction == "maximize"
