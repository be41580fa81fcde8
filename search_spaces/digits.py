"""The embedded default: a batch-size study on scikit-learn's digits (CPU, minutes).

Every batch size from 16 to 1024 gets the same 5 trials of its own quasi-random search
(the per-batch-size protocol of Shallue et al. 2018; Optuna's scrambled Sobol QMC sampler)
over the learning rate and warmup, on a small CNN with Ghost BatchNorm (statistics over 16
examples at every batch size, Hoffer et al. 2017, so that B changes the optimisation and not
what each normalization statistic sees), SGD with momentum and a cosine schedule over 8
epochs. The learning rate is searched as ``base_lr`` around the
square-root rule (lr = base_lr x (B / 256)^0.5, base_lr from 0.003 to 0.3), so every batch
size's range, 2 decades wide, holds its optimum; the report fits the exponent that the
measurements give, whatever the rule searched around. Evaluations are spaced geometrically
(4 per doubling of the examples seen) and the time to the target (0.95 validation accuracy;
the frontier and B_crit also at 0.90 and 0.93) is interpolated between them. The
normalization study is ``search_spaces/digits_norms.py``.

    lbt-study run search_spaces/digits.py
"""

from lbt_study import Study

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024]


def space(trial):
    return {
        "base_lr": trial.suggest_float("base_lr", 0.003, 0.3, log=True),
        "warmup_epochs": trial.suggest_float("warmup_epochs", 0.0, 1.0),
    }


study = Study(
    name="digits",
    workload="digits",
    space=space,
    protocol="per_batch_size",
    batch_sizes=BATCH_SIZES,
    trials=5,  # per batch size
    targets=[0.90, 0.93],  # besides the workload's 0.95
    fixed={
        "model": "cnn",
        "norm": "ghost_batch",
        "ghost_batch_size": 16,
        "optimizer": "sgd",
        "momentum": 0.9,
        "schedule": "cosine",
        "epochs": 8,
        "lr_scaling_exponent": 0.5,
        "lr_ref_batch_size": 256,
        "seed": 0,
    },
    description="per-batch-size protocol: equal quasi-random tuning at every batch size",
)
