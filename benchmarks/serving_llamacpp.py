"""What removing attention saves where models are served: llama.cpp (``llama-bench``), intact
against skip / linear / folded exports, side by side in one run. Writes ``--report`` (.md and .json).

    python benchmarks/serving_llamacpp.py --model qwen2.5-coder-0.5b \\
        --k 6=5,7,18,19,22,23 --k 8=3,5,7,15,18,19,22,23 --outtype f16,q8_0 \\
        --work runs/serving-qwen --report reports/serving/qwen2.5-coder-0.5b

Every export is a real one (``nose shrink --steps 0``; the linear and folded maps fitted on a
few standard-library rows: speed does not depend on what the maps hold), converted by
``nose gguf``. Each GGUF runs in its own ``llama-bench`` processes (2 threads, f16 KV cache, one
repetition a round): prefill tokens/s of ``--prompt`` tokens, decode tokens/s of ``--gen`` tokens
after a context of ``--depth`` tokens; llama.cpp's own log gives the KV-cache size (bytes per
token), the process's peak RSS is read from the kernel (its largest context). The models run one
after another, round by round (``--rounds``), so drift hits all of them; the report gives the
median of the rounds.

``--one-prefill`` measures with llama.cpp's ``llama-batched-bench`` instead (built on first use):
each ``--prompt`` length is prefilled once and timed, then ``--gen`` tokens are decoded at that
depth and timed, where ``llama-bench`` prefills the context of a decode test again, untimed. The
same two figures at half the work: at 8,192 tokens on two cores a 6.7B prefill takes half an
hour.

``--shape opencodeinterpreter-6.7b`` measures random weights of that shape instead of a model
(built and exported in bf16 straight from the config, the k deepest-but-one layers removed;
``--k 8 --k 16``). Every step's output is kept under ``--work``: a stopped run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving_speed import SHAPES  # noqa: E402
from nose.engines.llamacpp import build, tool  # noqa: E402
from nose.files import atomic_file  # noqa: E402
from nose.provenance import cpu  # noqa: E402

KV_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells")


def nose(*args) -> None:
    done = subprocess.run([sys.executable, "-m", "nose", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"nose {' '.join(map(str, args[:1]))} failed: {done.stderr.strip()[-1500:]}")


def parse_k(text: str) -> tuple[int, list[int] | None]:
    k, _, layers = text.partition("=")
    return int(k), [int(x) for x in layers.split(",")] if layers else None


def shape_model(name: str, folder: Path) -> Path:
    """A random-weight bf16 checkpoint of a real shape (see serving_speed.SHAPES), written once.

    Its tokenizer is SmolLM2's (the preset): llama.cpp's converter accepts only byte-level BPE
    vocabularies it recognises, and the shape's own (deepseek-coder's) is not fetched offline. Where
    that vocabulary is larger than the shape's, the embedding and head grow to hold it (the 6.7B
    shape: 32,256 → 49,152 rows, +1 % parameters)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from nose.model.loading import resolve_model

    if (folder / "config.json").exists():
        return folder
    tokenizer = resolve_model("smollm2-135m", log=lambda m: None).load_tokenizer()
    fields = dict(SHAPES[name])
    fields["vocab_size"] = max(fields["vocab_size"], len(tokenizer))
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
        for name_, b in model.named_buffers():  # rotary inverse frequencies
            if "inv_freq" in name_:
                b.copy_(model.model.rotary_emb.inv_freq)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def exports(args, work: Path) -> Iterator[tuple[str, Path]]:
    """(name, checkpoint folder): the intact model, then one export per k and replacement, each
    made only when asked for, so that :func:`ggufs` converts (and, for a shape, deletes) one before
    the next is written: the 6.7B shape's bf16 exports are 12–13 GB each."""
    if args.shape:
        base = shape_model(args.shape, work / "checkpoints" / "intact")
    else:
        from nose.model.presets import PRESETS, materialize

        base = Path(materialize(PRESETS[args.model])) if args.model in PRESETS else Path(args.model)
    yield "intact", base
    layers_total = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    for k, layers in args.k:
        layers = layers or list(range(layers_total - 1 - k, layers_total - 1))
        for replace in args.replace:
            out = work / "checkpoints" / f"k{k}-{replace}"
            if not out.exists():
                print(f"export k = {k} {replace}: layers {','.join(map(str, layers))}", flush=True)
                nose("shrink", "--model", base, "--layers", ",".join(map(str, layers)), "--replace", replace,
                     "--steps", 0, "--data", "stdlib", "--fit-samples", 16, "--fit-seq-len", 128,
                     *(["--dtype", "bfloat16"] if args.shape else []), "--out", out)
            yield f"k{k}-{replace}", out


