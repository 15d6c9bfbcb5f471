"""Tiny random models of real families, for tests and examples (no download needed).

The tokenizer is a real byte-level BPE trained in-process on a few lines, so saved folders
load through ``AutoTokenizer`` exactly like a downloaded model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512, max_position_embeddings=256)


def tiny_config(family: str, **overrides):
    kw = dict(TINY, **overrides)
    if family == "qwen3":
        kw.setdefault("head_dim", kw["hidden_size"] // kw["num_attention_heads"])
    return AutoConfig.for_model(family, **kw)


def tiny_model(family: str = "llama", seed: int = 0, **overrides) -> torch.nn.Module:
    """A randomly initialised causal LM of ``family`` in fp32 eval mode.

    The init scale is raised above transformers' default so that layers differ visibly and
    greedy decoding has clear argmax margins.
    """
    torch.manual_seed(seed)
    cfg = tiny_config(family, initializer_range=0.2, **overrides)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model.eval()


def tiny_tokenizer(vocab_size: int = TINY["vocab_size"]) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n",
              "public static int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }"] * 20
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def save_tiny(path: Path, family: str = "llama", seed: int = 0, **overrides) -> Path:
    tok = tiny_tokenizer()
    model = tiny_model(family, seed=seed, vocab_size=len(tok), **overrides)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)


def tiny_loaded(family: str = "llama", tokenizer=None, seed: int = 0):
    """A tiny random model of ``family`` wrapped as a :class:`~nose.model.loading.LoadedModel`."""
    from nose.model.loading import from_module

    tokenizer = tokenizer or tiny_tokenizer()
    return from_module(tiny_model(family, seed=seed, vocab_size=len(tokenizer)), tokenizer)
