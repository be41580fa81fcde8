"""The GPU path of the training loop: how "auto" resolves (on CPU, and for a CUDA device
without needing one), what the explicit settings do on CPU, and checkpoints under them.
Tests that need CUDA are marked ``gpu`` (not in the default run) and skip without a GPU."""

import io
import math

import pytest
import torch
from torch import nn

from lbt_study.train import evaluate, run_training
from lbt_study.train.batching import BatchSchedule
from lbt_study.train.config import TrainConfig
from lbt_study.train.device import PLAIN, GpuSettings, gather, gpu_settings
from lbt_study.train.measure import PEAK_FLOPS
from lbt_study.train.norms import NormSpec
from lbt_study.train.workload import get_workload

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
CNN = {"model": "cnn", "batch_size": 64, "lr": 0.05, "epochs": 1, "eval_every_examples": 700,
       "norm": "batch", "seed": 2}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def digits_model(name="cnn"):
    return get_workload("digits").make_model(name, NormSpec("batch"))


def cfg(**overrides):
    return TrainConfig(**{**CNN, **overrides})


# ---------------------------------------------------------------- resolving "auto"

def test_auto_is_all_off_on_cpu():
    assert gpu_settings(cfg(), CPU, digits_model(), nbytes=10**6) == PLAIN
    assert gpu_settings(cfg(model="mlp"), CPU, digits_model("mlp")) == PLAIN


def test_auto_on_a_cuda_device_for_a_conv_model_with_room():
    got = gpu_settings(cfg(), CUDA, digits_model(), nbytes=100, free_bytes=1000)
    assert got == GpuSettings(bf16=True, channels_last=True, compile=False,
                              data_on_device=True, pin_memory=False, tf32=True)


def test_auto_on_cuda_without_convolutions_or_room_or_float32():
    mlp = gpu_settings(cfg(model="mlp"), CUDA, digits_model("mlp"), nbytes=250, free_bytes=1000)
    assert not mlp.channels_last  # no Conv2d layers
    assert not mlp.data_on_device and mlp.pin_memory  # 25% of free memory is not "under 25%"
    f64 = gpu_settings(cfg(dtype="float64"), CUDA, digits_model(), nbytes=1, free_bytes=1000)
    assert not f64.bf16  # float64 is asked for exactness: no autocast unless bf16 is explicit


def test_explicit_settings_override_auto_on_cuda():
    got = gpu_settings(cfg(precision="fp32", channels_last="off", data_on_device="off",
                           compile=True, tf32=False), CUDA, digits_model(), nbytes=1,
                       free_bytes=10**9)
    assert got == GpuSettings(bf16=False, channels_last=False, compile=True,
                              data_on_device=False, pin_memory=True, tf32=False)
    forced = gpu_settings(cfg(data_on_device="on"), CUDA, digits_model(), nbytes=10**9,
                          free_bytes=1)
    assert forced.data_on_device and not forced.pin_memory


def test_explicit_settings_on_cpu():
    got = gpu_settings(cfg(precision="bf16", channels_last="on", data_on_device="on",
                           compile=True), CPU, digits_model())
    assert got == GpuSettings(bf16=True, channels_last=True, compile=True,
                              data_on_device=False, pin_memory=False, tf32=False)


def test_bf16_needs_float32_weights():
    with pytest.raises(ValueError, match="precision 'bf16' needs dtype float32"):
        cfg(precision="bf16", dtype="float64")


def test_mfu_peak_is_looked_up_for_the_precision_that_runs():
    on = GpuSettings(True, False, False, False, False, True)
    off = GpuSettings(False, False, False, False, False, True)
    no_tf32 = GpuSettings(False, False, False, False, False, False)
    assert on.peak_dtype("float32") == "bfloat16" and ("H100", "bfloat16") in PEAK_FLOPS
    assert off.peak_dtype("float32") == "float32"  # PEAK_FLOPS lists TF32 peaks as float32
    assert no_tf32.peak_dtype("float32") not in {kind for _, kind in PEAK_FLOPS}  # MFU NaN
    assert off.peak_dtype("float64") == "float64"


# ---------------------------------------------------------------- CPU behaviour unchanged

