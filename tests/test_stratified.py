"""Stratified batches (TrainConfig.stratify): exact class shares, per-class epochs without
replacement, determinism, saved state, and whole runs (one process and 2 DDP workers)."""

import io
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from lbt_study.errors import UserError
from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig
from lbt_study.train.norms import NormSpec, make_norm
from lbt_study.train.sampling import IndexStream, StratifiedStream, make_stream, stratified_shares
from lbt_study.train.workload import ACCURACY, Data, Workload

sys.path.insert(0, str(Path(__file__).parent))
import _ddp  # noqa: E402

COUNTS = [1000, 300, 100, 30, 10]  # N = 1440


def imbalanced_labels(counts=COUNTS, seed=0):
    """Class c repeated counts[c] times, in a seeded random order."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_shares_by_largest_remainder_computed_by_hand():
    # B=64: quotas 44.44, 13.33, 4.44, 1.33, 0.44 -> floors 44, 13, 4, 1, 0 (62); the 2 seats
    # left go to the largest remainders 0.44 (classes 0, 2, 4 tie): the rarer first, 4 then 2
    assert stratified_shares(COUNTS, 64) == [44, 13, 5, 1, 1]
    # B=8: quotas 5.56, 1.67, 0.56, 0.17, 0.06 -> floors 5, 1, 0, 0, 0; seats to class 1
    # (0.67) and class 2 (0.56 ties class 0, rarer first) -> 5, 2, 1, 0, 0; then classes 3
    # and 4 each take a seat from the largest share (class 0): 3, 2, 1, 1, 1
    assert stratified_shares(COUNTS, 8) == [3, 2, 1, 1, 1]
    assert stratified_shares(COUNTS, 1440) == COUNTS  # a batch of N is one epoch
    # B=3 < 5 classes: largest remainders only (1.1 of 3 seats for class 1 after floors 2, 0)
    assert stratified_shares(COUNTS, 3) == [2, 1, 0, 0, 0]
    for k in range(5, 300):
        shares = stratified_shares(COUNTS, k)
        assert sum(shares) == k and min(shares) >= 1


def test_every_batch_holds_each_class_its_share():
    labels = imbalanced_labels()
    stream = StratifiedStream(labels, seed=0)
    for _ in range(60):  # more than an epoch of every class
        batch = stream.take(64)
        assert len(batch) == 64
        counts = Counter(labels[batch].tolist())
        assert [counts[c] for c in range(5)] == [44, 13, 5, 1, 1]
    batch = stream.take(64)
    assert labels[batch].tolist() != sorted(labels[batch].tolist())  # mixed, not in blocks


def test_each_class_is_drawn_without_replacement_one_epoch_at_a_time():
    labels = imbalanced_labels()
    stream = StratifiedStream(labels, seed=1)
    shares = [44, 13, 5, 1, 1]
    draws = {c: [] for c in range(5)}
    for _ in range(80):
        batch = stream.take(64)
        for c in range(5):
            draws[c].append(batch[labels[batch] == c].tolist())
    for c, n in enumerate(COUNTS):
        members = set(torch.nonzero(labels == c).flatten().tolist())
        full = n // shares[c]  # batches that stay inside the first epoch of class c
        first = [i for part in draws[c][:full] for i in part]
        assert len(first) == len(set(first)) and set(first) <= members
        covering = [i for part in draws[c][: -(-n // shares[c])] for i in part]
        assert set(covering) == members  # the first epoch is complete before any repeat
    # class 4: one per batch, so batches 0-9, 10-19, ... are each a permutation of its 10
    assert sorted(i for part in draws[4][10:20] for i in part) == sorted(
        torch.nonzero(labels == 4).flatten().tolist())


def test_same_seed_same_batches_other_seed_others():
    labels = imbalanced_labels()
    a, b, c = (StratifiedStream(labels, seed=s) for s in (5, 5, 6))
    for _ in range(10):
        x, y, z = a.take(64), b.take(64), c.take(64)
        assert torch.equal(x, y)
    assert not torch.equal(x, z)


def test_saved_state_continues_the_same_batches():
    labels = imbalanced_labels()
    stream = StratifiedStream(labels, seed=2)
    for _ in range(7):
        stream.take(64)
    buf = io.BytesIO()
    torch.save(stream.state_dict(), buf)  # as the runner's checkpoints do
    buf.seek(0)
    restored = StratifiedStream(labels, seed=99)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    for k in (64, 64, 128, 32):  # batch sizes may change (batch_growth)
        assert torch.equal(stream.take(k), restored.take(k))


def test_stratify_needs_integer_labels_and_a_batch_of_every_class():
    cfg = TrainConfig(batch_size=64, lr=0.1, stratify=True)
    with pytest.raises(UserError, match="integer class labels.*'linreg' has float32 labels"):
        make_stream(cfg, torch.zeros(100, 1), 64, "linreg")
    with pytest.raises(UserError, match="at least the number of classes \\(5\\), got B=4"):
        make_stream(cfg, imbalanced_labels(), 4, "mine")
    plain = make_stream(cfg.model_copy(update={"stratify": False}), imbalanced_labels(), 4, "x")
    assert isinstance(plain, IndexStream)


def test_stratify_on_a_regression_workload_is_a_user_error():
    with pytest.raises(UserError, match="stratify needs integer class labels"):
        run_training(TrainConfig(workload="linreg", batch_size=64, lr=0.01, epochs=1,
                                 stratify=True))


# ------------------------------------------------------------------ a whole run, imbalanced

FEATURES, TRAIN_COUNTS, VAL_COUNTS = 8, (600, 150, 30), (200, 50, 10)


def _blobs(counts, gen, centres):
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return centres[y] + torch.randn(len(y), FEATURES, generator=gen), y


def load_imbalanced(seed: int) -> Data:
    del seed
    gen = torch.Generator().manual_seed(11)
    centres = 1.5 * torch.randn(len(TRAIN_COUNTS), FEATURES, generator=gen)
    return Data(*_blobs(TRAIN_COUNTS, gen, centres), *_blobs(VAL_COUNTS, gen, centres))


def small_mlp(norm: NormSpec) -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 32), make_norm(norm, 32, spatial=False), nn.ReLU(),
                         nn.Linear(32, len(TRAIN_COUNTS)))


IMBALANCED = Workload(name="imbalanced-blobs", models={"mlp": small_mlp},
                      load_data=load_imbalanced, metrics=(ACCURACY,))
RUN = {"workload": f"{__name__}:IMBALANCED", "batch_size": 26, "lr": 0.05, "epochs": 2,
       "eval_every_examples": 400, "norm": "batch", "stratify": True}


def test_a_stratified_run_trains_and_resumes_exactly():
    rows, saved = [], {}

    def checkpoint(row, state):
        buf = io.BytesIO()
        torch.save(state, buf)
        saved[row["step"]] = buf.getvalue()
        rows.append(row)

    cfg = TrainConfig(**RUN, checkpoint_every_s=0.0)  # a checkpoint at every evaluation
    out = run_training(cfg, checkpoint=checkpoint)
    assert out.status == "ok" and out.examples_seen == out.steps * 26
    assert rows[-1]["val_accuracy"] > 0.8
    plain = []
    run_training(cfg.model_copy(update={"stratify": False}), plain.append)
    assert plain[-1]["val_loss"] != rows[-1]["val_loss"]  # another order of examples

    middle = sorted(saved)[1]
    resumed = []
    state = torch.load(io.BytesIO(saved[middle]), weights_only=True)
    run_training(cfg, resumed.append, resume=state)
    assert resumed[0]["step"] > middle
    assert resumed[-1]["val_loss"] == rows[-1]["val_loss"]  # exactly as uninterrupted
    assert resumed[-1]["train_loss"] == rows[-1]["train_loss"]


def test_two_workers_slice_the_same_stratified_batches(tmp_path):
    """2 DDP workers x B/2 equal one process with B (float64): the same global batches."""
    config = {"workload": "digits", "model": "mlp", "norm": "none", "lr": 0.05,
              "dtype": "float64", "seed": 4, "epochs": 0.17, "batch_size": 32, "stratify": True}
    one = run_training(TrainConfig(**config)).model.state_dict()
    per_rank = _ddp.spawn(_ddp.train_worker, tmp_path, [{**config, "workers": 2}])
    for result in per_rank:
        assert "error" not in result[0], result[0]
        for key, value in one.items():
            torch.testing.assert_close(result[0]["state"][key], value, atol=1e-6, rtol=0)
    unstratified = run_training(TrainConfig(**{**config, "stratify": False})).model.state_dict()
    assert max((unstratified[k] - one[k]).abs().max().item() for k in one) > 1e-4
