"""Budgets on digits: the gap by batch size on an epochs budget and on a steps budget.

Hoffer et al. (2017), "train longer, generalize better": on an epochs budget a batch 16 times
larger takes 16 times fewer updates, and much of its generalization gap is those missing
updates; give every batch size the same number of updates (a steps budget) and the gap should
close. Every batch size from 16 to 1024 runs under both budgets with 3 quasi-random trials of
its own (learning rate around the square-root rule, as in search_spaces/digits.py), on the
MLP with LayerNorm (no batch statistics, so B changes only the optimisation). The epochs
budget is 4 epochs (4 x 1437 examples: 360 updates at B=16, 6 at B=1024); the steps budget
gives every batch size those 360 updates. The report's gap section then has a row per norm
and budget and a table of the excess gap (largest B minus smallest) under each.

    lbt-study run search_spaces/digits_budgets.py
"""

from lbt_study import Study

BATCH_SIZES = [16, 64, 256, 1024]


def space(trial):
    return {"base_lr": trial.suggest_float("base_lr", 0.003, 0.3, log=True)}


study = Study(
    name="digits-budgets",
    workload="digits",
    space=space,
    protocol="per_batch_size",
    batch_sizes=BATCH_SIZES,
    budgets=[{"budget": "epochs", "epochs": 4},
             {"budget": "steps", "budget_steps": 360}],
    trials=3,  # per batch size and budget
    fixed={
        "model": "mlp",
        "norm": "layer",
        "optimizer": "sgd",
        "momentum": 0.9,
        "schedule": "cosine",
        "lr_scaling_exponent": 0.5,
        "lr_ref_batch_size": 256,
        "seed": 0,
    },
    description="per-batch-size protocol under an epochs and a steps budget (Hoffer et al. 2017)",
)