def test_plain_settings_change_nothing():
    x = torch.randn(10, 1, 8, 8)
    idx = torch.tensor([3, 1, 4])
    assert torch.equal(gather(x, idx, CPU), x[idx])
    assert PLAIN.prepare(x) is x
    out = torch.randn(3, 5)
    assert PLAIN.output(out) is out
    model = digits_model().eval()
    y = torch.randint(10, (10,))
    wl = get_workload("digits")
    assert evaluate(model, x, y, wl, CPU) == evaluate(model, x, y, wl, CPU, settings=PLAIN)


def test_channels_last_on_cpu_trains_the_same_model():
    """Only the memory layout changes: float64 makes the comparison tight."""
    ref, rows = [], []
    run_training(cfg(dtype="float64"), ref.append)
    out = run_training(cfg(dtype="float64", channels_last="on"), rows.append)
    conv = [m for m in out.model.modules() if isinstance(m, nn.Conv2d)][-1]  # 16 in-channels
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert [r["step"] for r in rows] == [r["step"] for r in ref]
    assert rows[-1]["val_loss"] == pytest.approx(ref[-1]["val_loss"], rel=1e-9)


def test_bf16_on_cpu_runs_under_autocast():
    seen = []
    model = digits_model()
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    settings = gpu_settings(cfg(precision="bf16"), CPU, model)
    with settings.autocast(CPU):
        logits = settings.output(model(torch.randn(4, 1, 8, 8)))
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32

    ref, rows = [], []
    run_training(cfg(), ref.append)
    run_training(cfg(precision="bf16"), rows.append)
    assert rows[-1]["status"] == "ok" and math.isfinite(rows[-1]["val_loss"])
    assert rows[-1]["val_loss"] != ref[-1]["val_loss"]  # computed in bf16: not bit-equal
    assert rows[-1]["val_loss"] == pytest.approx(ref[-1]["val_loss"], rel=0.1)


def _resumed_equals_uninterrupted(config, device=CPU, rel=0.0):
    """Resume from the second checkpoint: the last evaluation is as uninterrupted (exactly on
    CPU; within ``rel`` on a GPU, whose convolution kernels need not be deterministic)."""
    rows, saved = [], {}
    config = config.model_copy(update={"checkpoint_every_s": 0.0})  # one at every evaluation

    def checkpoint(row, state):
        buf = io.BytesIO()
        torch.save(state, buf)  # as the runner does; loaded back with weights_only
        saved[row["step"]] = buf.getvalue()
        rows.append(row)

    out = run_training(config, checkpoint=checkpoint, device=device)
    step = sorted(saved)[1]
    resumed = []
    state = torch.load(io.BytesIO(saved[step]), weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in state["model"])  # plain module's keys
    run_training(config, resumed.append, resume=state, device=device)
    assert resumed[0]["step"] > step
    assert resumed[-1]["val_loss"] == pytest.approx(rows[-1]["val_loss"], rel=rel, abs=0)
    return out


def test_checkpoint_and_resume_under_channels_last():
    _resumed_equals_uninterrupted(cfg(channels_last="on", epochs=2))


@pytest.mark.slow
def test_compile_on_cpu_trains_and_resumes():
    """torch.compile on CPU (inductor needs a C++ compiler): slow, so not in the default run."""
    out = _resumed_equals_uninterrupted(cfg(compile=True, model="mlp"))
    assert not isinstance(out.model, torch._dynamo.eval_frame.OptimizedModule)


def test_data_on_device_and_tf32_are_no_ops_on_cpu():
    ref, rows = [], []
    run_training(cfg(model="mlp"), ref.append)
    run_training(cfg(model="mlp", data_on_device="on", tf32=False), rows.append)
    assert rows[-1]["val_loss"] == ref[-1]["val_loss"]


# ---------------------------------------------------------------- on a GPU

