"""tools/gen_llama.py: the generated LLaMA-shaped models run in ONNX Runtime, keep their weights
in external data, and onnxprune finds their heads and FFN channels."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import gen_llama
from onnxprune import analyze, cli

TINY = gen_llama.PRESETS["tiny"]


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "tiny.onnx"
    gen_llama.generate(str(path), TINY)
    return path


def test_weights_are_external_and_aligned(tiny):
    model = onnx.load(str(tiny), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert {t.name for t in external} >= {"model.embed_tokens.weight", "lm_head.weight",
                                         "model.layers.1.mlp.down_proj.weight"}
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        assert info["location"] == "tiny.onnx.data" and int(info["offset"]) % gen_llama.ALIGN == 0
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name.endswith(".weight"))
    assert params == TINY.params()
    onnx.checker.check_model(str(tiny), full_check=True)


def test_one_cached_step_equals_the_full_sequence(tiny):
    """Prefix of 5 tokens, then token 6 with the cache: its logits equal those of one 6-token run."""
    sess = _session(tiny)
    feeds = gen_llama.sample_feeds(TINY, batch=2, seq=6, seed=3)
    full = sess.run(None, feeds)
    prefix = {k: v[:, :5] for k, v in feeds.items()}
    first = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, prefix)))
    step = {"input_ids": feeds["input_ids"][:, 5:], "position_ids": feeds["position_ids"][:, 5:],
            "attention_mask": feeds["attention_mask"]}
    step.update({k.replace("present", "past_key_values"): v for k, v in first.items() if k.startswith("present")})
    last = sess.run(None, step)
    assert last[0].shape == (2, 1, TINY.vocab) and last[1].shape == (2, TINY.kv_heads, 6, TINY.hd)
    np.testing.assert_allclose(last[0][:, 0], full[0][:, 5], atol=1e-4)
    assert np.abs(full[0][:, 5] - full[0][:, 4]).max() > 1e-2  # the positions do differ


@pytest.mark.parametrize("changes", [dict(cache=False, tied=True), dict(dtype="float16", kv_heads=1)],
                         ids=["no_cache_tied", "fp16_mqa"])
def test_variants_run(tmp_path, changes):
    cfg = dataclasses.replace(TINY, **changes)
    path = tmp_path / "m.onnx"
    gen_llama.generate(str(path), cfg)
    out = _session(path).run(None, gen_llama.sample_feeds(cfg, batch=1, seq=3, past=2 if cfg.cache else 0))
    assert out[0].dtype == cfg.np_dtype and out[0].shape == (1, 3, cfg.vocab) and np.isfinite(out[0]).all()


def test_ffn_stack_preset_shape(tmp_path):
    cfg = dataclasses.replace(gen_llama.PRESETS["ffn-stack"], hidden=32, ffn=64, layers=2)
    path = tmp_path / "ffn.onnx"
    gen_llama.generate(str(path), cfg)
    (y,) = _session(path).run(None, gen_llama.sample_feeds(cfg, batch=1, seq=2))
    assert y.shape == (1, 2, 32) and np.isfinite(y).all()
    assert gen_llama.PRESETS["ffn-stack"].params() == 6 * 2 * 4096 * 11008  # 541M: the 2.16 GB benchmark
    assert abs(gen_llama.PRESETS["7b"].params() * 2 / 1e9 - 13.5) < 0.1


def test_onnxprune_finds_heads_and_ffn_channels_and_verifies(tmp_path, capsys):
    cfg = dataclasses.replace(TINY, cache=False)
    path = tmp_path / "nc.onnx"
    gen_llama.generate(str(path), cfg)
    shapes = {n: (1, 8) for n in ("input_ids", "attention_mask", "position_ids")}
    groups = analyze(str(path), shapes).prunable
    heads = [g for g in groups if "attention heads" in g.kinds and g.exact]
    ffn = [g for g in groups if g.exact and g.size == cfg.ffn]
    assert len(heads) == len(ffn) == cfg.layers
    assert all(g.unit_count == cfg.kv_heads for g in heads)
    flags = [a for n in shapes for a in ("--input-shape", f"{n}:1,8")]
    assert cli.main(["verify", str(path), "--ratio", "0.5", *flags]) == 0
    assert "oracle PASSED" in capsys.readouterr().out
