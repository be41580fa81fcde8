"""The branched critical batch size (Merrill et al. 2025) on scikit-learn's digits (CPU).

One base run of the small MLP at B0 = 16 (SGD with momentum 0.9, lr 0.05, cosine over 10
epochs) saves its model and optimizer state at 10%, 25%, 50% and 75% of its budget; from
each, branches at k x 16 for k = 1 ... 32 train 8192 examples (about 5.7 epochs) with a
constant learning rate, the base's at the checkpoint times k (the linear rule, for SGD).
The CBS at a checkpoint is the largest k x 16 whose smoothed training loss ends within 5%
of the k = 1 branch's; the report puts it beside the base run's gradient noise scale
B_simple there (section "Branched critical batch size over training",
report/cbs_over_training.csv).

    lbt-study run search_spaces/digits_branched.py
"""

from lbt_study import Branched, Study


def space(trial):
    return {"lr": 0.05}  # sampled once, for the base run


study = Study(
    name="digits-branched",
    workload="digits",
    space=space,
    trials=1,  # the base run; the branches are fractions x ks
    protocol="branched",
    branched=Branched(
        base_batch_size=16,
        fractions=[0.1, 0.25, 0.5, 0.75],
        ks=[1, 2, 4, 8, 16, 32],
        lr_rule="linear",
        branch_examples=8192,
        epsilon=0.05,
    ),
    fixed={"model": "mlp", "norm": "none", "epochs": 10, "optimizer": "sgd",
           "momentum": 0.9, "schedule": "cosine"},
)
