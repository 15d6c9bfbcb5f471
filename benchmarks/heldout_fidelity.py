"""Score removal orders or checkpoints on held-out transcripts, to choose settings without G-TransEval.

With ``--orders``: for each order (a ``search.json``, optionally ``label=path``) and each k, the
first k layers of the order are switched off (``skip``). With ``--checkpoints``: each exported
checkpoint (``label=folder``) as it is. Either is compared, teacher-forced, with the intact
``--model`` on the held-out split of the self-distilled transcripts (:mod:`nose.evaluate.fidelity`):
mean KL in nats per answer token and top-1 agreement. With ``--generate`` also the share of
held-out answers each one re-generates as the same program as the intact model
(:func:`nose.evaluate.fidelity.same_programs`; the intact model's own re-generation is the first
row, the floor set by batching). Writes a JSON file and prints a markdown table.

    python benchmarks/heldout_fidelity.py --model qwen2.5-coder-0.5b --k 3,6,8 \\
        --orders kl=runs/search-kl,cos=runs/search-cosine --out runs/heldout.json
    python benchmarks/heldout_fidelity.py --checkpoints lin=runs/k6-linear,heal=runs/k6-repaired --generate \\
        --out runs/h.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nose.data.transcripts import resolve_source  # noqa: E402
from nose.evaluate.fidelity import fidelity, same_programs  # noqa: E402
from nose.evaluate.sweep import Order, check_sweep  # noqa: E402
from nose.files import write_json_atomic  # noqa: E402
from nose.model.loading import load_model  # noqa: E402
from nose.model.switches import attention_switched  # noqa: E402
from nose.data.calibration import build_calibration  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--orders", help="comma-separated [label=]path of search.json files")
    ap.add_argument("--checkpoints", help="comma-separated label=folder of exported checkpoints")
    ap.add_argument("--k", default="3,6,8")
    ap.add_argument("--data", default="translate:heldout", help="held-out chat data (default: the transcripts' "
                                                                "held-out split)")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seq-len", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--generate", action="store_true", help="also re-generate the held-out answers (checkpoints)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.generate and not args.checkpoints:
        ap.error("--generate re-generates with exported checkpoints; pass --checkpoints")

    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    source = resolve_source(args.data, lm, log=print)
    calib = build_calibration(lm.tokenizer, source, samples=args.samples, seq_len=args.seq_len, count="answer")
    if args.checkpoints:
        records = [json.loads(line) for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [{"checkpoint": "intact", "path": args.model, "removed": [], "kl": 0.0, "agreement": 1.0,
                 **same_programs(lm, records, {"intact": contextlib.nullcontext})["intact"]}] if args.generate else []
        for spec in args.checkpoints.split(","):
            label, _, folder = spec.partition("=")
            other = load_model(folder, dtype=args.dtype, device=args.device)
            result = fidelity(other, calib, {label: contextlib.nullcontext}, args.batch_size, reference=lm)[label]
            if args.generate:
                result |= same_programs(other, records, {label: contextlib.nullcontext})[label]
            rows.append({"checkpoint": label, "path": folder, "removed": other.absent_attention(), **result})
            del other
            write_json_atomic(args.out, {"model": lm.provenance(), "data": args.data, "calibration": calib.describe(),
                                         "rows": rows})
        print("| checkpoint | KL [nats/token] | agreement | same program |\n|---|---:|---:|---:|")
        for r in rows:
            cell = f"{100 * r['same_program']:.1f} %" if "same_program" in r else "—"
            print(f"| {r['checkpoint']} | {r['kl']:.4f} | {100 * r['agreement']:.1f} % | {cell} |")
        return
    orders = [Order.parse(spec) for spec in args.orders.split(",")]
    ks = [int(k) for k in args.k.split(",")]
    check_sweep(orders, ks, lm.weights_sha256)  # a k beyond an order's length, or another model's order
    variants = {f"{o.label} k={k}": (lambda layers=list(o.layers[:k]): attention_switched(lm.model, layers))
                for o in orders for k in ks}
    results = fidelity(lm, calib, variants, args.batch_size)
    rows = [{"order": o.label, "k": k, "layers": list(o.layers[:k]), **results[f"{o.label} k={k}"]}
            for o in orders for k in ks]
    write_json_atomic(args.out, {"model": lm.provenance(), "data": args.data, "calibration": calib.describe(),
                                 "rows": rows})
    print(f"| order | {' | '.join(f'k={k} KL / agree' for k in ks)} |\n|---|" + "---:|" * len(ks))
    for o in orders:
        cells = [f"{r['kl']:.3f} / {100 * r['agreement']:.1f} %" for r in rows if r["order"] == o.label]
        print(f"| {o.label} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
