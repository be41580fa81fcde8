"""The per-batch-size protocol of Shallue et al. 2018 on digits (CPU, a few minutes).

Every batch size gets the same number of trials of its own quasi-random search (Optuna's
scrambled Sobol QMC sampler) over the learning rate and warmup, so that every point of the
steps-to-target frontier is tuned equally; normalization fixed to BatchNorm.

    lbt-study run search_spaces/digits_per_batch.py
"""

from lbt_study import Study


def space(trial):
    return {
        "lr": trial.suggest_float("lr", 1e-3, 1.0, log=True),
        "warmup_epochs": trial.suggest_float("warmup_epochs", 0.0, 2.0),
    }


study = Study(
    name="digits-per-batch",
    workload="digits",
    space=space,
    protocol="per_batch_size",
    batch_sizes=[16, 64, 256, 1024],
    trials=5,  # per batch size
    fixed={"model": "cnn", "norm": "batch", "optimizer": "sgd", "momentum": 0.9,
           "schedule": "cosine", "epochs": 8, "eval_every_examples": 718, "seed": 0},
    description="per-batch-size protocol: equal quasi-random tuning at every batch size",
)
