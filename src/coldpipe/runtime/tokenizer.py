"""A real tokenizer for random checkpoints: a byte-level BPE trained offline on a small bundled text.

``coldpipe make-checkpoint`` calls :func:`write_tokenizer` so that every random checkpoint serves text end to
end (``coldpipe serve``). The training text is ``coldpipe/data/tokenizer_text.txt`` (written for coldpipe, a
few KB); training takes milliseconds and needs no download. The files are the Hugging Face layout
(``tokenizer.json`` + ``tokenizer_config.json`` with a chat template), so ``AutoTokenizer.from_pretrained``
reads them, and every id is below the checkpoint's ``vocab_size``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from coldpipe.errors import InputError

__all__ = ["CHAT_TEMPLATE", "MIN_VOCAB", "SPECIAL_TOKENS", "load_tokenizer", "write_tokenizer"]

SPECIAL_TOKENS = ("<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")
MIN_VOCAB = 256 + len(SPECIAL_TOKENS) + 8  # the 256 bytes, the special tokens and a few merges
MAX_VOCAB = 4096  # the bundled text has far fewer merges than this anyway

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def training_text() -> str:
    return resources.files("coldpipe").joinpath("data/tokenizer_text.txt").read_text(encoding="utf-8")


def write_tokenizer(out_dir: str | Path, vocab_size: int) -> int:
    """Train the byte-level BPE with at most ``vocab_size`` ids and write it into ``out_dir``; its vocab size.

    Raises :class:`InputError` when ``vocab_size`` cannot hold the 256 bytes and the special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise InputError(
            "--vocab", f"{vocab_size} ids cannot hold a byte-level tokenizer", f"use --vocab >= {MIN_VOCAB}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab_size, MAX_VOCAB),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text().splitlines(keepends=True), trainer=trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin|>",
        "eos_token": "<|end|>",
        "pad_token": "<|end|>",
        "model_max_length": 1 << 30,
        "add_bos_token": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return int(tok.get_vocab_size())


def load_tokenizer(checkpoint: str | Path) -> Any:
    """The checkpoint's tokenizer (transformers' fast tokenizer), checked against its ``vocab_size``."""
    path = Path(checkpoint)
    if not (path / "tokenizer.json").is_file():
        raise InputError(
            "--checkpoint",
            f"{str(path)!r} has no tokenizer.json",
            "make the checkpoint with `coldpipe make-checkpoint` (it writes one), or add a tokenizer",
        )
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(path / "tokenizer.json"),
        **{
            k: v
            for k, v in json.loads((path / "tokenizer_config.json").read_text()).items()
            if k in ("bos_token", "eos_token", "pad_token", "chat_template", "model_max_length")
        }
        if (path / "tokenizer_config.json").is_file()
        else {},
    )
    vocab = int(json.loads((path / "config.json").read_text())["vocab_size"])
    if len(tok) > vocab:
        raise InputError(
            "--checkpoint",
            f"the tokenizer has {len(tok)} ids but the model's vocab_size is {vocab}",
            "use a tokenizer whose ids fit the model",
        )
    return tok
