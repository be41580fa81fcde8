"""An Adam-era batch-size study on scikit-learn's digits (CPU, about 2 minutes).

AdamW on the small CNN with LayerNorm, per-batch-size protocol: at each of 4 batch sizes
(16 ... 1024) the same 8 quasi-random points over the learning rate (around the square-root
rule, Malladi et al. 2022) and the beta2 rule, half of them with beta2 = 0.95 at every batch
size (``fixed``, per step) and half with the half-life rule (``half_life``: 0.95 at B = 256,
0.95 ** (B / 256) elsewhere, so the second moment's half-life is the same number of examples
at every batch size, Marek et al. 2025). Weight decay 0.1, so every trial records AdamW's
timescale tau = B / (lr x weight_decay x D) in epochs (``adamw_tau_epochs``, Bergsma et al.
2025). Every trial trains to validation accuracy 0.95 or 65,536 examples. The report's
"Adam-era scaling" section compares the two rules per batch size.

    lbt-study run search_spaces/digits_adamw.py
"""

from lbt_study import Study

BATCH_SIZES = [16, 64, 256, 1024]


def space(trial):
    return {"base_lr": trial.suggest_float("base_lr", 3e-4, 3e-2, log=True),
            "beta2_rule": trial.suggest_categorical("beta2_rule", ["fixed", "half_life"])}


study = Study(
    name="digits-adamw",
    workload="digits",
    space=space,
    protocol="per_batch_size",
    batch_sizes=BATCH_SIZES,
    trials=8,  # per batch size: a power of 2, so the Sobol points split 4 / 4 between the rules
    fixed={
        "model": "cnn",
        "norm": "layer",
        "optimizer": "adamw",
        "weight_decay": 0.1,
        "beta2": 0.95,
        "beta2_ref_batch_size": 256,
        "schedule": "cosine",
        "budget": "examples",
        "budget_examples": 65536,
        "stop_at_target": True,
        "lr_scaling_exponent": 0.5,
        "lr_ref_batch_size": 256,
        "seed": 0,
    },
    description="AdamW: the beta2 half-life rule against a fixed beta2, per batch size",
)
