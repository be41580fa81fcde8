"""The real workloads on CPU: CIFAR-10 (from small pickles in the official format, written
here) and the character-level Transformer LM on the standard library's source."""

import pickle
import sysconfig
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from lbt_study.errors import UserError
from lbt_study.study.preflight import check_study
from lbt_study.study.spec import load_spec
from lbt_study.train import run_training
from lbt_study.train.config import TrainConfig, parse_config
from lbt_study.train.norms import NormSpec
from lbt_study.train.workload import get_workload
from lbt_study.train.workloads import charlm, cifar

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
PER_BATCH = 64
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


# ---------------------------------------------------------------------------- CIFAR-10 fixtures


def write_cifar_batch(path: Path, index: int, label: str, numpy1: bool = False) -> dict:
    """One file as the official ones are: a pickled dict with bytes keys, uint8 data (N, 3072)
    of R, G, B planes, row-major; ``numpy1`` names numpy.core as numpy 1.x pickles do."""
    rng = np.random.default_rng(index)
    batch = {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in (np.arange(PER_BATCH) + index) % 10],
        b"data": rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8),
        b"filenames": [f"img_{index}_{i}.png".encode() for i in range(PER_BATCH)],
    }
    raw = pickle.dumps(batch, protocol=2)
    if numpy1:
        assert raw.count(b"numpy._core.multiarray") == 1
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)
    return batch


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    """Six small batch files in a tmp dir named by LBT_CIFAR10_DIR; returns (dir, batches)."""
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batches = [write_cifar_batch(d / f"data_batch_{i}", i, f"training batch {i} of 5",
                                 numpy1=i == 1) for i in range(1, 6)]
    batches.append(write_cifar_batch(d / "test_batch", 6, "testing batch 1 of 1"))
    monkeypatch.setenv("LBT_CIFAR10_DIR", str(d))
    monkeypatch.delenv("LBT_CIFAR10_LIMIT", raising=False)
    return d, batches


def normalised(data: np.ndarray) -> torch.Tensor:
    """The expected images, computed pixel by pixel from the documented layout."""
    x = torch.tensor(data, dtype=torch.float32).reshape(-1, 3, 32, 32) / 255.0
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------------------ CIFAR-10 data


def test_cifar_loads_train_batches_and_validates_on_test_batch(cifar_dir):
    _, batches = cifar_dir
    data = get_workload("cifar").load_data(0)
    assert data.x_train.shape == (5 * PER_BATCH, 3, 32, 32) and data.x_train.dtype == torch.float32
    assert data.x_val.shape == (PER_BATCH, 3, 32, 32)
    train_labels = sum((b[b"labels"] for b in batches[:5]), [])
    assert data.y_train.tolist() == train_labels and data.y_val.tolist() == batches[5][b"labels"]
    raw = np.concatenate([b[b"data"] for b in batches[:5]])
    torch.testing.assert_close(data.x_train, normalised(raw))
    torch.testing.assert_close(data.x_val, normalised(batches[5][b"data"]))
    # layout: pixel (row 3, column 5) of the green plane of image 7 of the second batch
    value = batches[1][b"data"][7, 1024 + 3 * 32 + 5] / 255.0
    assert data.x_train[PER_BATCH + 7, 1, 3, 5].item() == pytest.approx(
        (value - CIFAR_MEAN[1]) / CIFAR_STD[1], abs=1e-5)
    # scaling: undoing the normalization gives [0, 1] with both ends present in random data
    pixels = data.x_train * torch.tensor(CIFAR_STD).view(1, 3, 1, 1) + torch.tensor(
        CIFAR_MEAN).view(1, 3, 1, 1)
    assert pixels.min().item() == pytest.approx(0.0, abs=1e-5)
    assert pixels.max().item() == pytest.approx(1.0, abs=1e-5)


def test_cifar_limit_keeps_the_first_examples(cifar_dir, monkeypatch):
    full = get_workload("cifar").load_data(0)
    monkeypatch.setenv("LBT_CIFAR10_LIMIT", "10")
    small = get_workload("cifar").load_data(0)
    assert len(small.x_train) == len(small.x_val) == 10
    assert torch.equal(small.x_train, full.x_train[:10])
    assert torch.equal(small.y_val, full.y_val[:10])
    monkeypatch.setenv("LBT_CIFAR10_LIMIT", "ten")
    with pytest.raises(UserError, match="LBT_CIFAR10_LIMIT must be a positive integer"):
        get_workload("cifar").load_data(0)


def test_cifar_missing_directory_or_file_is_a_user_error(tmp_path, monkeypatch, cifar_dir):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("LBT_CIFAR10_DIR", str(missing))
    with pytest.raises(UserError) as info:
        get_workload("cifar").load_data(0)
    message = str(info.value)
    assert str(missing) in message and "\n" not in message
    assert "data_batch_1" in message and "test_batch" in message and "never downloads" in message

    d, _ = cifar_dir
    (d / "data_batch_3").unlink()
    monkeypatch.setenv("LBT_CIFAR10_DIR", str(d))
    with pytest.raises(UserError, match=r"lacks data_batch_3;.*cifar-10-python\.tar\.gz"):
        get_workload("cifar").load_data(0)

    monkeypatch.delenv("LBT_CIFAR10_DIR")
    with pytest.raises(UserError, match="set LBT_CIFAR10_DIR"):
        get_workload("cifar").load_data(0)


