"""The training plumbing shared by the fit loop and TSM: resume rule, checkpoint files, optimisers, AMP."""
from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest
import torch

from nvrloader.training import (OptimizerConfig, apply_gradients, autocast_dtype, differences, experiment,
                                grad_scaler, load_checkpoint, make_optimizer, runtime_field, save_checkpoint,
                                setup_runtime)


@dataclass
class Config:
    lr: float = 0.1
    steps: tuple[int, ...] = (1, 2)
    device: str = runtime_field("cpu")
    out: str | None = runtime_field(None)


def test_resume_rule_compares_every_field_not_marked_runtime():
    assert experiment(Config()) == {"lr": 0.1, "steps": [1, 2]}           # plain data: tuples are lists
    saved = {"lr": 0.1, "steps": [1, 2], "device": "cuda", "out": "elsewhere"}
    assert differences(experiment(Config(), saved), experiment(Config())) == []   # runtime fields may change
    assert differences(experiment(Config(), saved), experiment(Config(lr=0.2))) == [("lr", 0.1, 0.2)]
    older = {"lr": 0.1}                                                    # a field the old run did not have
    assert differences(experiment(Config(), older), experiment(Config())) == [("steps", "<missing>", [1, 2])]
    with pytest.raises(TypeError):
        experiment({"lr": 0.1})


def test_checkpoints_are_written_atomically_and_read_without_unpickling(tmp_path):
    path = tmp_path / "deep" / "ckpt.pt"
    save_checkpoint(path, {"w": torch.arange(3), "epoch": 2})
    assert load_checkpoint(path)["epoch"] == 2 and not list(path.parent.glob("*.tmp"))
    with pytest.raises(Exception):
        save_checkpoint(path, {"w": torch.zeros(1), "bad": lambda: 0})      # cannot be saved
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))         # the old file survives
    assert not list(path.parent.glob("*.tmp"))
    evil = tmp_path / "evil.pt"
    torch.save({"obj": Config()}, evil)                                     # needs unpickling a class
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(evil)
    evil.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError):
        load_checkpoint(evil)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


def test_one_optimiser_table():
    w = torch.zeros(2, requires_grad=True)
    sgd = make_optimizer([w], OptimizerConfig("sgd", 0.1, weight_decay=1e-4, momentum=0.8))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.8 and sgd.defaults["weight_decay"] == 1e-4
    adam = make_optimizer([w], OptimizerConfig("adam", 0.1, betas=(0.5, 0.999)))
    assert type(adam) is torch.optim.Adam and adam.defaults["betas"] == (0.5, 0.999)
    assert type(make_optimizer([w], OptimizerConfig("adamw", 0.1))) is torch.optim.AdamW
    groups = [{"params": [w], "lr": 0.5, "weight_decay": 0.0}]                # groups keep their own values
    assert make_optimizer(groups, OptimizerConfig("adamw", 0.1, 0.1)).param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; choose one of sgd, adamw"):
        make_optimizer([w], OptimizerConfig("adam", 0.1), choices=("sgd", "adamw"))
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        make_optimizer([w], OptimizerConfig("lion", 0.1))


def test_gradients_are_clipped_before_the_step():
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1.0)
    w.grad = torch.tensor([3.0, 4.0])                                       # norm 5
    apply_gradients(opt, grad_scaler(torch.device("cpu"), None), [w], max_norm=1.0)
    assert torch.allclose(w.detach(), torch.tensor([-0.6, -0.8]))
    w.grad = torch.tensor([3.0, 4.0])
    apply_gradients(opt, grad_scaler(torch.device("cpu"), None), [w], max_norm=0)   # 0: no clipping
    assert torch.allclose(w.detach(), torch.tensor([-3.6, -4.8]))


def test_cpu_runs_in_full_precision_on_one_process():
    runtime = setup_runtime("cpu")
    assert runtime.device == torch.device("cpu") and (runtime.rank, runtime.world, runtime.main) == (0, 1, True)
    for enabled in (None, True, False):
        assert autocast_dtype(enabled, runtime.device, "fp16") is None
    assert not grad_scaler(runtime.device, None).is_enabled()
    with pytest.raises(ValueError, match="amp dtype"):
        autocast_dtype(True, torch.device("cuda"), "fp8")
