"""The shared training loop: losses, schedule, exact resume, refusal of foreign checkpoints, DDP.

A tiny conv decoder of our own learns fixed 2-frame 16x16 targets from random codes, so these
tests do not depend on the model zoo and take seconds.
"""
from __future__ import annotations

import math
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from pytorch_msssim import ssim
from torch import nn
from torch.utils.data import Dataset

from nvrloader.distributed import shutdown_distributed
from nvrloader.fit import (CHECKPOINT_NAME, FitConfig, FitOutput, epoch_batches, fit, fit_loss, lr_factor,
                           pair_loss, schedule_position, ssim_window)
from nvrloader.fit import loop

SIZE, FRAMES, CODE = 16, 2, 8


class TinyDecoder(nn.Module):
    """code [B, T, 8] -> frames [B, T, 3, 16, 16] in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(CODE, 16 * 4 * 4)
        self.up = nn.Sequential(nn.Conv2d(16, 8 * 4, 3, padding=1), nn.PixelShuffle(2), nn.GELU(),
                                nn.Conv2d(8, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, batch: dict) -> torch.Tensor:
        code = batch["code"]
        b, t = code.shape[:2]
        x = self.stem(code.flatten(0, 1)).view(b * t, 16, 4, 4)
        return torch.sigmoid(self.up(x)).view(b, t, 3, SIZE, SIZE)


class TinyClips(Dataset):
    """n fixed items: a random code per frame and a smooth random target frame."""

    def __init__(self, n: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.codes = torch.randn(n, FRAMES, CODE, generator=g)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
        freq = torch.rand(n, FRAMES, 3, 2, generator=g) * 6
        phase = torch.rand(n, FRAMES, 3, 1, 1, generator=g) * 6
        self.targets = 0.5 + 0.4 * torch.sin(freq[..., 0, None, None] * yy + freq[..., 1, None, None] * xx + phase)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> dict:
        return {"code": self.codes[i], "target": self.targets[i]}


def forward_fn(model: nn.Module, batch: dict) -> FitOutput:
    return FitOutput(pred=model(batch), target=batch["target"])


class CountingClips(TinyClips):
    """TinyClips that counts the items it loads."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def __getitem__(self, i: int) -> dict:
        self.loads += 1
        return super().__getitem__(i)


class Interrupting:
    """forward_fn that is interrupted (KeyboardInterrupt or a real SIGTERM) on call number `at`."""

    def __init__(self, at: int, how: str) -> None:
        self.at, self.how, self.calls = at, how, 0

    def __call__(self, model: nn.Module, batch: dict) -> FitOutput:
        self.calls += 1
        if self.calls == self.at:
            if self.how == "keyboard":
                raise KeyboardInterrupt("injected")
            os.kill(os.getpid(), signal.SIGTERM)         # fit's handler turns it into KeyboardInterrupt
        return forward_fn(model, batch)


def make_model(seed: int = 1) -> TinyDecoder:
    torch.manual_seed(seed)
    return TinyDecoder()


def config(**kw) -> FitConfig:
    base = dict(epochs=3, batch_size=3, lr=1e-2, amp=False, progress=False)
    return FitConfig(**(base | kw))


def run(cfg: FitConfig, forward=forward_fn, seed: int = 1, fingerprint: dict | None = None, data=None):
    return fit(make_model(seed), data or TinyClips(), forward, cfg, torch.device("cpu"),
               fingerprint if fingerprint is not None else {"dataset": "tiny", "model": {"fc_dim": 16}})