class _Boom:
    def __reduce__(self):
        return (print, ("code ran",))


def test_cifar_pickle_with_foreign_objects_is_refused(cifar_dir, capsys):
    d, _ = cifar_dir
    (d / "test_batch").write_bytes(pickle.dumps({b"data": _Boom(), b"labels": []}, protocol=2))
    with pytest.raises(UserError, match=r"test_batch is not a CIFAR-10 python batch file"):
        get_workload("cifar").load_data(0)
    assert "code ran" not in capsys.readouterr().out


# ------------------------------------------------------------------------ CIFAR augmentation


def asymmetric_images(n: int = 3) -> torch.Tensor:
    return torch.arange(n * 3 * 32 * 32, dtype=torch.float32).reshape(n, 3, 32, 32) + 1.0


def offsets(n: int, dy: int, dx: int, flip: bool) -> tuple[torch.Tensor, ...]:
    return (torch.full((n,), dy), torch.full((n,), dx), torch.full((n,), flip))


def test_crop_flip_centre_is_identity_and_flip_is_torch_flip():
    x = asymmetric_images()
    assert torch.equal(cifar.crop_flip(x, *offsets(3, 4, 4, False)), x)
    assert torch.equal(cifar.crop_flip(x, *offsets(3, 4, 4, True)), torch.flip(x, dims=[3]))


def test_crop_is_the_shifted_window_with_zeros_where_padded():
    x = asymmetric_images()
    # offset (0, 0): the window starts 4 pixels above and left of the image
    expected = torch.zeros_like(x)
    expected[:, :, 4:, 4:] = x[:, :, :28, :28]
    assert torch.equal(cifar.crop_flip(x, *offsets(3, 0, 0, False)), expected)
    # offset (8, 2): output (i, j) is input (i + 4, j - 2)
    expected = torch.zeros_like(x)
    expected[:, :, :28, 2:] = x[:, :, 4:, :30]
    assert torch.equal(cifar.crop_flip(x, *offsets(3, 8, 2, False)), expected)
    # per-image offsets and flips in one call, the flip applied after the crop
    dy, dx, flip = torch.tensor([0, 8, 4]), torch.tensor([0, 2, 4]), torch.tensor([1, 0, 1]) > 0
    out = cifar.crop_flip(x, dy, dx, flip)
    for n in range(3):
        one = cifar.crop_flip(x[n : n + 1], dy[n : n + 1], dx[n : n + 1], torch.tensor([False]))
        assert torch.equal(out[n], torch.flip(one[0], dims=[2]) if flip[n] else one[0])


def test_random_augmentation_is_a_seeded_crop_flip_of_each_image():
    x = asymmetric_images(16)
    out = cifar.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, cifar.augment(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, cifar.augment(x, torch.Generator().manual_seed(1)))
    found = []
    for n in range(16):
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if torch.equal(out[n : n + 1], cifar.crop_flip(x[n : n + 1],
                                                              *offsets(1, dy, dx, f)))]
        assert len(matches) == 1
        found.append(matches[0])
    assert {f for _, _, f in found} == {False, True} and len({(a, b) for a, b, _ in found}) > 4


# ----------------------------------------------------------------------------- CIFAR models


