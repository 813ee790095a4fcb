"""The embedded tiny policy: a Qwen2-style causal LM of about 0.9M parameters.

Same architecture family as the real models rankswarm trains (RMSNorm, RoPE, SwiGLU, tied
embeddings), so every code path (generation, hidden states, checkpoints) is exercised on CPU
in seconds. Built from `TinyModelConfig`, initialised from a seed.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from node.model.config import TinyModelConfig
from node.model.tokenizer import BOS, EOS, PAD, PreTrainedTokenizerFast


def qwen2_config(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    """The transformers config for `cfg`, with the special-token ids of `tokenizer`."""
    if cfg.hidden_size % cfg.num_heads or cfg.num_heads % cfg.num_kv_heads:
        raise ValueError(f"num_heads ({cfg.num_heads}) must divide hidden_size ({cfg.hidden_size}) "
                         f"and num_kv_heads ({cfg.num_kv_heads}) must divide num_heads")
    return Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=True, use_sliding_window=False,
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD), bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS))


def build_tiny_model(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    """A freshly initialised tiny Qwen2 causal LM in float32 (same seed, same weights)."""
    config = qwen2_config(cfg, tokenizer)
    # fork the RNG so building a model never shifts the caller's random stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = default_generation_config(config)
    return model


def default_generation_config(config: Qwen2Config, max_new_tokens: int = 48) -> GenerationConfig:
    """Greedy decoding that stops at <eos>; the trainer passes its sampling settings explicitly."""
    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=config.eos_token_id,
                            pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id)


def num_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