@pytest.mark.gpu
@needs_cuda
def test_auto_on_a_real_gpu_uses_bf16_channels_last_and_device_data():
    settings = gpu_settings(cfg(), CUDA, digits_model().to(CUDA), nbytes=10**6)
    assert settings.bf16 and settings.channels_last and settings.data_on_device
    rows = []
    out = run_training(cfg(), rows.append, device=CUDA)
    conv = [m for m in out.model.modules() if isinstance(m, nn.Conv2d)][-1]
    assert conv.weight.is_cuda and conv.weight.dtype == torch.float32  # weights stay fp32
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert rows[-1]["status"] == "ok" and rows[-1]["val_accuracy"] > 0.8
    assert torch.backends.cuda.matmul.allow_tf32
    name = torch.cuda.get_device_name()
    if any(chip in name for chip, _ in PEAK_FLOPS):
        assert 0 < rows[-1]["mfu"] < 1


@pytest.mark.gpu
@needs_cuda
def test_pinned_host_data_gives_the_same_run_as_device_data():
    """Same batches either way: float64 matmuls (no convolutions) make the runs agree."""
    on, off = [], []
    same = {"model": "mlp", "dtype": "float64"}
    run_training(cfg(**same, data_on_device="on"), on.append, device=CUDA)
    run_training(cfg(**same, data_on_device="off"), off.append, device=CUDA)
    assert off[-1]["val_loss"] == pytest.approx(on[-1]["val_loss"], rel=1e-7)
    x = torch.arange(12.0).view(6, 2).pin_memory()
    got = gather(x, torch.tensor([5, 0]), CUDA)
    assert got.is_cuda and torch.equal(got.cpu(), x[[5, 0]])


@pytest.mark.gpu
@needs_cuda
def test_bf16_autocast_reaches_the_convolutions_on_gpu():
    seen = []
    model = digits_model().to(CUDA)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    settings = gpu_settings(cfg(), CUDA, model, nbytes=1)
    with settings.autocast(CUDA):
        model(torch.randn(4, 1, 8, 8, device=CUDA))
    assert seen == [torch.bfloat16]


@pytest.mark.gpu
@needs_cuda
def test_compile_and_resume_on_gpu():
    _resumed_equals_uninterrupted(cfg(compile=True, epochs=2), device=CUDA, rel=1e-3)



# ---------------------------------------------------------------- scripts/gpu_check.py

def _gpu_check():
    """scripts/gpu_check.py as a module (registered first: its dataclass needs that)."""
    import importlib.util
    import sys
    from pathlib import Path

    if "gpu_check" in sys.modules:
        return sys.modules["gpu_check"]
    path = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_check_without_a_gpu_fails_with_one_line(monkeypatch, capsys):
    gpu_check = _gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpu_check: no CUDA GPU available")
    args = gpu_check.parse_args(["--batch-sizes", "512, 2048", "--steps", "5"])
    assert args.batch_sizes == [512, 2048] and args.steps == 5 and args.cifar_dir is None
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--batch-sizes", "512,x"])


def test_gpu_check_loop_config_times_the_second_half():
    gpu_check = _gpu_check()
    args = gpu_check.parse_args(["--steps", "20"])
    for b, n in ((512, 50_000), (2048, 50_000), (16, 256)):
        config = gpu_check.loop_config(args, b, n)
        assert BatchSchedule.build(config, n).total_steps == 40
        assert config.eval_every_examples == 20 * b


@pytest.mark.ray
def test_gpu_check_runs_end_to_end_on_cpu_at_toy_sizes(tmp_path, monkeypatch):
    gpu_check = _gpu_check()
    for name in ("LBT_CIFAR10_DIR", "LBT_CIFAR10_LIMIT", "PYTHONPATH"):  # main sets them
        monkeypatch.setenv(name, "")
    out = tmp_path / "snippet.md"
    code = gpu_check.main(["--smoke-cpu", "--model", "resnet_tiny", "--batch-sizes", "16,32",
                           "--steps", "2", "--limit", "128", "--study-epochs", "0.25",
                           "--phases", "agreement,throughput,ray,oom", "--out", str(out),
                           "--run-dir", str(tmp_path / "run")])
    assert code == 0
    text = out.read_text()
    assert text.startswith("### CPU (smoke test)") and "| 16 | 16 |" in text
    assert text.count("| ok |") == 3  # the two trials through Ray, the one of the oom study
    assert "| oversized | 64 | oom | out of memory at every micro-batch for B=64" in text
    assert "| resnet_tiny | 64 | ok |" in text  # trained by accumulation
