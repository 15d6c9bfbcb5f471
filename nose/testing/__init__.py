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


# Eight samples written for the tests (two per G-TransEval type), in the benchmark's upstream
# layout, so harness and evaluation tests run on a clone with nothing beside it. None of them is
# taken from the benchmark. Each: (Java line, Python line, name, param types, return type, 5 cases).
_TINY_SAMPLES = {
    1: [("public static int triple_sum ( int a , int b , int c ) { return a + b + c ; }",
         "def triple_sum ( a , b , c ) : NEW_LINE INDENT return a + b + c NEW_LINE DEDENT",
         "triple_sum", ["int", "int", "int"], "int",
         [(["1", "2", "3"], "6"), (["0", "0", "0"], "0"), (["-1", "5", "2"], "6"), (["10", "20", "30"], "60"),
          (["7", "7", "7"], "21")]),
        ("public static boolean is_even ( int n ) { return n % 2 == 0 ; }",
         "def is_even ( n ) : NEW_LINE INDENT return n % 2 == 0 NEW_LINE DEDENT",
         "is_even", ["int"], "bool",
         [(["4"], "true"), (["7"], "false"), (["0"], "true"), (["-2"], "true"), (["13"], "false")])],
    2: [("public static int sum_to ( int n ) { int total = 0 ; for ( int i = 1 ; i <= n ; i ++ ) { total += i ; } "
         "return total ; }",
         "def sum_to ( n ) : NEW_LINE INDENT total = 0 NEW_LINE for i in range ( 1 , n + 1 ) : NEW_LINE INDENT "
         "total += i NEW_LINE DEDENT return total NEW_LINE DEDENT",
         "sum_to", ["int"], "int",
         [(["1"], "1"), (["4"], "10"), (["10"], "55"), (["0"], "0"), (["100"], "5050")]),
        ("public static double average_of_two ( double a , double b ) { return ( a + b ) / 2.0 ; }",
         "def average_of_two ( a , b ) : NEW_LINE INDENT return ( a + b ) / 2.0 NEW_LINE DEDENT",
         "average_of_two", ["double", "double"], "double",
         [(["1.0", "3.0"], "2.0"), (["2.5", "2.5"], "2.5"), (["-1.0", "1.0"], "0.0"), (["0.5", "0.25"], "0.375"),
          (["10.0", "5.0"], "7.5")])],
    3: [('public static String shout ( String s ) { return s . toUpperCase ( ) + "!" ; }',
         'def shout ( s ) : NEW_LINE INDENT return s . upper ( ) + "!" NEW_LINE DEDENT',
         "shout", ["string"], "string",
         [(["hi"], "HI!"), (["abc"], "ABC!"), ([""], "!"), (["x y"], "X Y!"), (["Ok"], "OK!")]),
        ("public static int largest ( int [ ] values ) { return Arrays . stream ( values ) . max ( ) . getAsInt ( ) ; }",
         "def largest ( values ) : NEW_LINE INDENT return max ( values ) NEW_LINE DEDENT",
         "largest", ["[int]"], "int",
         [([["1", "5", "3"]], "5"), ([["-4", "-2"]], "-2"), ([["9"]], "9"), ([["0", "0", "1"]], "1"),
          ([["12", "40", "7", "40"]], "40")])],
    4: [("public static long count_even ( int [ ] xs ) { return Arrays . stream ( xs ) . filter ( x -> x % 2 == 0 ) "
         ". count ( ) ; }",
         "def count_even ( xs ) : NEW_LINE INDENT return sum ( 1 for x in xs if x % 2 == 0 ) NEW_LINE DEDENT",
         "count_even", ["[int]"], "int",
         [([["1", "2", "4"]], "2"), ([["3", "5"]], "0"), ([[]], "0"), ([["0", "-2", "7"]], "2"),
          ([["8", "8", "8", "8"]], "4")]),
        ("public static List < Integer > squares ( int n ) { return IntStream . range ( 0 , n ) . map ( i -> i * i ) "
         ". boxed ( ) . collect ( Collectors . toList ( ) ) ; }",
         "def squares ( n ) : NEW_LINE INDENT return [ i * i for i in range ( n ) ] NEW_LINE DEDENT",
         "squares", ["int"], "[int]",
         [(["3"], ["0", "1", "4"]), (["0"], []), (["1"], ["0"]), (["5"], ["0", "1", "4", "9", "16"]),
          (["2"], ["0", "1"])])],
}


def write_tiny_benchmark(root: Path) -> Path:
    """A tiny benchmark in G-TransEval's upstream layout (8 samples of our own); returns ``root``."""
    import json

    root = Path(root)
    for k, samples in _TINY_SAMPLES.items():
        folder = root / "G-TransEval" / f"Type{k}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Java.test").write_text("".join(s[0] + "\n" for s in samples))
        (folder / "Python.test").write_text("".join(s[1] + "\n" for s in samples))
        questions = [{"name": name, "paramsType": params, "returnType": ret,
                      "tests": [{"params": p, "return": r} for p, r in cases]}
                     for _, _, name, params, ret, cases in samples]
        config = root / "TestRunner" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / f"l{k}.json").write_text(json.dumps({"name": f"l{k}", "questions": questions}))
    return root
