"""ResNet-18 on CIFAR-10: batch sizes 128 ... 8192, the linear vs the square-root scaling rule.

Needs a GPU cluster to finish in reasonable time: a trial is 30 epochs of ResNet-18 (about
0.56 G multiply-adds per image forward, 1.5 M images), on ``WORKERS`` data-parallel GPU workers
(4 here; edit it to match your nodes, keeping 128 / WORKERS a multiple of ``GHOST``).
The data are the official python pickles, never downloaded by the tool:

    tar xzf cifar-10-python.tar.gz -C /data
    export LBT_CIFAR10_DIR=/data/cifar-10-batches-py   # on every node, before `ray start`
    lbt-study run search_spaces/cifar_resnet.py --address auto

(``LBT_CIFAR10_LIMIT=2048`` trains on the first 2,048 images only: a quick smoke run.)

The learning rate is ``base_lr * (B / 128) ** lr_scaling_exponent``: exponent 1.0 is the linear
rule (Goyal et al. 2017), 0.5 the square-root rule (Hoffer et al. 2017); both are searched,
with ``base_lr`` (the rate at B = 128) and a linear warmup of 0-5 epochs. Normalizations:
BatchNorm per GPU, Ghost BN over 32 images, SyncBN over all workers, GroupNorm (32 groups)
and LayerNorm. SGD with momentum 0.9, weight decay 5e-4, cosine decay, evaluation every
epoch. The target (validation accuracy 0.93, the workload's) is a study setting: pass
``target=...`` to ``Study`` to measure steps to another one.
"""

from lbt_study import Study

BATCH_SIZES = [128, 256, 512, 1024, 2048, 4096, 8192]
NORMS = ["batch", "ghost_batch", "sync_batch", "group", "layer"]
WORKERS = 4
GHOST = 32
TRAIN_IMAGES = 50_000


def space(trial):
    return {
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "base_lr": trial.suggest_float("base_lr", 0.01, 0.5, log=True),
        "lr_scaling_exponent": trial.suggest_categorical("lr_scaling_exponent", [1.0, 0.5]),
        "warmup_epochs": trial.suggest_float("warmup_epochs", 0.0, 5.0),
        "norm": trial.suggest_categorical("norm", NORMS),
    }


study = Study(
    name="cifar_resnet",
    workload="cifar",
    space=space,
    trials=140,
    fixed={
        "model": "resnet18",
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "lr_ref_batch_size": 128,
        "schedule": "cosine",
        "epochs": 30,
        "eval_every_examples": TRAIN_IMAGES,  # every epoch
        "ghost_batch_size": GHOST,
        "norm_groups": 32,  # Wu & He 2018
        "workers": WORKERS,
        "gpus_per_worker": 1.0,
        "cpus_per_worker": 4,
        "seed": 0,
    },
    # Every batch size once with the linear rule and BatchNorm at the classic rate 0.1 @ 128;
    # TPE takes over after.
    initial_points=[
        {"batch_size": b, "base_lr": 0.1, "lr_scaling_exponent": 1.0,
         "warmup_epochs": 5.0 if b >= 1024 else 0.0, "norm": "batch"}
        for b in BATCH_SIZES
    ],
    description="ResNet-18 / CIFAR-10: batch size x scaling rule x warmup x normalization",
)
