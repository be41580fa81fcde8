"""LARS and LAMB against their published update rules, recomputed here in numpy (float64).

The references below are written from the papers' formulas, not from lbt_study.train.optim:
LARS from You, Gitman & Ginsburg 2017 (Algorithm 1), LAMB from You et al. 2020 (Algorithm 2,
bias-corrected). Gradients are set by hand, so no autograd is involved in the comparison.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lbt_study.train.optim import LAMB, LARS

TOL = 1e-6

LARS_KW = dict(lr=0.5, momentum=0.9, weight_decay=0.05, trust_coefficient=0.1, eps=1e-9)
LAMB_KW = dict(lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1)


# ---------------------------------------------------------------- numpy references


def lars_reference(w, grads, lr, momentum, weight_decay, trust_coefficient, eps, adapt=True):
    """Algorithm 1; ``adapt=False`` is the excluded 1-D case: local_lr = 1, no weight decay."""
    w = np.array(w, dtype=np.float64)
    v = np.zeros_like(w)
    for g in grads:
        if adapt:
            w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
            if w_norm > 0 and g_norm > 0:
                local_lr = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps)
            else:
                local_lr = 1.0
            d = g + weight_decay * w
        else:
            local_lr, d = 1.0, g
        v = momentum * v + lr * local_lr * d
        w = w - v
    return w


def sgd_momentum_reference(w, grads, lr, momentum):
    """Plain heavy-ball SGD in torch's form: buf = g (first), buf = m*buf + g; w -= lr*buf."""
    w = np.array(w, dtype=np.float64)
    buf = None
    for g in grads:
        buf = np.array(g) if buf is None else momentum * buf + g
        w = w - lr * buf
    return w


