"""Smoke run of a real-sized policy: peak memory, generation and training tokens/s, shaping's share.

The model is a random-init Qwen2 with Qwen2.5-0.5B's shapes (896 wide, 24 layers, 14 heads / 2 KV
heads, 4864 MLP, 151,936-token vocabulary, tied embeddings), built locally from its config (nothing
is downloaded), with the char tokenizer padded to the same vocabulary. It trains through the real
trainer (mixed precision, chunked log-probs, micro-batches, the memory estimate) on the arithmetic
task; a random model earns nothing, so the numbers are about speed and memory, not learning.

Each dtype runs in a fresh process, so that its peak is its own: CUDA's peak allocation on a GPU,
the peak resident set above the process's resident set before the model was built on the CPU
(glibc then maps every allocation of 1 MB or more on its own, MALLOC_MMAP_THRESHOLD_, so freed
tensors leave the resident set: tests/node/test_memory.py says why). Steps after a warm-up step
are measured.

    PYTHONPATH=. python -m bench.bench_gpu_smoke                       # CPU: float32 and bfloat16
    PYTHONPATH=. python -m bench.bench_gpu_smoke --device cuda --dtypes bfloat16 --prompts 16 --group 8 \\
        --max-new-tokens 256 --micro-batch 16                         # the same on a GPU

Outputs <out>/smoke.json and <out>/smoke.md (pasted into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151_936, max_position_embeddings=32_768,
                  rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}, tie_word_embeddings=True,
                  use_sliding_window=False, rms_norm_eps=1e-6)


def _resident(field: str = "VmRSS") -> int:
    from node.training.memory import resident_bytes

    return resident_bytes(field)


def run_one(args: argparse.Namespace, dtype: str) -> dict:
    """In this (fresh) process: build, warm up, measure `args.steps` steps; the record of the run."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from node.model.tiny import default_generation_config
    from node.model.tokenizer import build_char_tokenizer
    from node.tasks import build_task
    from node.training.build import build_local_update, enable_checkpointing, longest_prompt, resolve_device
    from node.training.config import TrainConfig
    from node.training.memory import ModelShape, PeakMemory, available_bytes, estimate_memory
    from node.training.precision import MasterWeights
    from node.training.rollout import PromptFormat
    from node.training.seams import LocalBaselines
    from node.training.trainer import Trainer
    from plumbing.metrics import MetricsSink

    device = resolve_device(args.device)
    before_model = _resident()
    tokenizer = build_char_tokenizer(QWEN25_05B["vocab_size"])
    config = Qwen2Config(**QWEN25_05B, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config = default_generation_config(config, args.max_new_tokens)
    build_seconds = time.perf_counter() - started
    run_dir = tempfile.mkdtemp(prefix="smoke-")
    cfg = TrainConfig.model_validate({
        "run_dir": run_dir, "seed": 0, "progress": False, "algo": {"prompts_per_step": args.prompts},
        "sampling": {"group_size": args.group, "max_new_tokens": args.max_new_tokens},
        "eval": {"num_problems": 4}, "task": {"type": "arithmetic", "digits": 3},
        "memory": {"micro_batch_size": args.micro_batch, "logit_chunk_tokens": args.chunk,
                   "gradient_checkpointing": args.checkpointing}})
    if args.checkpointing:
        enable_checkpointing(model)
    task = build_task(cfg.task)
    estimate = estimate_memory(ModelShape.of(model), cfg, device,
                               prompt_tokens=longest_prompt(tokenizer, task, PromptFormat(), 4))
    trainer = Trainer(cfg, model, tokenizer, task, baselines=LocalBaselines(cfg.shaping),
                      update=build_local_update(MasterWeights(model), cfg),
                      metrics=MetricsSink(f"{run_dir}/metrics.jsonl"))
    trainer.train_step()  # warm-up: optimizer state, kernels, allocator
    peak = PeakMemory(device)
    peak.reset()
    rows = []
    for _ in range(args.steps):
        m = trainer.train_step().metrics
        rows.append({"generate": m.time_generate, "forward": m.time_forward, "backward": m.time_backward,
                     "update": m.time_update, "shaping": m.time_shaping, "step": m.time_step,
                     "response_tokens": m.response_tokens, "logprob_gap": m.logprob_gap,
                     "peak_memory_bytes": m.peak_memory_bytes})
    measured = peak.peak() or 0
    base = 0 if device.type == "cuda" else before_model
    # prompt + response tokens through the training forward and backward per step (the prompt width of
    # the held-out sample stands for the training prompts'; responses run to max_new_tokens: a random
    # model rarely samples <eos>)
    seq_tokens = estimate.tokens * args.prompts * args.group
    train_seconds = statistics.mean(r["forward"] + r["backward"] + r["update"] for r in rows)
    return {
        "dtype": dtype, "device": str(device), "threads": torch.get_num_threads(),
        "params": ModelShape.of(model).num_params,
        "build_seconds": build_seconds, "steps": rows, "available_gb": available_bytes(device) / 1e9,
        "estimate": {k: getattr(estimate, k) for k in ("weights", "master", "gradients", "optimizer", "activations",
                                                       "logits", "generation", "update", "micro_batch", "tokens")}
        | {"static": estimate.static, "total": estimate.total},
        "peak_bytes": measured - base,
        "generation_tokens_per_s": statistics.mean(r["response_tokens"] / r["generate"] for r in rows),
        "training_tokens_per_s": seq_tokens / train_seconds,
        "shaping_share": statistics.mean(r["shaping"] / r["step"] for r in rows),
        "step_seconds": statistics.mean(r["step"] for r in rows),
        "logprob_gap": statistics.mean(r["logprob_gap"] for r in rows),
    }


def table(results: list[dict], args: argparse.Namespace) -> str:
    gb = 1e9
    lines = [f"Qwen2.5-0.5B shapes ({results[0]['params'] / 1e6:.0f}M parameters), {args.prompts} prompts x "
             f"{args.group} rollouts x {args.max_new_tokens} new tokens, micro-batch {args.micro_batch}, logit chunk "
             f"{args.chunk}, gradient checkpointing {'on' if args.checkpointing else 'off'}, {args.steps} measured "
             f"steps after a warm-up; load average before: {args.load}",
             "",
             "| dtype | device | peak (GB) | weights + masters + grads + AdamW (GB) | + one micro-batch: activations, "
             "logits chunk (GB) | peak / that | estimate (GB) | generation tok/s | training tok/s | step (s) "
             "| shaping share | log-prob gap |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        e = r["estimate"]
        budget = e["static"] + e["activations"] + e["logits"]
        lines.append(
            f"| {r['dtype']} | {r['device']} ({r['threads']} threads) | {r['peak_bytes'] / gb:.2f} | "
            f"{e['static'] / gb:.2f} | {(e['activations'] + e['logits']) / gb:.2f} | "
            f"{r['peak_bytes'] / budget:.2f}x | {e['total'] / gb:.2f} | {r['generation_tokens_per_s']:.1f} | "
            f"{r['training_tokens_per_s']:.1f} | {r['step_seconds']:.1f} | {100 * r['shaping_share']:.3f} % | "
            f"{r['logprob_gap']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_smoke")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one dtype, in this process
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args, args.child)))
        return
    args.load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").is_file() else "?"
    results = []
    for dtype in args.dtypes.split(","):
        argv = [sys.executable, "-m", "bench.bench_gpu_smoke", "--child", dtype, *sys.argv[1:]]
        # the repository first, then whatever the caller put on the path (packages installed beside the system's)
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
        if out.returncode != 0:
            raise SystemExit(f"{dtype} run failed:\n{out.stderr[-4000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{dtype}: {json.dumps({k: v for k, v in results[-1].items() if k != 'steps'})}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "smoke.json").write_text(json.dumps(results, indent=1))
    (args.out / "smoke.md").write_text(table(results, args) + "\n")
    print(table(results, args))


if __name__ == "__main__":
    main()