@pytest.mark.parametrize("norm", [
    NormSpec("instance"), NormSpec("group"), NormSpec("layer"), NormSpec("batch"),
    NormSpec("ghost_batch", ghost_batch_size=4), NormSpec("sync_batch"), NormSpec("none"),
    NormSpec("hybrid"),
])
def test_resnet_tiny_takes_every_norm(norm):
    model = get_workload("cifar").make_model("resnet_tiny", norm)
    x = torch.randn(8, 3, 32, 32)
    out = model(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    out.sum().backward()
    model.eval()
    assert model(x[:3]).shape == (3, 10)


def test_resnet18_is_the_cifar_variant():
    model = get_workload("cifar").make_model(None, NormSpec("batch"))
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # CIFAR ResNet-18
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].kernel_size == (3, 3) and convs[0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_trains_end_to_end(cifar_dir):
    rows = []
    run_training(TrainConfig(workload="cifar", model="resnet_tiny", batch_size=32, lr=0.05,
                             epochs=1, norm="batch"), rows.append)
    first, last = rows[0], rows[-1]
    assert first["step"] == 0 and first["status"] == "running"
    assert last["status"] == "ok" and last["step"] == last["total_steps"] == 10
    assert last["examples_seen"] == 5 * PER_BATCH and last["train_examples"] == 5 * PER_BATCH
    for row in rows:
        assert 0.0 <= row["val_accuracy"] <= 1.0 and np.isfinite(row["val_loss"])
    assert last["objective"] == last["val_accuracy"]


# ------------------------------------------------------------------------------------ charlm


@pytest.fixture
def small_text(monkeypatch):
    monkeypatch.setenv("LBT_CHARLM_CHARS", "50000")
    return charlm.corpus(sysconfig.get_paths()["stdlib"], 50_000)


def test_charlm_text_is_the_stdlib_source_in_sorted_order(small_text):
    text, _ = small_text
    root = Path(sysconfig.get_paths()["stdlib"])
    first = sorted(p for p in root.glob("**/*.py") if not {"site-packages", "dist-packages"}
                   & set(p.relative_to(root).parts))[:50]
    expected = b"".join(p.read_bytes() for p in first)
    assert len(text) == 50_000 and (text == expected[:50_000] or expected == text[: len(expected)])


def test_charlm_windows_are_shifted_by_one_and_the_split_is_90_10(small_text):
    text, vocab = small_text
    data = get_workload("charlm").load_data(0)
    assert set(text) == set(vocab) and list(vocab) == sorted(vocab)
    assert data.x_train.shape == (45_000 // 65, 64) and data.x_val.shape == (5_000 // 65, 64)
    assert data.x_train.dtype == torch.long
    assert torch.equal(data.y_train[:, :-1], data.x_train[:, 1:])
    assert torch.equal(data.y_val[:, :-1], data.x_val[:, 1:])
    decode = bytes(vocab[i] for i in data.x_train[3].tolist())
    assert decode == text[3 * 65 : 3 * 65 + 64]
    assert vocab[data.y_train[3, -1]] == text[3 * 65 + 64]
    assert bytes(vocab[i] for i in data.x_val[0].tolist()) == text[45_000 : 45_000 + 64]
    assert int(data.x_train.max()) < len(vocab) and int(data.x_val.max()) < len(vocab)


@pytest.mark.parametrize("norm,train_mode", [("layer", True), ("none", True), ("batch", False)])
def test_charlm_is_causal(small_text, norm, train_mode):
    torch.manual_seed(0)
    model = get_workload("charlm").make_model("tiny", NormSpec(norm)).train(train_mode)
    if norm == "batch":  # give the running statistics non-trivial values first
        model.train()(torch.randint(len(small_text[1]), (8, 64)))
        model.eval()
    ids = torch.randint(len(small_text[1]), (2, 64))
    changed = ids.clone()
    changed[:, 40] = (ids[:, 40] + 1) % len(small_text[1])
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert a.shape == (2, 64, len(small_text[1]))
    torch.testing.assert_close(a[:, :40], b[:, :40], rtol=0, atol=1e-6)
    assert (a[:, 40:] - b[:, 40:]).abs().amax(dim=-1).min() > 1e-6


@pytest.mark.parametrize("norm", ["group", "instance", "ghost_batch", "sync_batch", "hybrid"])
def test_charlm_refuses_norms_that_mix_positions(small_text, norm):
    spec = NormSpec(norm, ghost_batch_size=4)
    with pytest.raises(UserError, match="supported: layer, batch, none"):
        get_workload("charlm").make_model("tiny", spec)


def test_charlm_token_accuracy_is_a_per_sequence_mean_summed():
    logits = torch.zeros(2, 4, 3)
    logits[..., 1] = 1.0  # predicts id 1 everywhere
    targets = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert charlm.token_accuracy_sum(logits, targets).item() == pytest.approx(1.0 + 0.25)
    wl = get_workload("charlm")
    assert wl.objective == "loss" and wl.objective_direction == "minimize"


def test_charlm_bad_chars_setting_is_a_user_error(monkeypatch):
    monkeypatch.setenv("LBT_CHARLM_CHARS", "100")
    with pytest.raises(UserError, match="LBT_CHARLM_CHARS must be an integer >= 650"):
        get_workload("charlm").load_data(0)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_charlm_trains_end_to_end(small_text, norm):
    rows = []
    run_training(TrainConfig(workload="charlm", model="tiny", batch_size=32, lr=1e-2,
                             optimizer="adamw", epochs=1, norm=norm), rows.append)
    first, last = rows[0], rows[-1]
    assert last["status"] == "ok" and last["step"] == last["total_steps"] == 22
    assert last["val_loss"] < first["val_loss"] - 0.3
    assert first["val_loss"] == pytest.approx(np.log(len(small_text[1])), abs=0.1)
    assert 0.0 <= last["val_accuracy"] <= 1.0 and last["objective"] == last["val_loss"]


# ----------------------------------------------------------------------------- search spaces


@pytest.mark.parametrize("name", ["cifar_resnet.py", "charlm.py"])
def test_search_space_passes_preflight(name, small_text):
    study, _ = load_spec(SPACES / name)
    check_study(study, samples=16)
    for point in study.initial_points:
        values = study.trial_values(study.space(optuna.trial.FixedTrial(point)))
        parse_config(values)
