"""Normalization layers: GhostBatchNorm, SyncBatchNorm (single process) and make_norm."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lbt_study.errors import UserError
from lbt_study.train.norms import (
    NORMS,
    GhostBatchNorm,
    HybridNorm,
    NormSpec,
    SyncBatchNorm,
    make_norm,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}
SHAPES = {1: (16, 6), 2: (16, 6, 3, 3)}
"""Input shapes by BatchNorm flavour: vector features and feature maps."""


def batch(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen) * 3.0 + 1.5


def with_affine(module, seed=1):
    """Give a norm layer non-trivial weight and bias so that they matter in the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
        module.bias.copy_(torch.randn(module.bias.shape, generator=gen))
    return module


def reference_bn(dim, channels):
    return nn.BatchNorm1d(channels) if dim == 1 else nn.BatchNorm2d(channels)


@pytest.mark.parametrize("dim", [1, 2])
def test_ghost_batch_norm_with_whole_batch_is_batch_norm(dim):
    shape = SHAPES[dim]
    ghost = with_affine(GhostBatchNorm(shape[1], ghost_batch_size=shape[0]))
    ref = with_affine(reference_bn(dim, shape[1]))
    for step in range(3):
        x = batch(shape, seed=step)
        torch.testing.assert_close(ghost(x), ref(x), **TOL)
    torch.testing.assert_close(ghost.running_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(ghost.running_var, ref.running_var, **TOL)
    assert not torch.allclose(ghost.running_var, torch.ones(shape[1]))  # the stats moved
    ghost.eval()
    ref.eval()
    x = batch(shape, seed=10)
    torch.testing.assert_close(ghost(x), ref(x), **TOL)


@pytest.mark.parametrize("dim", [1, 2])
def test_ghost_batch_norm_normalises_each_ghost_batch_separately(dim):
    shape = SHAPES[dim]
    g = shape[0] // 4
    ghost = with_affine(GhostBatchNorm(shape[1], ghost_batch_size=g))
    x = batch(shape)
    y = ghost(x)

    expected, means, vars_ = [], [], []
    for chunk in x.split(g):
        running_mean, running_var = torch.zeros(shape[1]), torch.ones(shape[1])
        expected.append(
            F.batch_norm(
                chunk,
                running_mean,
                running_var,
                ghost.weight,
                ghost.bias,
                training=True,
                momentum=0.1,
                eps=1e-5,
            )
        )
        means.append(running_mean)
        vars_.append(running_var)
    torch.testing.assert_close(y, torch.cat(expected), **TOL)
    # Running stats are linear in the batch statistic: the mean of the per-chunk updates.
    torch.testing.assert_close(ghost.running_mean, torch.stack(means).mean(0), **TOL)
    torch.testing.assert_close(ghost.running_var, torch.stack(vars_).mean(0), **TOL)
    # ... and not what one BatchNorm over the whole batch would give.
    whole = F.batch_norm(x, None, None, ghost.weight, ghost.bias, training=True)
    assert (y - whole).abs().max() > 1e-2


def test_ghost_batch_norm_backward_matches_per_chunk_batch_norm():
    shape = SHAPES[2]
    g = shape[0] // 4
    ghost = with_affine(GhostBatchNorm(shape[1], ghost_batch_size=g))
    ref = with_affine(nn.BatchNorm2d(shape[1]))
    x1 = batch(shape).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    w = batch(shape, seed=5)
    (ghost(x1) * w).sum().backward()
    (torch.cat([ref(c) for c in x2.split(g)]) * w).sum().backward()
    assert x1.grad is not None and x1.grad.abs().sum() > 0
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)
    torch.testing.assert_close(ghost.weight.grad, ref.weight.grad, **TOL)
    torch.testing.assert_close(ghost.bias.grad, ref.bias.grad, **TOL)


def test_ghost_batch_norm_rejects_a_batch_it_does_not_divide():
    with pytest.raises(ValueError, match="does not divide"):
        GhostBatchNorm(6, ghost_batch_size=5)(batch(SHAPES[1]))


