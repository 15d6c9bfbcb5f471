"""Which cheap screen predicts the exact kl-under-linear score? step 1 and 2 of a recorded search."""
import json, sys, time
import numpy as np, torch
from nose.model.loading import load_model, resolve_model
from nose.data.transcripts import data_source, resolve_source
from nose.data.calibration import build_calibration
from nose.replace.ridge import _layer_inputs, _heldout_rows
from nose.model.switches import attention_switched
def spearmanr(a, b):
    ra = np.argsort(np.argsort(a)); rb = np.argsort(np.argsort(b)); return (np.corrcoef(ra, rb)[0, 1],)

model, rec_path, samples, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rec = json.load(open(rec_path))
ref = resolve_model(model); tok = ref.load_tokenizer()
lm = load_model(ref, tokenizer=tok)
src = resolve_source(data_source("auto", tok), lm, needed=samples)
calib = build_calibration(tok, src, samples=samples, seq_len=seq, seed=0)
print(calib.describe()["token_ids_sha256"] == rec["calibration"]["token_ids_sha256"])
from nose.search.greedy import candidate_replacements
from nose.search.config import SearchConfig
cfg = SearchConfig(criterion="kl", mode="linear")
dec = lm.adapter.layers_of(lm.model)
for step in rec["steps"][:3]:
    state = {}
    for i in step["removed_before"]:
        state[i] = candidate_replacements(lm, calib, state, [i], cfg)[0][i]
    cands = [c["layer"] for c in step["candidates"]]
    exact = {c["layer"]: c["score"] for c in step["candidates"]}
    fitted, rel = candidate_replacements(lm, calib, state, cands, cfg)
    # one pass: per candidate absolute heldout error of its map, residual energy, layer-output change
    absd = {i: 0.0 for i in cands}; xe = {i: 0.0 for i in cands}; outd = {i: 0.0 for i in cands}; oute = {i: 0.0 for i in cands}
    t0 = time.time()
    with torch.no_grad(), attention_switched(lm.model, state, adapter=lm.adapter):
        for start, batch in zip(range(0, calib.samples, 4), calib.batches(4, "token")):
            inputs, kwargs, _ = _layer_inputs(lm, batch, set(cands))
            real = batch.attention_mask.bool()
            heldout = _heldout_rows(start, batch.size, 4, "cpu")
            real = real & heldout[:, None]
            for i in cands:
                x = inputs[i]; layer = dec[i]
                n = lm.adapter.attn_norm_of(layer)(x)
                a = lm.adapter.attention_of(layer)(n, **kwargs[i])[0]
                pred = fitted[i].linear_attn(n)
                r = (a - pred)[real]
                absd[i] += float((r.double() ** 2).sum()); xe[i] += float((x[real].double() ** 2).sum())
                # layer output with attention vs with the map
                mlp = layer.get_submodule(lm.adapter.mlp); post = layer.post_attention_layernorm
                h1 = x + a; o1 = h1 + mlp(post(h1))
                h2 = x + pred; o2 = h2 + mlp(post(h2))
                outd[i] += float(((o1 - o2)[real].double() ** 2).sum()); oute[i] += float((o1[real].double() ** 2).sum())
    print("pass", time.time() - t0)
    screens = {"rel": rel, "abs": absd, "abs/x": {i: absd[i] / xe[i] for i in cands},
               "out/o": {i: outd[i] / oute[i] for i in cands}}
    ex = [exact[i] for i in cands]; win = step["selected"]
    for name, s in screens.items():
        order = sorted(cands, key=lambda i: s[i])
        print(f"step {step['step']} {name:6s} spearman {spearmanr([s[i] for i in cands], ex)[0]:+.2f} winner rank {order.index(win)+1} top5 {order[:5]}")
    print("exact top5", sorted(cands, key=lambda i: exact[i])[:5])
