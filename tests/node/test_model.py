"""The embedded model: char tokenizer, tiny Qwen2 build, hidden states, loading and warm-up."""

import json

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from node.model.config import TinyModelConfig, WarmupConfig
from node.model.loading import EMBEDDED_DIR, load_policy
from node.model.tiny import build_tiny_model, num_parameters
from node.model.tokenizer import (
    CHARS,
    SPECIAL_TOKENS,
    build_char_tokenizer,
    is_char_tokenizer,
    load_char_tokenizer,
    save_char_tokenizer,
)
from node.model.warmup import encode_sft_batch, greedy_responses, warm_up
from node.tasks import ArithmeticTaskConfig, build_task
from node.tasks.arithmetic import worked_solution

pytestmark = pytest.mark.unit

SMALL = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, seed=1)


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tok")
    save_char_tokenizer(tokenizer, folder)
    return load_char_tokenizer(folder)


# -- tokenizer -----------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=CHARS, max_size=200))
def test_tokenizer_round_trip_is_exact(saved_tokenizer, text):
    assume(not any(tok in text for tok in SPECIAL_TOKENS))
    ids = saved_tokenizer(text).input_ids
    assert ids[0] == saved_tokenizer.bos_token_id and len(ids) == len(text) + 1
    assert saved_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_ids_and_whitespace(tokenizer, saved_tokenizer):
    special = [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id]
    assert special == [0, 1, 2, 3]
    assert len(tokenizer) == len(CHARS) + 4 == 100
    text = "Q:  12 + 34\n\nA: \\boxed{46} , x ."
    assert saved_tokenizer(text).input_ids == tokenizer(text).input_ids
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text
    assert tokenizer("é").input_ids == [1, tokenizer.unk_token_id]
    assert tokenizer("7", add_special_tokens=False).input_ids == [tokenizer.convert_tokens_to_ids("7")]


def test_tokenizer_left_pads(tokenizer):
    batch = tokenizer(["1+2=", "10+20="], padding=True)
    assert batch.input_ids[0][:2] == [0, 0] and batch.attention_mask[0][:2] == [0, 0]


def test_char_tokenizer_marker(tmp_path, tokenizer):
    assert not is_char_tokenizer(tmp_path)
    save_char_tokenizer(tokenizer, tmp_path)
    assert is_char_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert not is_char_tokenizer(tmp_path)


# -- tiny model ----------------------------------------------------------------------------------

def test_tiny_model_size_and_seed(tokenizer):
    model = build_tiny_model(TinyModelConfig(), tokenizer)
    assert 0.7e6 < num_parameters(model) < 1.3e6
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    again = build_tiny_model(TinyModelConfig(), tokenizer)
    other = build_tiny_model(TinyModelConfig(seed=1), tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_tiny_model_config_errors(tokenizer):
    with pytest.raises(ValueError, match="num_heads"):
        build_tiny_model(TinyModelConfig(hidden_size=30, num_heads=4), tokenizer)
    with pytest.raises(ValueError):
        TinyModelConfig(layers=3)


def test_last_hidden_state_is_post_final_norm(tokenizer):
    model = build_tiny_model(SMALL, tokenizer).eval()
    captured = {}
    handle = model.model.norm.register_forward_hook(lambda mod, inp, out: captured.update(out=out, inp=inp[0]))
    enc = tokenizer(["12+7=", "305-48="], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    handle.remove()
    assert len(out.hidden_states) == SMALL.num_layers + 1
    assert torch.equal(out.hidden_states[-1], captured["out"])
    assert not torch.allclose(out.hidden_states[-1], captured["inp"])  # i.e. not the pre-norm residual


def test_left_padded_greedy_matches_unpadded(tokenizer):
    model = build_tiny_model(SMALL, tokenizer).eval()
    prompts = ["1+2=", "305+48=", "7*8="]
    batched = greedy_responses(model, tokenizer, prompts, max_new_tokens=12)
    singles = [greedy_responses(model, tokenizer, [p], max_new_tokens=12)[0] for p in prompts]
    assert batched == singles


# -- loading -------------------------------------------------------------------------------------

def test_embedded_model_loads_and_answers():
    model, tok = load_policy(None, "cpu")
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    assert isinstance(tok, PreTrainedTokenizerFast) and tok.pad_token_id == 0 and tok.eos_token_id == 2
    task = build_task(ArithmeticTaskConfig())
    problems = task.eval_set(40)
    responses = greedy_responses(model, tok, [p.prompt for p in problems])
    assert sum("\\boxed{" in r for r in responses) >= 36  # the warm-up taught the format
    accuracy = sum(task.is_correct(p, r) for p, r in zip(problems, responses)) / len(problems)
    assert 0.05 <= accuracy <= 0.8  # warm, but with room for RL
    report = json.loads((EMBEDDED_DIR / "warmup.json").read_text())
    assert 0.2 <= report["eval_greedy_accuracy"] <= 0.6


def test_load_policy_on_a_saved_tiny_qwen2(tmp_path, tokenizer):
    model = build_tiny_model(SMALL, tokenizer).eval()
    model.save_pretrained(tmp_path)
    save_char_tokenizer(tokenizer, tmp_path)
    loaded, tok = load_policy(str(tmp_path), "cpu")
    text = "a  b\nc"  # a qwen2 folder must not get Qwen2Tokenizer (which drops these spaces)
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    ids = tok(["3+4="], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits)
    half, _ = load_policy(str(tmp_path), "cpu", dtype="bfloat16")
    assert next(half.parameters()).dtype == torch.bfloat16


def test_load_policy_uses_a_foreign_models_own_tokenizer(tmp_path):
    vocab = {"[PAD]": 0, "[UNK]": 1, "</s>": 2, "hello": 3, "world": 4}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="</s>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=5, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path)
    model, tok = load_policy(str(tmp_path), torch.device("cpu"))
    assert tok("hello world").input_ids == [3, 4]
    assert tok.pad_token == "</s>"  # no pad token of its own: eos stands in
    out = model.generate(**tok(["hello"], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 4)


def test_load_policy_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_policy(str(tmp_path / "nope"), "cpu")
    with pytest.raises(ValueError, match="no config.json"):
        load_policy(str(tmp_path), "cpu")
    with pytest.raises(ValueError, match="dtype"):
        load_policy(None, "cpu", dtype="int8")


# -- warm-up -------------------------------------------------------------------------------------

def test_sft_batch_masks_the_prompt(tokenizer):
    task = build_task(ArithmeticTaskConfig())
    problem = task.eval_set(1)[0]
    batch = encode_sft_batch(tokenizer, [problem, task.eval_set(2)[1]])
    row, labels = batch["input_ids"][0], batch["labels"][0]
    num_prompt = len(problem.prompt) + 1  # <bos> + characters
    assert (labels[:num_prompt] == -100).all()
    target = labels[labels != -100].tolist()
    assert target[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(target, skip_special_tokens=True) == worked_solution(problem)
    assert row[0] == tokenizer.bos_token_id


def test_warm_up_is_reproducible():
    cfg = WarmupConfig(model=SMALL, max_steps=3, batch_size=8, eval_every=3, val_size=4, eval_problems=4,
                       threads=1)
    first, _, report = warm_up(cfg, log=lambda _: None)
    second, _, _ = warm_up(cfg, log=lambda _: None)
    assert report["steps"] == 3 and 0.0 <= report["eval_greedy_accuracy"] <= 1.0
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    fresh = build_tiny_model(SMALL, build_char_tokenizer())
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), fresh.parameters()))
