"""Batched rollout sampling: G responses per prompt with explicit sampling parameters.

The sampled policy must be exactly the policy the loss differentiates, so sampling passes
`do_sample=True, temperature, top_k=0, top_p=1.0` explicitly, and neutral values for every other
logits processor a checkpoint's generation_config could switch on (repetition penalty, min
length, ...: an instruct model's generation_config sets several). The log-probability of each
sampled token is recorded during generation by a logits processor that keeps one step's
log-softmax at a time (`SampledLogprobs`), never the [B, R, V] logits of the whole response;
a test compares them with the training forward.

Prompts of an instruct model go through its chat template as one user turn (optionally after a
system turn) when `PromptFormat.chat_template` is set (node/training/config.py, model.chat_template).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from node.training.config import SamplingConfig

# every logits processor a generation_config could add, switched off (None/neutral values are explicit:
# transformers fills values left unset from the model's own generation_config)
NEUTRAL_WARPERS = {  # applied only when sampling (greedy decoding rejects them)
    "top_k": 0, "top_p": 1.0, "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "top_h": None,
}
NEUTRAL_PROCESSORS = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0, "min_new_tokens": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "exponential_decay_length_penalty": None, "renormalize_logits": False,
    "num_beams": 1, "guidance_scale": None, "watermarking_config": None, "remove_invalid_values": False,
}


@dataclass(frozen=True)
class PromptFormat:
    """How task prompts become model input."""

    chat_template: bool = False  # wrap each prompt as a user turn with the tokenizer's chat template
    system_prompt: str | None = None  # a system turn before it (chat template only)


def resolve_prompt_format(mode: str, tokenizer, system_prompt: str | None = None) -> PromptFormat:
    """model.chat_template ("auto", "on", "off") for this tokenizer."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has_template:
        raise ValueError("model.chat_template='on' but the tokenizer has no chat template; "
                         "use model.chat_template='off' (raw prompts) or a model folder whose tokenizer has one")
    return PromptFormat(chat_template=has_template and mode != "off", system_prompt=system_prompt)


def format_prompts(tokenizer, prompts: list[str], fmt: PromptFormat) -> list[str]:
    """The text each prompt is encoded from: the prompt itself, or its chat-template rendering."""
    if not fmt.chat_template:
        return list(prompts)
    system = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
    return [tokenizer.apply_chat_template(system + [{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


class SampledLogprobs(LogitsProcessor):
    """Records log softmax(logits / temperature) of each sampled token while `generate` runs.

    transformers calls processors in order with the raw float32 logits of the step; with the neutral
    settings above nothing comes before this one, and the temperature warper comes after it. At step
    t the last column of `input_ids` is the token sampled at step t-1, so the previous step's
    log-softmax [B, V] is all that is kept; the last token is picked up by `finish`."""

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.previous: torch.Tensor | None = None  # [B, V] log-softmax of the last step seen
        self.values: list[torch.Tensor] = []  # [B] per sampled token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.values.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, response_ids: torch.Tensor) -> torch.Tensor:
        """The recorded log-probs of `response_ids` [B, R] -> [B, R] float32."""
        num = response_ids.shape[1]
        if len(self.values) == num - 1 and self.previous is not None:
            self.values.append(self.previous.gather(-1, response_ids[:, -1:]).squeeze(-1))
        self.previous = None
        if len(self.values) < num:
            raise RuntimeError(f"recorded {len(self.values)} sampled log-probs for {num} generated tokens")
        return torch.stack(self.values[:num], dim=1)


@dataclass
class RolloutBatch:
    """Prompt + response token ids of B = num_prompts * group_size rollouts (prompt-major order)."""

    input_ids: torch.Tensor  # [B, P + R]: left-padded prompt then right-padded response
    attention_mask: torch.Tensor  # [B, P + R]
    prompt_width: int  # P: padded prompt length, the response starts at column P
    response_mask: torch.Tensor  # [B, R] bool: response tokens up to and including the first EOS
    sample_logprobs: torch.Tensor  # [B, R] float32: log-prob of each sampled token under the sampler
    truncated: torch.Tensor  # [B] bool: no EOS within max_new_tokens
    texts: list[str]  # decoded responses (special tokens removed)

    @property
    def response_ids(self) -> torch.Tensor:  # [B, R]
        return self.input_ids[:, self.prompt_width :]

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())

    def select(self, rows: torch.Tensor) -> RolloutBatch:
        """The rollouts at `rows` (a [b] index tensor), e.g. one micro-batch."""
        cpu_rows = rows.cpu()
        return RolloutBatch(self.input_ids[rows], self.attention_mask[rows], self.prompt_width,
                            self.response_mask[rows], self.sample_logprobs[rows], self.truncated[rows],
                            [self.texts[i] for i in cpu_rows.tolist()])


def encode_prompts(tokenizer, prompts: list[str], device: torch.device,
                   fmt: PromptFormat = PromptFormat()) -> dict[str, torch.Tensor]:
    """Left-pad prompts so every response starts at the same column.

    A chat template carries its own special tokens (a BOS where the model wants one), so a
    templated prompt is encoded without adding them again."""
    tokenizer.padding_side = "left"
    enc = tokenizer(format_prompts(tokenizer, prompts, fmt), return_tensors="pt", padding=True,
                    add_special_tokens=not fmt.chat_template)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of tokens up to and including the first EOS, and which rows never emitted EOS."""
    is_eos = response_ids == eos_token_id  # [B, R]
    # number of EOS seen strictly before each position: a token counts while none came earlier
    eos_before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    mask = eos_before == 0
    truncated = ~is_eos.any(dim=1)
    return mask, truncated


@torch.no_grad()
def sample_rollouts(model, tokenizer, prompts: list[str], cfg: SamplingConfig, *, group_size: int | None = None,
                    greedy: bool = False, max_new_tokens: int | None = None,
                    prompt_format: PromptFormat = PromptFormat()) -> RolloutBatch:
    """Sample `group_size` responses for each prompt (greedy=True: one argmax response each)."""
    if not prompts:
        raise ValueError("sample_rollouts needs at least one prompt")
    group = 1 if greedy else (group_size or cfg.group_size)
    device = next(model.parameters()).device
    expanded = [p for p in prompts for _ in range(group)]
    enc = encode_prompts(tokenizer, expanded, device, prompt_format)
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    temperature = 1.0 if greedy else cfg.temperature
    sampling = {**NEUTRAL_PROCESSORS, "do_sample": False} if greedy else {
        **NEUTRAL_PROCESSORS, **NEUTRAL_WARPERS, "do_sample": True, "temperature": temperature}
    recorder = SampledLogprobs(temperature)
    was_training = model.training
    model.eval()
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens or cfg.max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
        return_dict_in_generate=True, use_cache=True, logits_processor=LogitsProcessorList([recorder]),
        **sampling,
    )
    model.train(was_training)
    prompt_width = enc["input_ids"].shape[1]
    response_ids = out.sequences[:, prompt_width:]  # [B, R]
    mask, truncated = response_mask_from_ids(response_ids, eos_id)
    sample_logprobs = recorder.finish(response_ids) * mask  # [B, R]
    attention = torch.cat([enc["attention_mask"], mask.to(enc["attention_mask"].dtype)], dim=1)
    texts = tokenizer.batch_decode(response_ids.masked_fill(~mask, pad_id), skip_special_tokens=True)
    return RolloutBatch(out.sequences, attention, prompt_width, mask, sample_logprobs, truncated, texts)