def ggufs(models: Iterable[tuple[str, Path]], outtypes: list[str], work: Path,
          keep_checkpoints: bool) -> dict[str, Path]:
    out = {}
    for name, folder in models:
        for outtype in outtypes:
            path = work / "gguf" / f"{name}-{outtype}.gguf"
            if not path.exists():
                print(f"convert {name} to {outtype}", flush=True)
                nose("gguf", folder, "--out", path, "--outtype", outtype)
            out[f"{name} {outtype}"] = path
        if not keep_checkpoints and name != "intact" and folder.is_relative_to(work):
            shutil.rmtree(folder)
            folder.mkdir()  # an empty folder marks the export as done and converted
    return out


def same_graph(files: dict[str, Path]) -> dict[str, str]:
    """Folded exports whose GGUF holds the same tensors (names and types) as the skip export of
    the same k: the same graph, so llama.cpp runs them at the same speed; measured once."""
    from nose.shrink.gguf import describe

    same = {}
    for name, path in files.items():
        twin = name.replace("-folded ", "-skip ")
        if twin != name and twin in files:
            if describe(path)["tensors"] != describe(files[twin])["tensors"]:
                sys.exit(f"{name} and {twin} hold different tensors; measure both")
            same[name] = twin
    return same


def run_measured(argv: list[str], out, err, every: float = 0.05) -> tuple[int, int]:
    """Run ``argv``; its exit code and the peak resident memory of its own address space, in bytes.

    The peak is the child's ``VmHWM`` (the kernel's high-water mark of its RSS), read from
    ``/proc`` every ``every`` seconds until it exits: the mark only grows, so the last reading is
    the peak up to that moment. ``wait4``'s ``ru_maxrss`` would not do: Linux carries a process's
    high-water mark across ``exec`` into the program it runs, so a child forked from a large
    Python process reports at least the parent's size (every model of an f16 run read 5,490 MB)."""
    proc = subprocess.Popen(argv, stdout=out, stderr=err)
    status, peak = Path(f"/proc/{proc.pid}/status"), 0
    while proc.poll() is None:
        try:
            hwm = [line for line in status.read_text().splitlines() if line.startswith("VmHWM:")]
        except OSError:  # exited between the poll and the read
            hwm = []
        if hwm:
            peak = max(peak, int(hwm[0].split()[1]) * 1024)
        time.sleep(every)
    return proc.returncode, peak