def lamb_reference(w, grads, lr, betas, eps, weight_decay, adapt=True):
    """Algorithm 2 with bias correction; ``adapt=False``: trust = 1, no weight decay."""
    b1, b2 = betas
    w = np.array(w, dtype=np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        r = m_hat / (np.sqrt(v_hat) + eps)
        if adapt:
            u = r + weight_decay * w
            w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(u)
            trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        else:
            u, trust = r, 1.0
        w = w - lr * trust * u
    return w


def adam_reference(w, grads, lr, betas, eps):
    """Adam (Kingma & Ba 2015, Algorithm 1 with eps outside the square root)."""
    b1, b2 = betas
    w = np.array(w, dtype=np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w


# ---------------------------------------------------------------- helpers


def tiny_problem(steps=3, seed=0):
    """A 2x3 weight, a 3-element bias and ``steps`` hand-made gradients for each."""
    rng = np.random.default_rng(seed)
    w0, b0 = rng.normal(size=(2, 3)), rng.normal(size=3)
    grads = [(rng.normal(size=(2, 3)), rng.normal(size=3)) for _ in range(steps)]
    return w0, b0, grads


def params_of(*arrays):
    return [torch.nn.Parameter(torch.tensor(a, dtype=torch.float64)) for a in arrays]


def run(opt, params, grads):
    """Set each parameter's gradient by hand and step once per entry of ``grads``."""
    for per_param in grads:
        for p, g in zip(params, per_param, strict=True):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return [p.detach().numpy().copy() for p in params]


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL)


def moved(after, before):
    """The update is big enough that a tolerance of 1e-6 tells right from wrong."""
    assert np.abs(after - before).max() > 1e-3


# ---------------------------------------------------------------- LARS


@pytest.mark.parametrize("steps", [1, 3])
def test_lars_matches_algorithm_1(steps):
    w0, b0, grads = tiny_problem(steps)
    params = params_of(w0, b0)
    w, b = run(LARS(params, **LARS_KW), params, grads)

    close(w, lars_reference(w0, [g for g, _ in grads], **LARS_KW))
    moved(w, w0)
    # Excluded bias: no adaptation, no weight decay, i.e. plain momentum SGD.
    close(b, lars_reference(b0, [g for _, g in grads], **LARS_KW, adapt=False))
    close(b, sgd_momentum_reference(b0, [g for _, g in grads], LARS_KW["lr"], 0.9))
    moved(b, b0)


def test_lars_exclude_1d_false_adapts_the_bias_too():
    w0, b0, grads = tiny_problem()
    params = params_of(w0, b0)
    _, b = run(LARS(params, **LARS_KW, exclude_1d=False), params, grads)

    bias_grads = [g for _, g in grads]
    close(b, lars_reference(b0, bias_grads, **LARS_KW, adapt=True))
    sgd = sgd_momentum_reference(b0, bias_grads, LARS_KW["lr"], 0.9)
    assert np.abs(b - sgd).max() > 1e-3


def test_lars_zero_weight_uses_local_lr_one():
    g = np.arange(1.0, 7.0).reshape(2, 3)
    (w,) = params_of(np.zeros((2, 3)))
    (after,) = run(LARS([w], **LARS_KW), [w], [(g,)])
    close(after, -LARS_KW["lr"] * g)  # v = lr * 1 * (g + wd * 0)


def test_lars_zero_gradient_uses_local_lr_one():
    w0 = np.arange(1.0, 7.0).reshape(2, 3)
    (w,) = params_of(w0)
    (after,) = run(LARS([w], **LARS_KW), [w], [(np.zeros((2, 3)),)])
    # local_lr = 1, so only weight decay acts: v = lr * wd * w.
    close(after, w0 - LARS_KW["lr"] * LARS_KW["weight_decay"] * w0)


def test_lars_trust_coefficient_changes_the_update():
    """Negative control: the comparison above would notice a wrong trust coefficient."""
    w0, b0, grads = tiny_problem()
    weight_grads = [g for g, _ in grads]
    (w_a,) = params_of(w0)
    (a,) = run(LARS([w_a], **LARS_KW), [w_a], [(g,) for g in weight_grads])
    other = {**LARS_KW, "trust_coefficient": 2 * LARS_KW["trust_coefficient"]}
    (w_b,) = params_of(w0)
    (b,) = run(LARS([w_b], **other), [w_b], [(g,) for g in weight_grads])

    assert np.abs(a - b).max() > 1e-3
    assert not np.allclose(a, lars_reference(w0, weight_grads, **other), rtol=0, atol=TOL)
    close(b, lars_reference(w0, weight_grads, **other))


def test_lars_param_groups_use_their_own_options():
    w0, b0, grads = tiny_problem()
    w, b = params_of(w0, b0)
    opt = LARS(
        [{"params": [w]}, {"params": [b], "lr": 0.2, "momentum": 0.5, "exclude_1d": False}],
        **LARS_KW,
    )
    w_after, b_after = run(opt, [w, b], grads)
    close(w_after, lars_reference(w0, [g for g, _ in grads], **LARS_KW))
    bias_kw = {**LARS_KW, "lr": 0.2, "momentum": 0.5}
    close(b_after, lars_reference(b0, [g for _, g in grads], **bias_kw, adapt=True))


# ---------------------------------------------------------------- LAMB


@pytest.mark.parametrize("steps", [1, 3])
def test_lamb_matches_algorithm_2(steps):
    w0, b0, grads = tiny_problem(steps)
    params = params_of(w0, b0)
    w, b = run(LAMB(params, **LAMB_KW), params, grads)

    close(w, lamb_reference(w0, [g for g, _ in grads], **LAMB_KW))
    moved(w, w0)
    # Excluded bias: trust 1 and no weight decay, i.e. Adam.
    bias_grads = [g for _, g in grads]
    close(b, lamb_reference(b0, bias_grads, **LAMB_KW, adapt=False))
    close(b, adam_reference(b0, bias_grads, LAMB_KW["lr"], LAMB_KW["betas"], LAMB_KW["eps"]))
    moved(b, b0)


def test_lamb_excluded_bias_equals_torch_adam():
    """A second, independent check of the excluded case: torch's own Adam."""
    _, b0, grads = tiny_problem()
    (b_lamb,) = params_of(b0)
    (b_adam,) = params_of(b0)
    kw = {k: LAMB_KW[k] for k in ("lr", "betas", "eps")}
    (lamb_after,) = run(LAMB([b_lamb], **LAMB_KW), [b_lamb], [(g,) for _, g in grads])
    (adam_after,) = run(torch.optim.Adam([b_adam], **kw), [b_adam], [(g,) for _, g in grads])
    close(lamb_after, adam_after)


def test_lamb_exclude_1d_false_adapts_the_bias_too():
    w0, b0, grads = tiny_problem()
    params = params_of(w0, b0)
    _, b = run(LAMB(params, **LAMB_KW, exclude_1d=False), params, grads)

    bias_grads = [g for _, g in grads]
    close(b, lamb_reference(b0, bias_grads, **LAMB_KW, adapt=True))
    assert np.abs(b - lamb_reference(b0, bias_grads, **LAMB_KW, adapt=False)).max() > 1e-3


def test_lamb_zero_weight_uses_trust_one():
    g = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])
    (w,) = params_of(np.zeros((2, 3)))
    (after,) = run(LAMB([w], **LAMB_KW), [w], [(g,)])
    # Step 1: m_hat = g, v_hat = g^2, so r = g / (|g| + eps); u = r + wd * 0.
    close(after, -LAMB_KW["lr"] * g / (np.abs(g) + LAMB_KW["eps"]))


