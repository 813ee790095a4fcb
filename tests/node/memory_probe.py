"""Peak memory of one training step of a model with Qwen2.5's 151,936-token vocabulary, tiny in width.

Run in a fresh process per configuration (tests/node/test_memory.py), so that what one run's
allocator kept cannot hide another's peak:

    python tests/node/memory_probe.py PROMPTS GROUP MAX_NEW_TOKENS CHUNK_TOKENS [MICRO_BATCH]

prints one JSON line: the step's peak resident set above the resident set just before it, in bytes.
"""

from __future__ import annotations

import json
import sys
import tempfile

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from node.model.tiny import default_generation_config
from node.model.tokenizer import build_char_tokenizer
from node.tasks import build_task
from node.training.build import build_local_update
from node.training.config import TrainConfig
from node.training.memory import PeakMemory, resident_bytes
from node.training.precision import MasterWeights
from node.training.seams import LocalBaselines
from node.training.trainer import Trainer
from plumbing.metrics import MetricsSink

VOCAB = 151_936


def build(prompts: int, group: int, max_new_tokens: int, chunk: int, micro: int | None, run_dir: str) -> Trainer:
    torch.set_num_threads(1)
    tokenizer = build_char_tokenizer(VOCAB)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = default_generation_config(config)
    cfg = TrainConfig.model_validate({
        "run_dir": run_dir, "seed": 0, "progress": False, "algo": {"prompts_per_step": prompts},
        "sampling": {"group_size": group, "max_new_tokens": max_new_tokens}, "eval": {"num_problems": 2},
        "memory": {"logit_chunk_tokens": chunk, "micro_batch_size": micro}, "loss": {"entropy_coef": 0.01},
        "task": {"type": "arithmetic", "digits": 2}})
    return Trainer(cfg, model, tokenizer, build_task(cfg.task), baselines=LocalBaselines(cfg.shaping),
                   update=build_local_update(MasterWeights(model), cfg), metrics=MetricsSink(f"{run_dir}/m.jsonl"))


def main(argv: list[str]) -> None:
    prompts, group, max_new, chunk = (int(a) for a in argv[:4])
    micro = int(argv[4]) if len(argv) > 4 else None
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build(prompts, group, max_new, chunk, micro, run_dir)
        trainer.train_step()  # the first step allocates the optimizer state and warms every code path up
        peak = PeakMemory(torch.device("cpu"))
        before = resident_bytes("VmRSS")
        peak.reset()
        report = trainer.train_step()
        print(json.dumps({"peak_above_start": peak.peak() - before, "tokens": report.metrics.response_tokens,
                          "rollouts": prompts * group}))


if __name__ == "__main__":
    main(sys.argv[1:])