def bench(engine, gguf: Path, args, scratch: Path) -> dict:
    """One repetition of every test on ``gguf``: prefill and decode each in its own llama-bench
    process, or both in one llama-batched-bench process (``--one-prefill``); peak RSS read from the
    kernel by :func:`run_measured`, the KV-cache size from llama.cpp's log."""
    if args.one_prefill:
        tests = [[str(tool("llama-batched-bench")), "-m", str(gguf), "-t", str(args.threads), "-tb", str(args.threads),
                  "-c", str(max(args.prompt) + args.gen), "-b", "2048", "-ub", "512", "-ctk", "f16", "-ctv", "f16",
                  "-npp", ",".join(map(str, args.prompt)), "-ntg", str(args.gen), "-npl", "1", "--output-format", "jsonl", "-v"]]  # -v: the KV-cache line
    else:
        common = [str(engine.bench), "-m", str(gguf), "-t", str(args.threads), "-r", "1", "-o", "json", "-v",
                  "--no-warmup", "-ctk", "f16", "-ctv", "f16"]
        tests = [[*common, "-p", ",".join(map(str, args.prompt)), "-n", "0"],
                 [*common, "-p", "0", "-n", str(args.gen), "-d", ",".join(map(str, args.depth))]]
    rows, kv, rss = [], {}, 0
    for argv in tests:
        with open(scratch / "stdout", "w+") as out, open(scratch / "stderr", "w+") as err:
            code, peak = run_measured(argv, out, err)
            out.seek(0), err.seek(0)
            stdout, stderr = out.read(), err.read()
        if code != 0:
            sys.exit(f"{Path(argv[0]).name} failed on {gguf}: {stderr.strip()[-1500:]}")
        rows += batched_rows(stdout) if args.one_prefill else json.loads(stdout)
        for size, cells in KV_LINE.findall(stderr):
            kv[int(cells)] = float(size) * 2**20
        rss = max(rss, peak)
    cells = max(kv) if kv else None
    return {"rows": [{"n_prompt": r["n_prompt"], "n_gen": r["n_gen"], "n_depth": r.get("n_depth", 0),
                      "seconds": r["samples_ns"][0] / 1e9} for r in rows],
            "kv_bytes_per_token": kv[cells] / cells if cells else None, "peak_rss": rss}


