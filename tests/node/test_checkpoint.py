"""Checkpoints: exact round trip, and corrupt or partial checkpoints are refused by name."""

import json

import pytest
import torch

from node.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)

pytestmark = pytest.mark.unit


def _model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_rng_and_state(tmp_path):
    model, opt = _model_and_optimizer(0)
    save_checkpoint(tmp_path, 7, model, opt, {"baselines": {"er": 1.5}})
    expected_draw = torch.rand(3)
    other, other_opt = _model_and_optimizer(1)
    state = load_checkpoint(latest_checkpoint(tmp_path), other, other_opt)
    assert state == {"step": 7, "baselines": {"er": 1.5}}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], other_opt.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG continues where the save left it


def test_keeps_only_the_newest(tmp_path):
    model, opt = _model_and_optimizer(0)
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, opt, {}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000004"]
    assert latest_checkpoint(tmp_path).name == "step_00000004"


def test_corrupt_file_is_detected(tmp_path):
    model, opt = _model_and_optimizer(0)
    path = save_checkpoint(tmp_path, 1, model, opt, {})
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors does not match its manifest"):
        load_checkpoint(path, model, opt)


def test_partial_checkpoint_is_not_loaded(tmp_path):
    model, opt = _model_and_optimizer(0)
    path = save_checkpoint(tmp_path, 1, model, opt, {})
    (path / "manifest.json").unlink()
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="partial"):
        verify_checkpoint(path)
    (path / "manifest.json").write_text(json.dumps({"model.safetensors": {"sha256": "0", "bytes": 1}}))
    with pytest.raises(CheckpointError, match="missing from checkpoint|does not match"):
        verify_checkpoint(path)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    model, opt = _model_and_optimizer(0)
    path = save_checkpoint(tmp_path, 1, model, opt, {})
    wrong = torch.nn.Linear(4, 2)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_checkpoint(path, wrong, None)