@pytest.fixture(autouse=True)
def one_thread():
    """Shared CPU: one thread, and the same thread count for runs compared bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def psnr_of(model: nn.Module, data: TinyClips) -> float:
    with torch.no_grad():
        pred = model({"code": data.codes})
    mse = (pred - data.targets).pow(2).flatten(2).mean(-1)
    return float((-10 * torch.log10(mse)).mean())


# ----------------------------------------------------------------------------- loss and schedule

def test_schedule_warms_up_linearly_then_follows_a_cosine_to_zero():
    total = 100                        # 20 warm-up steps
    assert lr_factor(0, total, 0.2) == pytest.approx(1 / 20)
    assert lr_factor(9, total, 0.2) == pytest.approx(10 / 20)
    assert lr_factor(19, total, 0.2) == pytest.approx(1.0)
    assert lr_factor(20, total, 0.2) == pytest.approx(1.0)
    assert lr_factor(60, total, 0.2) == pytest.approx(0.5)          # half-way through the cosine
    assert lr_factor(99, total, 0.2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 79 / 80)))
    assert lr_factor(100, total, 0.2) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, 10, 0.0) == 1.0                              # no warm-up


def test_warm_up_ramps_linearly_from_warmup_start():
    total = 100                        # 20 warm-up steps; each step reads the ramp at its end
    assert lr_factor(0, total, 0.2, 0.1) == pytest.approx(0.1 + 0.9 / 20)
    assert lr_factor(9, total, 0.2, 0.1) == pytest.approx(0.1 + 0.9 * 10 / 20)
    assert lr_factor(19, total, 0.2, 0.1) == pytest.approx(1.0)
    assert lr_factor(60, total, 0.2, 0.1) == pytest.approx(0.5)      # the cosine is not affected
    assert lr_factor(0, total, 0.2, 1.0) == 1.0                       # start 1: no warm-up at all
    with pytest.raises(ValueError, match="warmup_start"):
        FitConfig(warmup_start=1.5)


def test_fit_warms_up_from_warmup_start():
    cfg = config(epochs=10, batch_size=8, warmup=0.5, warmup_start=0.1)  # one step an epoch, 5 warm-up steps
    factors = [h["lr"] / cfg.lr for h in run(cfg).history]
    assert factors[:5] == pytest.approx([0.1 + 0.9 * k / 5 for k in range(1, 6)])
    assert factors[5] == pytest.approx(1.0)


def test_schedule_position_follows_the_budget_when_it_runs_out_first():
    assert schedule_position(7, 1000, 3.0, None) == 7                # no budget: the step itself
    assert schedule_position(7, 1000, 3.0, 10.0) == pytest.approx(300)  # 30% of the budget spent
    assert schedule_position(700, 1000, 3.0, 10.0) == 700            # the planned steps run out first
    assert schedule_position(7, 1000, 50.0, 10.0) == 1000            # never past the end
    assert schedule_position(0, 1000, 0.0, 0.0) == 0 and schedule_position(1, 1000, 1e-3, 0.0) == 1000


def test_loss_presets_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 3, 16, 16, generator=g) * 0.8
    pred = target + 0.1
    flat_p, flat_t = pred.reshape(-1, 3, 16, 16), target.reshape(-1, 3, 16, 16)
    s = ssim(flat_p, flat_t, data_range=1.0, win_size=11)
    assert pair_loss(pred, target, "l1").item() == pytest.approx(0.1, rel=1e-5)
    assert pair_loss(pred, target, "mse").item() == pytest.approx(0.01, rel=1e-4)
    assert pair_loss(pred, target, "l1_ssim").item() == pytest.approx(0.7 * 0.1 + 0.3 * (1 - s.item()), rel=1e-5)
    assert pair_loss(pred, target, "mse_ssim").item() == pytest.approx(0.01 + 0.03 * (1 - s.item()), rel=1e-4)
    assert pair_loss(target, target, "l1_ssim").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        pair_loss(pred, target[:, :2])


def test_ssim_window_shrinks_to_an_odd_size_that_fits_small_frames():
    assert [ssim_window(*hw) for hw in [(16, 16), (11, 40), (8, 8), (6, 5), (2, 9)]] == [11, 11, 7, 5, 1]
    pred, target = torch.rand(1, 2, 3, 6, 5), torch.rand(1, 2, 3, 6, 5)
    s = ssim(pred.flatten(0, 1), target.flatten(0, 1), data_range=1.0, win_size=5)
    assert pair_loss(pred, target, "mse_ssim").item() == pytest.approx(
        ((pred - target) ** 2).mean().item() + 0.03 * (1 - s.item()), rel=1e-5)


def test_mask_keeps_padded_frames_out_of_the_loss():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(2, 4, 3, 16, 16, generator=g), torch.rand(2, 4, 3, 16, 16, generator=g)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    garbage = pred.clone()
    garbage[~mask] = torch.rand(2, 3, 16, 16, generator=g)            # padded frames: anything at all
    valid = FitOutput(pred=pred[mask][None], target=target[mask][None])
    for kind in ("l1_ssim", "mse_ssim"):
        masked = fit_loss(FitOutput(pred=garbage, target=target, mask=mask), kind)
        assert masked.item() == pytest.approx(fit_loss(valid, kind).item(), rel=1e-6)
        assert masked.item() != pytest.approx(fit_loss(FitOutput(pred=garbage, target=target), kind).item())
    with pytest.raises(ValueError, match="mask"):
        fit_loss(FitOutput(pred=pred.flatten(0, 1), target=target.flatten(0, 1), mask=mask))


def test_aux_pairs_add_the_same_loss():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.rand(1, 2, 3, 16, 16, generator=g), torch.rand(1, 2, 3, 16, 16, generator=g)
    band_p, band_t = torch.rand(1, 2, 9, 8, 8, generator=g), torch.rand(1, 2, 9, 8, 8, generator=g)
    main = fit_loss(FitOutput(pred=pred, target=target))
    both = fit_loss(FitOutput(pred=pred, target=target, aux=[(band_p, band_t)]))
    assert both.item() == pytest.approx(main.item() + pair_loss(band_p, band_t).item(), rel=1e-6)


# ----------------------------------------------------------------------------- data order

def test_epoch_batches_depend_on_seed_and_epoch_and_split_evenly_across_processes():
    single = epoch_batches(12, 4, epoch=3, seed=5)
    assert single == epoch_batches(12, 4, epoch=3, seed=5)
    assert single != epoch_batches(12, 4, epoch=4, seed=5)
    assert sorted(i for b in single for i in b) == list(range(12))
    ranks = [epoch_batches(12, 2, epoch=3, seed=5, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for j, batch in enumerate(single):                  # DDP batch j == single-process batch j
        assert sorted(ranks[0][j] + ranks[1][j]) == sorted(batch)
    uneven = [epoch_batches(7, 2, epoch=0, seed=0, rank=r, world_size=2) for r in range(2)]
    assert len(uneven[0]) == len(uneven[1])             # padded so no process waits for another
    assert set(i for r in uneven for b in r for i in b) == set(range(7))


# ----------------------------------------------------------------------------- training

def test_fit_learns_and_follows_the_schedule():
    data = TinyClips()
    model = make_model()
    before = psnr_of(model, data)
    cfg = config(epochs=40, batch_size=4, lr=2e-2)
    result = fit(model, data, forward_fn, cfg, torch.device("cpu"), {})
    spe = 2
    assert result.steps == 40 * spe and result.epochs_done == 40 and not result.stopped_early
    assert result.model is model and not model.training
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.psnr == result.history[-1]["psnr"]
    assert result.history[-1]["psnr"] > result.history[0]["psnr"] + 4
    assert psnr_of(model, data) > before + 4                          # measured independently
    for h in result.history:                                           # per-step warm-up + cosine
        assert h["lr"] == pytest.approx(cfg.lr * lr_factor(h["step"] - 1, 40 * spe, cfg.warmup))


class FakeClock:
    """Training time that advances one second per forward call: a time budget without flaky timing."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def ticking(self, inner=forward_fn):
        def forward(model: nn.Module, batch: dict) -> FitOutput:
            self.now += 1.0
            return inner(model, batch)
        return forward


