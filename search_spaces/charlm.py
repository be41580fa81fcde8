"""A character-level Transformer LM on the Python standard library's source: batch sizes 16-512.

The text is on every machine with Python (no download): the first 2,000,000 characters of the
stdlib's ``.py`` files (``LBT_CHARLM_CHARS`` changes that), 90% to train, 10% to validate, as
windows of 64 characters. The model is a 2-layer, 4-head, d_model 128 pre-norm Transformer
(0.43 M parameters) trained with AdamW; the search covers the learning rate, warmup and the
normalization (LayerNorm, BatchNorm over batch x time, none). Objective: validation loss in
nats per character (minimised); target 2.0, the workload's (``Study(target=...)`` changes it).

About 28,000 training windows per epoch; an epoch at B = 64 took about 2-3 minutes on two CPU
cores, so a trial of 4 epochs takes several minutes on CPU (on a GPU, add
``"gpus_per_worker": 1.0`` to ``fixed``).

    lbt-study run search_spaces/charlm.py
"""

from lbt_study import Study

BATCH_SIZES = [16, 32, 64, 128, 256, 512]
NORMS = ["layer", "batch", "none"]


def space(trial):
    return {
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        "warmup_epochs": trial.suggest_float("warmup_epochs", 0.0, 0.5),
        "norm": trial.suggest_categorical("norm", NORMS),
    }


study = Study(
    name="charlm",
    workload="charlm",
    space=space,
    trials=48,
    fixed={
        "model": "small",
        "optimizer": "adamw",
        "weight_decay": 0.1,
        "schedule": "cosine",
        "epochs": 4,
        "eval_every_examples": 6_912,  # four evaluations per epoch of 27,692 windows
        "seed": 0,
    },
    initial_points=[
        {"batch_size": b, "lr": 3e-3, "warmup_epochs": 0.1, "norm": norm}
        for norm, b in zip(NORMS * 2, BATCH_SIZES, strict=True)
    ],
    description="char-level Transformer LM: batch size x learning rate x warmup x normalization",
)
