"""The embedded model's character-level tokenizer.

One token per character of printable ASCII plus newline, and four special tokens. It is built
with the `tokenizers` library, saved as `tokenizer.json` and always loaded with
`transformers.PreTrainedTokenizerFast` (never `AutoTokenizer`: transformers 5.x maps a folder
with a qwen2 `config.json` to `Qwen2Tokenizer`, whose byte-level pre-tokenizer drops our spaces).

Ids: <pad>=0, <bos>=1, <eos>=2, <unk>=3, then the characters. Encoding a text prepends <bos>
(`add_special_tokens=True`, the transformers default); <eos> is never added by encoding, the
model emits it. Decoding is the exact inverse for any text within the vocabulary (spaces and
newlines included) because the decoder fuses characters and the space clean-up is off.

    python -m node.model.tokenizer OUT_DIR   # writes tokenizer.json + tokenizer_config.json
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# printable ASCII without the exotic whitespace (\t \r \x0b \x0c) plus newline
CHARS = "".join(ch for ch in string.printable if ch not in "\t\r\x0b\x0c")
# written into tokenizer_config.json; `is_char_tokenizer` looks for it
MARKER_KEY = "rankswarm_tokenizer"
MARKER_VALUE = "char-v1"


def _vocab(vocab_size: int | None = None) -> dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    if vocab_size is not None:
        if vocab_size < len(vocab):
            raise ValueError(f"vocab_size {vocab_size} is below the {len(vocab)} tokens the char tokenizer needs")
        # tokens no text encodes to (every character is its own token), decoded as <|id|>
        vocab.update({f"<|{i}|>": i for i in range(len(vocab), vocab_size)})
    return vocab


def build_char_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """Build the tokenizer in memory (deterministic: the vocabulary is fixed above).

    `vocab_size` pads the vocabulary with tokens that no text encodes to, so that a model with a
    real model's vocabulary (151,936 for Qwen2.5) can be built and run without its tokenizer
    (benchmarks, memory tests); encoding and decoding text are unchanged."""
    vocab = _vocab(vocab_size)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # every character is its own pre-token; `isolated` keeps them all, whitespace included
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return _wrap(core)


def _wrap(core: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        clean_up_tokenization_spaces=False, padding_side="left")


def save_char_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    """Write tokenizer.json and a tokenizer_config.json that carries our marker."""
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[MARKER_KEY] = MARKER_VALUE
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def is_char_tokenizer(folder: str | Path) -> bool:
    """True when `folder` holds our char tokenizer (marker in tokenizer_config.json)."""
    cfg_path = Path(folder) / "tokenizer_config.json"
    if not cfg_path.is_file() or not (Path(folder) / "tokenizer.json").is_file():
        return False
    try:
        return json.loads(cfg_path.read_text()).get(MARKER_KEY) == MARKER_VALUE
    except (json.JSONDecodeError, AttributeError):
        return False


def load_char_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """Load our tokenizer from `folder/tokenizer.json` with the special tokens set explicitly."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"no tokenizer.json in {folder}; write one with `python -m node.model.tokenizer {folder}`")
    return _wrap(Tokenizer.from_file(str(path)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m node.model.tokenizer OUT_DIR")
    save_char_tokenizer(build_char_tokenizer(), sys.argv[1])