def test_lamb_zero_update_uses_trust_one_and_stays_finite():
    w0 = np.arange(1.0, 7.0).reshape(2, 3)
    (w,) = params_of(w0)
    kw = {**LAMB_KW, "weight_decay": 0.0}
    (after,) = run(LAMB([w], **kw), [w], [(np.zeros((2, 3)),)])
    assert np.isfinite(after).all()  # ||w|| / ||u|| with ||u|| = 0 would be inf * 0 = nan
    close(after, w0)


def test_lamb_param_groups_use_their_own_options():
    w0, b0, grads = tiny_problem()
    w, b = params_of(w0, b0)
    opt = LAMB([{"params": [w], "betas": (0.5, 0.9)}, {"params": [b], "lr": 0.3}], **LAMB_KW)
    w_after, b_after = run(opt, [w, b], grads)
    close(w_after, lamb_reference(w0, [g for g, _ in grads], **{**LAMB_KW, "betas": (0.5, 0.9)}))
    bias_kw = {**LAMB_KW, "lr": 0.3}
    close(b_after, lamb_reference(b0, [g for _, g in grads], **bias_kw, adapt=False))


# ---------------------------------------------------------------- both


@pytest.mark.parametrize(("cls", "kwargs"), [(LARS, LARS_KW), (LAMB, LAMB_KW)])
def test_state_dict_round_trip_continues_identically(cls, kwargs):
    w0, b0, grads = tiny_problem(steps=5)
    original = params_of(w0, b0)
    opt = cls(original, **kwargs)
    run(opt, original, grads[:2])
    saved = copy.deepcopy(opt.state_dict())

    # Built with a different lr: load_state_dict must bring back the groups' options too.
    restored = params_of(*(p.detach().numpy() for p in original))
    opt_restored = cls(restored, **{**kwargs, "lr": 3 * kwargs["lr"]})
    opt_restored.load_state_dict(saved)
    fresh = params_of(*(p.detach().numpy() for p in original))
    opt_fresh = cls(fresh, **kwargs)

    expected = run(opt, original, grads[2:])
    for a, b in zip(run(opt_restored, restored, grads[2:]), expected, strict=True):
        np.testing.assert_array_equal(a, b)
    # Control: without the saved state the continuation differs, so the check above can fail.
    fresh_after = run(opt_fresh, fresh, grads[2:])
    assert max(np.abs(a - b).max() for a, b in zip(fresh_after, expected, strict=True)) > 1e-3


@pytest.mark.parametrize(("cls", "kwargs"), [(LARS, LARS_KW), (LAMB, LAMB_KW)])
def test_step_with_closure_returns_loss_and_uses_its_gradients(cls, kwargs):
    w0, _, _ = tiny_problem()
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def loss_of(w):
        return ((w @ x) ** 2).sum()

    (w_closure,) = params_of(w0)
    opt = cls([w_closure], **kwargs)

    def closure():
        opt.zero_grad()
        loss = loss_of(w_closure)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and math.isclose(loss.item(), loss_of(torch.tensor(w0)).item())

    (w_manual,) = params_of(w0)
    loss_of(w_manual).backward()
    grad = w_manual.grad.numpy().copy()
    (manual_after,) = run(cls([w_manual], **kwargs), [w_manual], [(grad,)])
    np.testing.assert_array_equal(w_closure.detach().numpy(), manual_after)
    assert np.abs(manual_after - w0).max() > 1e-3


