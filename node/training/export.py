"""Export a run's checkpoint as a folder that transformers and inference servers load.

    rankswarm export RUN_DIR OUT [--dtype float32|bfloat16|float16] [--checkpoint DIR]

The run's `config.resolved.json` names the base model (`model.path`, or the embedded model);
its architecture is rebuilt from there, the checkpoint's weights (verified against its
manifest; the float32 masters of a low-precision run) are loaded strictly, and OUT gets what
`save_pretrained` writes (config.json, model.safetensors, generation_config.json), the
tokenizer (with its chat template) and `rankswarm_export.json` (which run, step and checkpoint).
`AutoModelForCausalLM.from_pretrained(OUT)` then gives the checkpoint's log-probs (exactly in
float32). The embedded char tokenizer is loaded with `PreTrainedTokenizerFast.from_pretrained(OUT)`
(transformers' AutoTokenizer maps a qwen2 folder to Qwen2Tokenizer, which drops its spaces);
a real model's tokenizer loads with AutoTokenizer as usual.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from node.model.loading import EMBEDDED_DIR, load_tokenizer
from node.model.tokenizer import is_char_tokenizer, save_char_tokenizer
from node.training.checkpoint import CheckpointError, latest_checkpoint, verify_checkpoint
from plumbing.config_loading import RESOLVED_NAME

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Exported:
    folder: Path
    checkpoint: Path
    step: int
    dtype: str


def _base_model(run_dir: Path) -> Path:
    resolved = run_dir / RESOLVED_NAME
    if not resolved.is_file():
        raise CheckpointError(f"{run_dir} has no {RESOLVED_NAME}: is it the run_dir of a rankswarm run?")
    path = json.loads(resolved.read_text()).get("model", {}).get("path")
    base = EMBEDDED_DIR if path is None else Path(path).expanduser()
    if not (base / "config.json").is_file():
        raise CheckpointError(f"the run's base model {base} (model.path) is not a model folder any more")
    return base


def export_run(run_dir: str | Path, out: str | Path, *, dtype: str = "float32",
               checkpoint: str | Path | None = None) -> Exported:
    """Write the newest (or the given) checkpoint of `run_dir` as a save_pretrained folder `out`."""
    run_dir, out = Path(run_dir), Path(out)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    base = _base_model(run_dir)
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        raise CheckpointError(f"no complete checkpoint under {run_dir / 'checkpoints'}")
    state = verify_checkpoint(path)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, local_files_only=True)
    try:
        model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}/model.safetensors does not fit the base model {base}: {err}") from None
    model.to(_DTYPES[dtype])
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    tokenizer = load_tokenizer(base)
    if is_char_tokenizer(base):
        save_char_tokenizer(tokenizer, out)
    else:
        tokenizer.save_pretrained(out)
    (out / "rankswarm_export.json").write_text(json.dumps(
        {"run_dir": str(run_dir.resolve()), "checkpoint": str(path.resolve()), "step": state["step"],
         "dtype": dtype, "base_model": str(base)}, indent=1, sort_keys=True) + "\n")
    return Exported(out, path, int(state["step"]), dtype)
