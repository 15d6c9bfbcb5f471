import torch

from benchmarks.serving_speed import random_shape_models
from nose.evaluate.efficiency import kv_cache_bytes_per_token, parameter_counts

SHAPE = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=96, max_position_embeddings=128, rms_norm_eps=1e-6,
             rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0})


def test_random_shape_variants_are_real_exports(tmp_path):
    seen = []
    for name, spec, lm in random_shape_models(SHAPE, [0, 2], "cpu", torch.float32, tmp_path):
        seen.append((name, lm.model.config.model_type, kv_cache_bytes_per_token(lm.model, lm.adapter),
                     parameter_counts(lm.model, lm.adapter)["attention_parameters"]))
        ids = torch.randint(0, 96, (1, 8))
        assert lm.model(input_ids=ids).logits.shape == (1, 8, 96)
    (n0, type0, kv0, attn0), (n2, type2, kv2, attn2) = seen
    assert (n0, type0, n2, type2) == ("k=0", "llama", "k=2", "nemotron-nas")
    assert kv2 * 2 == kv0 and attn2 * 2 == attn0
    assert list(tmp_path.iterdir()) == []  # each export is deleted after its measurement
