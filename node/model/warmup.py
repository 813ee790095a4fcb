"""Supervised warm-up of the embedded tiny model on the synthetic arithmetic task.

RL needs a policy that is sometimes right: the warm-up teaches the response format of
node/tasks/arithmetic.py (column scratchpad, then \\boxed{result}) by SFT on fresh training
problems and stops as soon as greedy accuracy on a validation sample (drawn like training
problems, never from the task's eval pool) reaches `target_accuracy`, leaving headroom for RL.
Seeded and deterministic on CPU for a fixed thread count.

    python -m node.model.warmup --out node/model/embedded [--threads 2] [--max-steps N]

writes the model (safetensors, config.json, generation_config.json), the char tokenizer and
warmup.json (settings, steps, time and the held-out greedy accuracy of the result).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from node.model.config import WarmupConfig
from node.model.tiny import build_tiny_model, num_parameters
from node.model.tokenizer import build_char_tokenizer, save_char_tokenizer
from node.tasks.arithmetic import ArithmeticTask, worked_solution
from node.tasks.base import Problem

MAX_NEW_TOKENS = 48  # the longest worked solution (3-digit operands) is 42 characters + <eos>


def encode_sft_batch(tokenizer: PreTrainedTokenizerFast, problems: list[Problem]) -> dict[str, torch.Tensor]:
    """<bos> prompt response <eos>, right-padded; labels are -100 outside response + <eos>."""
    rows, labels = [], []
    for problem in problems:
        prompt = tokenizer(problem.prompt).input_ids  # [<bos>, prompt chars]
        response = tokenizer(worked_solution(problem), add_special_tokens=False).input_ids
        ids = prompt + response + [tokenizer.eos_token_id]
        rows.append(ids)
        labels.append([-100] * len(prompt) + ids[len(prompt):])
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])  # [B, T]
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])  # [B, T]
    label_ids = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])  # [B, T]
    return {"input_ids": input_ids, "attention_mask": attention, "labels": label_ids}


@torch.no_grad()
def greedy_responses(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, prompts: list[str],
                     max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 250) -> list[str]:
    """Greedy completions of `prompts` (left-padded batches), special tokens removed."""
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    texts = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True).to(model.device)
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    model.train(was_training)
    return texts


def greedy_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, task: ArithmeticTask,
                    problems: list[Problem]) -> float:
    responses = greedy_responses(model, tokenizer, [p.prompt for p in problems])
    return sum(task.is_correct(p, r) for p, r in zip(problems, responses)) / len(problems)


def _lr_at(step: int, cfg: WarmupConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.lr_warmup_steps))


def _sft_step(model: PreTrainedModel, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
              lr: float) -> torch.Tensor:
    for group in opt.param_groups:
        group["lr"] = lr
    loss = model(**batch).loss  # mean cross-entropy over response + <eos> tokens
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def warm_up(cfg: WarmupConfig, log=print) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, dict]:
    """Run the SFT warm-up; returns the model, its tokenizer and a report dict."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # the reduction order, hence the exact weights, depend on it
    try:
        return _warm_up(cfg, log)
    finally:
        torch.set_num_threads(previous_threads)


def _warm_up(cfg: WarmupConfig, log) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, dict]:
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.model, tokenizer)
    task = ArithmeticTask(cfg.task)
    data_rng, val_rng = random.Random(cfg.seed), random.Random(cfg.seed + 1)
    val = task.sample(val_rng, cfg.val_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    history, start, step, val_acc = [], time.perf_counter(), 0, 0.0
    torch.manual_seed(cfg.seed)
    model.train()
    while step < cfg.max_steps:
        batch = encode_sft_batch(tokenizer, task.sample(data_rng, cfg.batch_size))
        loss = _sft_step(model, opt, batch, _lr_at(step, cfg))
        step += 1
        if step % cfg.eval_every == 0:
            val_acc = greedy_accuracy(model, tokenizer, task, val)
            history.append({"step": step, "loss": round(loss.item(), 4), "val_greedy_accuracy": val_acc})
            log(f"step {step} loss {loss.item():.4f} val greedy acc {val_acc:.3f} "
                f"({time.perf_counter() - start:.0f}s)")
            if val_acc >= cfg.target_accuracy:
                break
    sft_seconds = time.perf_counter() - start
    eval_acc = greedy_accuracy(model, tokenizer, task, task.eval_set(cfg.eval_problems))
    report = {"steps": step, "sft_seconds": round(sft_seconds, 1), "val_greedy_accuracy": val_acc,
              "eval_greedy_accuracy": eval_acc, "eval_problems": cfg.eval_problems,
              "num_parameters": num_parameters(model), "threads": cfg.threads,
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
              "history": history, "config": cfg.model_dump()}
    log(f"done: {step} steps in {sft_seconds:.0f}s, held-out greedy accuracy {eval_acc:.3f}")
    return model, tokenizer, report


def save_warm_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, report: dict, out: str | Path) -> None:
    """Write the model, tokenizer and warmup.json into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    save_char_tokenizer(tokenizer, out)
    (out / "warmup.json").write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="Folder to write the warmed-up model into.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (results depend on it).")
    parser.add_argument("--max-steps", type=int, default=None, help="Override WarmupConfig.max_steps.")
    parser.add_argument("--target", type=float, default=None, help="Override WarmupConfig.target_accuracy.")
    args = parser.parse_args(argv)
    overrides = {"threads": args.threads}
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.target is not None:
        overrides["target_accuracy"] = args.target
    cfg = WarmupConfig(**overrides)
    model, tokenizer, report = warm_up(cfg)
    save_warm_model(model, tokenizer, report, args.out)


if __name__ == "__main__":
    main()
