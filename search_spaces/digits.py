"""The embedded default: a batch-size and normalization study on scikit-learn's digits (CPU,
minutes).

Every (batch size, normalization) cell, 7 batch sizes from 16 to 1024 x 4 normalizations
(BatchNorm, Ghost BatchNorm of 16, LayerNorm, GroupNorm of 4 groups), gets the same 3 trials
of its own quasi-random search over the learning rate (the per-batch-size protocol of
Shallue et al. 2018; Optuna's scrambled Sobol QMC sampler, the same points in every cell),
on a small CNN, SGD with momentum. The learning rate is searched as ``base_lr`` around the
square-root rule (lr = base_lr x (B / 256)^0.5, base_lr from 0.002 to 0.2), so every
batch size's range, 2 decades wide, holds its optimum; the report fits the exponent the
measurements give, whatever the rule searched around. Every trial trains until its
validation accuracy reaches the target 0.95 (``stop_at_target``, two evaluations in a row)
or its budget of 65,536 examples is spent (45.6 epochs: 64 steps at B = 1024, where the
best trials need about 25), so no batch size's frontier point is censored by the budget;
a cosine schedule over that budget. Evaluations are spaced geometrically (3 per doubling of
the examples seen) and the time to the target (0.95; the frontier and B_crit also at 0.90
and 0.93) is interpolated between them.

    lbt-study run search_spaces/digits.py
"""

from lbt_study import Study

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024]
NORMS = ["batch", "ghost_batch", "layer", "group"]


def space(trial):
    return {"base_lr": trial.suggest_float("base_lr", 0.002, 0.2, log=True)}


study = Study(
    name="digits",
    workload="digits",
    space=space,
    protocol="per_batch_size",
    batch_sizes=BATCH_SIZES,
    norms=NORMS,
    trials=3,  # per (batch size, normalization)
    targets=[0.90, 0.93],  # besides the workload's 0.95
    fixed={
        "model": "cnn",
        "ghost_batch_size": 16,
        "norm_groups": 4,
        "optimizer": "sgd",
        "momentum": 0.9,
        "schedule": "cosine",
        "budget": "examples",
        "budget_examples": 65536,
        "stop_at_target": True,
        "lr_scaling_exponent": 0.5,
        "lr_ref_batch_size": 256,
        "seed": 0,
    },
    description="per-batch-size protocol over (batch size, normalization): equal "
                "quasi-random tuning in every cell, each trial trained to the target",
)