@pytest.mark.parametrize("cls", [LARS, LAMB])
def test_parameter_without_gradient_is_left_alone(cls):
    w0, b0, grads = tiny_problem(steps=1)
    w, b = params_of(w0, b0)
    opt = cls([w, b], lr=0.1)
    w.grad = torch.tensor(grads[0][0])
    opt.step()
    np.testing.assert_array_equal(b.detach().numpy(), b0)
    assert b not in opt.state and w in opt.state


@pytest.mark.parametrize(
    ("cls", "kwargs", "name", "value"),
    [
        (LARS, dict(lr=-1.0), "lr", "-1.0"),
        (LARS, dict(lr=0.0), "lr", "0.0"),
        (LARS, dict(lr=float("nan")), "lr", "nan"),
        (LARS, dict(lr=0.1, momentum=1.0), "momentum", "1.0"),
        (LARS, dict(lr=0.1, momentum=-0.1), "momentum", "-0.1"),
        (LARS, dict(lr=0.1, weight_decay=-0.5), "weight_decay", "-0.5"),
        (LARS, dict(lr=0.1, trust_coefficient=0.0), "trust_coefficient", "0.0"),
        (LARS, dict(lr=0.1, eps=-1e-9), "eps", "-1e-09"),
        (LAMB, dict(lr=-1.0), "lr", "-1.0"),
        (LAMB, dict(lr=0.1, betas=(0.9, 1.0)), "betas[1]", "1.0"),
        (LAMB, dict(lr=0.1, betas=(-0.1, 0.999)), "betas[0]", "-0.1"),
        (LAMB, dict(lr=0.1, betas=(0.9,)), "betas", "(0.9,)"),
        (LAMB, dict(lr=0.1, eps=-1.0), "eps", "-1.0"),
        (LAMB, dict(lr=0.1, weight_decay=-0.01), "weight_decay", "-0.01"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_value(cls, kwargs, name, value):
    (w,) = params_of(np.ones((2, 3)))
    with pytest.raises(ValueError) as info:
        cls([w], **kwargs)
    message = str(info.value)
    assert message.startswith(name + " ") and message.endswith(f"got {value}")


@pytest.mark.parametrize("cls", [LARS, LAMB])
def test_invalid_group_option_is_refused_and_the_group_not_added(cls):
    w, b = params_of(np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match=r"lr must be > 0, got -2\.0"):
        cls([{"params": [w], "lr": -2.0}], lr=0.1)

    opt = cls([w], lr=0.1)
    with pytest.raises(ValueError, match=r"weight_decay must be >= 0, got -1\.0"):
        opt.add_param_group({"params": [b], "weight_decay": -1.0})
    assert len(opt.param_groups) == 1


# ---------------------------------------------------------------- registries

def test_each_registered_optimizer_builds_its_own_class():
    from lbt_study.train.optim import OPTIMIZERS, make_optimizer

    expected = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "lars": LARS, "lamb": LAMB}
    assert set(OPTIMIZERS) == set(expected)
    for name, cls in expected.items():
        p = torch.nn.Parameter(torch.zeros(2))
        opt = make_optimizer(name, [p], lr=0.1, momentum=0.9, weight_decay=0.0,
                             trust_coefficient=0.001)
        assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.1


def test_unknown_registry_names_list_the_known_ones():
    from lbt_study.errors import UserError
    from lbt_study.train.norms import NormSpec, make_norm
    from lbt_study.train.optim import make_optimizer, make_scheduler

    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(UserError, match="unknown optimizer 'adam'; known: adamw, lamb, lars, sgd"):
        make_optimizer("adam", [p], lr=0.1)
    opt = torch.optim.SGD([p], lr=0.1)
    with pytest.raises(UserError, match="unknown schedule 'step'; known: constant, cosine"):
        make_scheduler(opt, 10, 0, "step")
    spec = object.__new__(NormSpec)  # past NormSpec's own check, as a bypass would be
    object.__setattr__(spec, "kind", "bn")
    with pytest.raises(UserError, match="unknown normalization 'bn'; known: batch, ghost_batch"):
        make_norm(spec, 4, spatial=False)
