"""Checkpoints that resume exactly and refuse to load when corrupt or partial.

Layout of one checkpoint directory `step_00000042/`:
  model.safetensors   policy weights: the float32 masters of a low-precision model (node/training/precision.py),
                      under the model's state-dict names
  optimizer.pt        optimizer state_dict (loaded with weights_only=True, never arbitrary pickle)
  rng.safetensors     torch CPU (and CUDA) generator states
  state.json          step, shaping baselines, python RNG state, anything else the trainer keeps
  manifest.json       sha256 and size of every file above; written last

A checkpoint is written into a temporary sibling directory and renamed into place, so a crash
leaves either the previous checkpoint or a complete new one; `load_checkpoint` re-hashes every
file against the manifest and raises `CheckpointError` naming the first mismatch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from node.training.precision import MasterWeights
from plumbing.errors import StartupError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FILES = ("model.safetensors", "optimizer.pt", "rng.safetensors", "state.json")


class CheckpointError(StartupError, ValueError):
    """A checkpoint that is missing, partial or corrupt; the message names the file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _rng_tensors() -> dict[str, torch.Tensor]:
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"torch_cuda_{i}"] = state
    return states


def _restore_rng(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch_cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def checkpoint_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module | MasterWeights,
                    optimizer: torch.optim.Optimizer, state: dict[str, Any], *, keep: int = 3) -> Path:
    """Atomically write checkpoint `step` under `root`; keep the newest `keep` checkpoints.

    `model`: a module, or the `MasterWeights` of one (the float32 masters are written)."""
    final = checkpoint_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # tied embeddings share storage; safetensors refuses shared tensors, so store clones
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, sort_keys=True))
    manifest = {name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size} for name in FILES}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _prune(Path(root), keep)
    return final


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint directory (one with a manifest), or None.

    Newer directories without a manifest (an interrupted write) are skipped with a warning
    that names them; a complete one is only verified when it is loaded."""
    root = Path(root)
    if not root.is_dir():
        return None
    dirs = sorted(p for p in root.glob("step_*") if p.is_dir())
    done = [p for p in dirs if (p / MANIFEST).is_file() and not p.name.endswith(".tmp")]
    newest = done[-1] if done else None
    for skipped in (p for p in dirs if p not in done and (newest is None or p.name > newest.name)):
        log.warning("skipping partial checkpoint %s (no %s: interrupted write?); resuming from %s",
                    skipped, MANIFEST, newest or "scratch")
    return newest


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every file against the manifest; return the parsed state.json."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise CheckpointError(f"{path} has no {MANIFEST}: the checkpoint is partial (interrupted write?)")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path / MANIFEST} is not valid JSON: {err}") from None
    for name in FILES:
        entry = manifest.get(name)
        file = path / name
        if entry is None or not file.is_file():
            raise CheckpointError(f"{file} is missing from checkpoint {path}")
        if file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            raise CheckpointError(f"{file} does not match its manifest hash: the checkpoint is corrupt")
    return json.loads((path / "state.json").read_text())


def load_checkpoint(path: str | Path, model: torch.nn.Module | MasterWeights,
                    optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Verify, then restore weights (into the masters and the model), optimizer and RNG in place;
    return state.json."""
    path = Path(path)
    state = verify_checkpoint(path)
    weights = load_file(str(path / "model.safetensors"))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}/model.safetensors does not fit this model: {err}") from None
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    _restore_rng(load_file(str(path / "rng.safetensors")))
    return state
