"""vLLM serves nose's no-op exports (skip and folded) with the tokens transformers decodes.

Needs a CUDA device and ``pip install vllm``; without them every test here is skipped, saying
why (the CPU machines never run it; the closing notes say when it last ran). vLLM reads
DeciLM checkpoints through its ``nemotron_nas`` model: ``no_op`` attention blocks get no KV
cache. Linear blocks are refused by ``nose evaluate --backend vllm`` and are not served.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("vLLM needs a CUDA device; none here", allow_module_level=True)
vllm = pytest.importorskip("vllm", reason="pip install vllm to run the vLLM serving tests")

PROMPTS = ["def fibonacci(n):\n", "public static int gcd(int a, int b) {\n", "# Sort a list of words by length\n",
           "import os\n\ndef list_python_files(folder):\n"]
LAYERS = "12,15,18,21,24,27"  # SmolLM2-135M, k = 6 of 30, as in tests/test_llamacpp.py


def _export(replace: str, out) -> str:
    done = subprocess.run([sys.executable, "-m", "nose", "shrink", "--model", "smollm2-135m", "--layers", LAYERS,
                           "--replace", replace, "--steps", "0", "--data", "stdlib", "--fit-samples", "32",
                           "--fit-seq-len", "128", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return str(out)


def _transformers_greedy(path: str, n: int) -> list[list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.float32).cuda().eval()
    result = []
    for p in PROMPTS:
        ids = torch.tensor([tok(p)["input_ids"]], device="cuda")
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.eos_token_id)
        result.append(out[0, ids.shape[1]:].tolist())
    return result


@pytest.mark.slow
@pytest.mark.parametrize("replace", ["skip", "folded"])
def test_vllm_greedy_tokens_equal_transformers_on_no_op_exports(replace, tmp_path):
    path = _export(replace, tmp_path / replace)
    llm = vllm.LLM(model=path, dtype="float32", trust_remote_code=True, enforce_eager=True,
                   gpu_memory_utilization=0.3)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    served = [r.outputs[0].token_ids for r in llm.generate(PROMPTS, params)]
    reference = _transformers_greedy(path, 32)
    for got, want in zip(served, reference):
        assert list(got)[:len(want)] == want[:len(got)] and len(got) == 32