def test_time_budget_runs_the_whole_schedule(monkeypatch):
    """800 planned epochs and a budget of 40 steps: warm-up and cosine both run within the budget."""
    clock = FakeClock()
    monkeypatch.setattr(loop, "monotonic", clock)
    cfg = config(epochs=1000, batch_size=4, time_budget=40.0)         # 2 steps an epoch: 2000 planned
    result = run(cfg, forward=clock.ticking())
    assert result.stopped_early and result.steps == 40 and result.planned_steps == 2000
    assert result.epochs_done == 20 and result.schedule_done == 1.0
    factors = [h["lr"] / cfg.lr for h in result.history]               # the last step of every epoch
    peak = factors.index(max(factors))
    assert max(factors) > 0.99 and 0 < peak < len(factors) // 3        # warm-up done in the first 20%
    assert factors[:peak] == sorted(factors[:peak])
    assert factors[peak:] == sorted(factors[peak:], reverse=True)      # then the cosine, to its end
    assert result.lr_factor < 0.01 and factors[-1] == pytest.approx(result.lr_factor)
    summary = result.summary()                                         # what a build report shows
    assert (summary["steps"], summary["planned_steps"], summary["stopped_early"]) == (40, 2000, True)


def test_time_budgeted_fit_resumes_exactly(monkeypatch, tmp_path):
    clock = FakeClock()
    monkeypatch.setattr(loop, "monotonic", clock)
    cfg = dict(epochs=1000, batch_size=4, time_budget=12.0)
    whole = run(config(**cfg), forward=clock.ticking())
    with pytest.raises(KeyboardInterrupt):
        run(config(**cfg, checkpoint_dir=tmp_path), forward=clock.ticking(Interrupting(7, "keyboard")))
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["global_step"] == 6 and saved["seconds"] == 6.0        # the time spent is saved
    resumed = run(config(**cfg, checkpoint_dir=tmp_path, resume=True), forward=clock.ticking(), seed=99)
    assert resumed.steps == whole.steps == 12 and resumed.stopped_early
    assert resumed.lr_factor == whole.lr_factor < 0.05
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, whole.model.state_dict()[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # set up before one_thread: same thread count as the runs it is compared with
    ckpt_dir = tmp_path_factory.mktemp("reference")
    result = run(config(checkpoint_dir=ckpt_dir))
    torch.set_num_threads(threads)
    return {"state": result.model.state_dict(), "history": result.history, "dir": ckpt_dir}


@pytest.mark.parametrize("how, at, done", [
    ("keyboard", 6, 5),   # mid-epoch: epoch 2, after 2 of its 3 steps
    ("sigterm", 4, 3),    # at an epoch boundary, through the real signal handler
    ("budget", None, 1),  # the time budget stops after the first step
])
def test_interrupted_then_resumed_fit_equals_an_uninterrupted_one_bit_for_bit(tmp_path, uninterrupted, how, at, done):
    cfg = config(checkpoint_dir=tmp_path)
    if how == "budget":
        stopped = run(config(checkpoint_dir=tmp_path, time_budget=1e-9))
        assert stopped.stopped_early and stopped.steps == 1 and stopped.epochs_done == pytest.approx(1 / 3)
    else:
        with pytest.raises(KeyboardInterrupt):
            run(cfg, forward=Interrupting(at, how))
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["global_step"] == done
    assert (saved["epoch"], saved["step_in_epoch"]) == divmod(done, 3)
    assert not list(tmp_path.glob("*.tmp"))
    data = CountingClips()
    resumed = run(config(checkpoint_dir=tmp_path, resume=True), seed=99, data=data)  # other init: weights from the file
    assert resumed.steps == 9 and not resumed.stopped_early
    steps = [b for epoch in range(3) for b in epoch_batches(8, 3, epoch, seed=0)]
    assert data.loads == sum(len(b) for b in steps[done:])            # the batches already done are not loaded
    reference = uninterrupted["state"]
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, reference[name]), name
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in uninterrupted["history"]]
    assert [h["psnr"] for h in resumed.history] == [h["psnr"] for h in uninterrupted["history"]]


