"""A joint batch-size x normalization study on scikit-learn's digits (CPU, minutes).

Optuna's TPE searches jointly over the global batch size (16 ... 1024), the learning rate,
the warmup length and every normalization (the seven classic ones and the hybrid), on a
small CNN. Trials whose norm is ``sync_batch`` run as 2 data-parallel workers (Ray Train,
gloo), so that SyncBN really pools statistics across workers; the others run as one worker.
Ghost BN uses virtual batches of 16.

    lbt-study run search_spaces/digits_norms.py
"""

from lbt_study import Study
from lbt_study.train.norms import NORMS

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024]


def space(trial):
    norm = trial.suggest_categorical("norm", list(NORMS))
    return {
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "lr": trial.suggest_float("lr", 1e-3, 1.0, log=True),
        "warmup_epochs": trial.suggest_float("warmup_epochs", 0.0, 2.0),
        "norm": norm,
        "workers": 2 if norm == "sync_batch" else 1,
    }


study = Study(
    name="digits-norms",
    workload="digits",
    space=space,
    trials=24,
    fixed={
        "model": "cnn",
        "optimizer": "sgd",
        "momentum": 0.9,
        "schedule": "cosine",
        "epochs": 8,
        "ghost_batch_size": 16,
        "seed": 0,
    },
    # Start with one trial per normalization, each at another batch size; TPE takes over after.
    initial_points=[
        {"norm": norm, "batch_size": b, "lr": 0.05, "warmup_epochs": 0.5}
        for norm, b in zip(NORMS, BATCH_SIZES + BATCH_SIZES, strict=False)
    ],
    description="joint search over batch size, learning rate, warmup and normalization",
)
