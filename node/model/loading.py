"""Load the policy and its tokenizer: the embedded tiny model or any local HF causal LM.

`load_policy(None, ...)` loads node/model/embedded/; a path loads that folder through the same
code path. Only local files are read (never the Hugging Face hub). The tokenizer is our char
tokenizer when the folder carries its marker (see node/model/tokenizer.py) and the model's own
tokenizer via AutoTokenizer otherwise; a tokenizer without a pad token gets its eos as pad.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from node.model.tokenizer import is_char_tokenizer, load_char_tokenizer

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" is bfloat16 on a GPU that has it (Ampere and later), float16 on an older GPU, float32 on the CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _model_dir(path: str | Path | None) -> Path:
    folder = EMBEDDED_DIR if path is None else Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"model path {folder} does not exist; pass a local Hugging Face model folder "
                         f"or leave model.path unset for the embedded model")
    if not (folder / "config.json").is_file():
        raise ValueError(f"model path {folder} has no config.json; it must be a folder written by "
                         f"save_pretrained (config.json + weights + tokenizer files)")
    return folder


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """Our char tokenizer if `folder` holds it, else the model's own tokenizer; pad falls back to eos."""
    if is_char_tokenizer(folder):
        return load_char_tokenizer(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"could not load a tokenizer from {folder}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(path: str | None, device: str | torch.device, dtype: str = "auto"
                ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) from `path` (None = the embedded model) on `device`, in eval mode.

    dtype "auto" gives bfloat16 (float16 without bf16 support) on CUDA and float32 on CPU; "float32" /
    "bfloat16" / "float16" force one. Training keeps float32 master weights of a low-precision model
    (node/training/precision.py).
    """
    folder = _model_dir(path)
    device = torch.device(device)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar in every peer's log says nothing useful
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype, device), local_files_only=True)
    model.to(device).eval()
    tokenizer = load_tokenizer(folder)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