def batched_rows(stdout: str) -> list[dict]:
    """llama-batched-bench's JSONL lines as llama-bench rows: per prompt length, its prefill and the decode
    after it (``samples_ns`` as llama-bench writes it)."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rows += [{"n_prompt": r["pp"], "n_gen": 0, "n_depth": 0, "samples_ns": [r["t_pp"] * 1e9]},
                     {"n_prompt": 0, "n_gen": r["tg"], "n_depth": r["pp"], "samples_ns": [r["t_tg"] * 1e9]}]
    if not rows:
        sys.exit(f"llama-batched-bench printed no result: {stdout.strip()[-500:]}")
    return rows


def run_rounds(files: dict[str, Path], args, work: Path) -> list[dict]:
    """``--rounds`` rounds, each every GGUF in turn; resumes from ``work/rounds-<grid>.json``.

    A run stopped in a later round is summarized from its first ``--rounds`` rounds: rerun it
    with ``--rounds`` set to the number of rounds that completed."""
    engine = build()
    grid = f"p{','.join(map(str, args.prompt))}-d{','.join(map(str, args.depth))}-g{args.gen}-t{args.threads}"
    grid += "-one-prefill" if args.one_prefill else ""
    path = work / f"rounds-{grid}.json"
    rounds: list[dict] = json.loads(path.read_text()) if path.exists() else []
    for r in range(args.rounds):
        if r == len(rounds):
            rounds.append({})
        for name, gguf in files.items():
            if name not in rounds[r]:
                print(f"round {r + 1}/{args.rounds}: {name}", flush=True)
                rounds[r][name] = bench(engine, gguf, args, work)
                with atomic_file(path) as f:
                    f.write(json.dumps(rounds, indent=1))
    return rounds[:args.rounds]


def summarize(rounds: list[dict], files: dict[str, Path]) -> dict:
    """Per GGUF: median tokens/s of each test over the rounds, file size, KV bytes/token, peak RSS."""
    out = {}
    for name, gguf in files.items():
        runs = [r[name] for r in rounds]
        tests = {}
        for i, row in enumerate(runs[0]["rows"]):
            label = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}@{row['n_depth']}"
            tokens = row["n_prompt"] or row["n_gen"]
            speeds = [tokens / run["rows"][i]["seconds"] for run in runs]
            tests[label] = {"tokens_per_s": statistics.median(speeds), "min": min(speeds), "max": max(speeds)}
        out[name] = {"tests": tests, "file_bytes": gguf.stat().st_size,
                     "kv_bytes_per_token": runs[0]["kv_bytes_per_token"],
                     "peak_rss": statistics.median(run["peak_rss"] for run in runs)}
    return out


def table(summary: dict, outtype: str) -> list[str]:
    """Markdown: one row per model of this outtype, each test as tokens/s and ratio to intact."""
    names = [n for n in summary if n.endswith(f" {outtype}")]
    base = summary[f"intact {outtype}"]
    tests = list(base["tests"])
    lines = ["| model | " + " | ".join(tests) + " | KV bytes/token | file MB | peak RSS MB |",
             "|---|" + "---:|" * (len(tests) + 3)]
    for n in names:
        s = summary[n]
        cells = [f"{s['tests'][t]['tokens_per_s']:.1f} ({s['tests'][t]['tokens_per_s'] / base['tests'][t]['tokens_per_s']:.2f}×)"
                 for t in tests]
        kv = s["kv_bytes_per_token"]
        lines.append(f"| {n.rsplit(' ', 1)[0]} | " + " | ".join(cells) +
                     f" | {kv:,.0f} ({kv / base['kv_bytes_per_token']:.2f}×) | {s['file_bytes'] / 1e6:,.0f} "
                     f"({s['file_bytes'] / base['file_bytes']:.2f}×) | {s['peak_rss'] / 1e6:,.0f} "
                     f"({s['peak_rss'] / base['peak_rss']:.2f}×) |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="a preset name or a transformers model folder")
    what.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape")
    parser.add_argument("--k", action="append", type=parse_k, required=True,
                        help="K=L1,L2,...: remove these K attention sublayers (repeatable); K alone: the K "
                             "deepest but the last")
    parser.add_argument("--replace", type=lambda s: s.split(","), default=["skip", "linear", "folded"])
    parser.add_argument("--outtype", type=lambda s: s.split(","), default=["f16", "q8_0"])
    parser.add_argument("--prompt", type=lambda s: [int(x) for x in s.split(",")], default=[512, 2048, 8192])
    parser.add_argument("--depth", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="decode contexts (default 0,512,2048,8192; with --one-prefill: the --prompt lengths)")
    parser.add_argument("--one-prefill", action="store_true",
                        help="llama-batched-bench: decode at each prompt length after its timed prefill")
    parser.add_argument("--gen", type=int, default=32, help="decode tokens per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True, help="exports, GGUFs and raw timings (resumable)")
    parser.add_argument("--report", type=Path, required=True, help="writes REPORT.md and REPORT.json")
    args = parser.parse_args()
    if args.one_prefill and args.depth is not None:
        parser.error("--one-prefill decodes after each --prompt length: leave out --depth")
    args.depth = args.prompt if args.one_prefill else args.depth or [0, 512, 2048, 8192]
    args.work.mkdir(parents=True, exist_ok=True)
    files = ggufs(exports(args, args.work), args.outtype, args.work, keep_checkpoints=not args.shape)
    same = same_graph(files)
    files = {name: path for name, path in files.items() if name not in same}
    rounds = run_rounds(files, args, args.work)
    summary = summarize(rounds, files)
    program = "llama-batched-bench (one prefill per context)" if args.one_prefill else "llama-bench"
    engine_info = {"engine": f"llama.cpp b11434 {program}", "threads": args.threads, "kv_cache": "f16",
                   "rounds": args.rounds, "cpu_cores": os.cpu_count(), "cpu": cpu()}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/serving_llamacpp.py " + " ".join(sys.argv[1:])
    with atomic_file(args.report.with_name(args.report.name + ".json")) as f:
        f.write(json.dumps({"command": command, "setup": engine_info, "models": summary, "same_graph": same,
                            "rounds": rounds},
                           indent=1) + "\n")
    lines = [f"`{command}`", "", ", ".join(f"{k}: {v}" for k, v in engine_info.items()), "",
             *(f"{a} holds the same tensors as {b} (checked): the same graph, measured once as {b}." for a, b in
               same.items()), ""]
    for outtype in args.outtype:
        lines += [f"### {outtype}", "", *table(summary, outtype), ""]
    with atomic_file(args.report.with_name(args.report.name + ".md")) as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
