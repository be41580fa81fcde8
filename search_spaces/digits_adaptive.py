"""The default digits study (search_spaces/digits.py), adaptive: rounds until B_crit is known.

The same workload, model, search space and settings as ``digits.py`` (a small CNN with Ghost
BatchNorm of 16, SGD with momentum, cosine over 8 epochs, base_lr around the square-root rule
and warmup searched quasi-randomly per batch size, target 0.95), but instead of 5 trials at
every batch size up front: round 0 gives every batch size 3 trials, then every round adds 7
trials, one to each batch size (allocation "balanced", the default: equal counts keep every
frontier point a minimum over as many trials), until the interval's (hi - lo) / B_crit <= 1.0
at level 99% (adjust "bonferroni", the default: 95% over the 5 looks at 21, 28, 35, 42 and
49 trials, so the interval it stops with is a 95% one whichever look stops it) or 49 trials
(7 per batch size) are spent. The full sweep's 95% interval was 59 [40.7, 100.8], width 1.02;
at 99% the rule will often run to the budget. ASHA (rungs at 2, 6 and 18 epochs of examples;
the last past the 8-epoch budget, so two rungs
count) stops poor trials early within each round's search at a batch size.

    lbt-study run search_spaces/digits_adaptive.py --run-dir /tmp/adaptive_digits
"""

from lbt_study import Asha, StopWhen, Study

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024]
TRAIN_EXAMPLES = 1437  # digits' training split
EPOCHS = 8


def space(trial):
    return {
        "base_lr": trial.suggest_float("base_lr", 0.003, 0.3, log=True),
        "warmup_epochs": trial.suggest_float("warmup_epochs", 0.0, 1.0),
    }


study = Study(
    name="digits-adaptive",
    workload="digits",
    space=space,
    protocol="adaptive",
    batch_sizes=BATCH_SIZES,
    trials=3,  # per batch size in round 0
    targets=[0.90, 0.93],  # besides the workload's 0.95
    stop_when=StopWhen(b_crit_rel_width=1.0, max_trials=49, round_trials=7, min_trials=3),
    asha=Asha(grace_examples=2 * TRAIN_EXAMPLES, max_examples=EPOCHS * TRAIN_EXAMPLES * 3 + 1,
              reduction_factor=3.0),
    fixed={
        "model": "cnn",
        "norm": "ghost_batch",
        "ghost_batch_size": 16,
        "optimizer": "sgd",
        "momentum": 0.9,
        "schedule": "cosine",
        "epochs": EPOCHS,
        "lr_scaling_exponent": 0.5,
        "lr_ref_batch_size": 256,
        "seed": 0,
    },
    description="adaptive per-batch-size protocol: rounds until B_crit's interval is narrow",
)