@pytest.mark.parametrize("dim", [1, 2])
def test_sync_batch_norm_without_process_group_is_batch_norm(dim):
    shape = SHAPES[dim]
    sync = with_affine(SyncBatchNorm(shape[1]))
    ref = with_affine(reference_bn(dim, shape[1]))
    for step in range(3):
        x = batch(shape, seed=step)
        torch.testing.assert_close(sync(x), ref(x), **TOL)
    torch.testing.assert_close(sync.running_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(sync.running_var, ref.running_var, **TOL)
    assert int(sync.num_batches_tracked) == 3
    sync.eval()
    ref.eval()
    x = batch(shape, seed=10)
    torch.testing.assert_close(sync(x), ref(x), **TOL)


def _spec(kind):
    return NormSpec(kind, ghost_batch_size=4 if kind == "ghost_batch" else None, groups=2)


def _check_normalised(kind, x, y):
    """Assert that y has zero mean over the dimensions the norm ``kind`` pools."""
    n, c = x.shape[:2]
    spatial = tuple(range(2, x.dim()))
    if kind == "none":
        assert torch.equal(y, x)
        return
    if kind == "hybrid":  # pools nothing exactly at alpha = 0.5; its limits are in test_measure
        assert torch.isfinite(y).all() and not torch.equal(y, x)
        return
    if kind in ("batch", "sync_batch"):
        pooled = y.mean((0, *spatial))
    elif kind == "ghost_batch":
        pooled = y.reshape(n // 4, 4, *y.shape[1:]).mean((1, *(d + 1 for d in spatial)))
    elif kind == "layer":
        pooled = y.reshape(n, -1).mean(1)
    elif kind == "group":
        pooled = y.reshape(n, 2, -1).mean(2)
    else:  # instance
        pooled = y.mean(spatial)
    torch.testing.assert_close(pooled, torch.zeros_like(pooled), atol=1e-5, rtol=0)
    assert not torch.allclose(x.mean((0, *spatial)), torch.zeros(c), atol=1e-2)


EXPECTED_TYPES = {
    ("batch", True): nn.BatchNorm2d,
    ("batch", False): nn.BatchNorm1d,
    ("ghost_batch", True): GhostBatchNorm,
    ("ghost_batch", False): GhostBatchNorm,
    ("sync_batch", True): SyncBatchNorm,
    ("sync_batch", False): SyncBatchNorm,
    ("layer", True): nn.GroupNorm,
    ("layer", False): nn.LayerNorm,
    ("group", True): nn.GroupNorm,
    ("group", False): nn.GroupNorm,
    ("instance", True): nn.InstanceNorm2d,
    ("none", True): nn.Identity,
    ("none", False): nn.Identity,
    ("hybrid", True): HybridNorm,
    ("hybrid", False): HybridNorm,
}


@pytest.mark.parametrize(("kind", "spatial"), list(EXPECTED_TYPES))
def test_make_norm_builds_a_working_layer(kind, spatial):
    shape = SHAPES[2] if spatial else SHAPES[1]
    module = make_norm(_spec(kind), shape[1], spatial=spatial)
    assert type(module) is EXPECTED_TYPES[(kind, spatial)]
    if kind == "layer" and spatial:
        assert module.num_groups == 1
    if kind == "group":
        assert module.num_groups == 2
    if kind == "instance":
        assert module.affine
    module.train()
    x = batch(shape)
    y = module(x)
    assert y.shape == x.shape
    _check_normalised(kind, x, y)


def test_every_norm_is_covered():
    assert {kind for kind, _ in EXPECTED_TYPES} == set(NORMS)
    assert len(NORMS) == 8


def test_instance_norm_on_vector_features_raises():
    with pytest.raises(UserError, match="instance"):
        make_norm(NormSpec("instance"), 6, spatial=False)


@pytest.mark.parametrize("spatial", [True, False])
def test_group_norm_groups_must_divide_channels(spatial):
    with pytest.raises(UserError) as info:
        make_norm(NormSpec("group", groups=4), 6, spatial=spatial)
    message = str(info.value)
    assert "4" in message and "6" in message


def test_unknown_norm_kind_lists_the_known_names():
    with pytest.raises(UserError) as info:
        NormSpec("weight_norm")
    message = str(info.value)
    assert "weight_norm" in message
    for name in NORMS:
        assert name in message


@pytest.mark.parametrize("ghost", [None, 0])
def test_ghost_batch_spec_needs_a_ghost_size(ghost):
    with pytest.raises(UserError, match="ghost_batch_size"):
        NormSpec("ghost_batch", ghost_batch_size=ghost)


def test_norm_spec_needs_a_positive_group_count():
    with pytest.raises(UserError, match="norm_groups"):
        NormSpec("group", groups=0)


def test_hybrid_norm_running_mean_is_the_data_mean_under_swa_update_bn():
    """swa_utils.update_bn sets momentum None (a cumulative average); HybridNorm failed on it."""
    from torch.optim import swa_utils

    from lbt_study.train.norms import HybridNorm

    torch.manual_seed(0)
    batches = [torch.randn(8, 3) * 2 + 1 for _ in range(4)]
    norm = HybridNorm(3)
    swa_utils.update_bn(batches, norm)
    mean = torch.cat(batches).mean(dim=0)
    assert torch.allclose(norm.running_mean, mean, atol=1e-6)
    assert norm.momentum == 0.1  # put back by update_bn