def test_checkpoint_loads_with_weights_only_and_holds_the_whole_loop_state(uninterrupted):
    saved = torch.load(uninterrupted["dir"] / CHECKPOINT_NAME, weights_only=True)
    for key in ("model", "optimizer", "scheduler", "epoch", "step_in_epoch", "global_step", "seconds",
                "rng", "fingerprint", "config"):
        assert key in saved, key
    assert saved["global_step"] == 9 and saved["epoch"] == 3 and saved["step_in_epoch"] == 0
    assert set(saved["rng"]) >= {"torch", "numpy", "python"}
    assert saved["fingerprint"] == {"dataset": "tiny", "model": {"fc_dim": 16}}
    for name, value in saved["model"].items():
        assert torch.equal(value, uninterrupted["state"][name]), name


def test_resume_refuses_a_checkpoint_made_for_another_build(uninterrupted, tmp_path):
    ckpt_dir = uninterrupted["dir"]
    with pytest.raises(ValueError, match=r"different build: .*model\.fc_dim 16 != 24"):
        run(config(checkpoint_dir=ckpt_dir, resume=True), fingerprint={"dataset": "tiny", "model": {"fc_dim": 24}})
    with pytest.raises(ValueError, match=r"fit\.epochs 3 != 4"):
        run(config(epochs=4, checkpoint_dir=ckpt_dir, resume=True))
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        run(config(checkpoint_dir=tmp_path, resume=True))


def test_resume_without_a_checkpoint_starts_fresh_with_a_warning(tmp_path, uninterrupted):
    with pytest.warns(UserWarning, match="no checkpoint"):
        result = run(config(checkpoint_dir=tmp_path / "empty", resume=True))
    assert result.steps == 9 and (tmp_path / "empty" / CHECKPOINT_NAME).exists()
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, uninterrupted["state"][name]), name


def test_out_of_memory_names_a_smaller_batch_size():
    def oom(model, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(RuntimeError, match="batch size 4: try --batch-size 2"):
        run(config(batch_size=4), forward=oom)


# ----------------------------------------------------------------------------- DDP

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        model = make_model(seed=1 + rank)               # DDP must hand rank 0's weights to rank 1
        result = fit(model, TinyClips(), forward_fn, config(epochs=4, batch_size=2, checkpoint_dir=out / "ckpt"),
                     torch.device("cpu"), {"dataset": "tiny"})
        torch.save({"state": result.model.state_dict(), "history": result.history, "steps": result.steps},
                   out / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def test_ddp_with_two_gloo_processes_matches_one_process_with_the_whole_batch(tmp_path):
    single = run(config(epochs=4, batch_size=4))       # the effective batch of the DDP run
    # fork (not spawn): the workers inherit the already imported torch, which saves ~15 s of imports
    mp.start_processes(_ddp_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    assert ranks[0]["steps"] == 4 * 2                  # 8 items / (2 per process * 2 processes)
    assert ranks[0]["history"][-1]["loss"] < ranks[0]["history"][0]["loss"]
    saved = torch.load(tmp_path / "ckpt" / CHECKPOINT_NAME, weights_only=True)
    assert saved["world_size"] == 2 and saved["global_step"] == 8
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-4, atol=1e-5)
