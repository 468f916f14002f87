"""--prune-cache: attention and KV heads of a decoder with a KV cache (past_key_values.N.* in,
present.N.* out), pruned by changing the cache's heads axis; the oracle, the validation and a decode
step run with the new cache shapes. The decoder comes from tools/gen_llama.py (numpy + onnx)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import gen_llama
from onnxprune import PruneConfig, analyze, cache_io, cli

CFG = gen_llama.PRESETS["tiny"]  # 2 layers, 4 query heads, 2 KV heads of 16, FFN 128
PAST, SEQ = 3, 4


def _shapes() -> dict:
    shapes = {"input_ids": (1, SEQ), "attention_mask": (1, PAST + SEQ), "position_ids": (1, SEQ)}
    for layer in range(CFG.layers):
        for kind in ("key", "value"):
            shapes[f"past_key_values.{layer}.{kind}"] = (1, CFG.kv_heads, PAST, CFG.hd)
    return shapes


def _flags() -> list[str]:
    return [a for n, dims in _shapes().items() for a in ("--input-shape", f"{n}:{','.join(map(str, dims))}")]


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decoder")
    path = folder / "model.onnx"
    gen_llama.generate(str(path), CFG)
    genai = {"model": {"decoder": {"num_attention_heads": CFG.heads, "num_key_value_heads": CFG.kv_heads,
                                   "head_size": CFG.hd, "hidden_size": CFG.hidden}}}
    (folder / "genai_config.json").write_text(json.dumps(genai))
    return path


def _dims(model: onnx.ModelProto, name: str) -> list:
    vi = next(v for v in list(model.graph.input) + list(model.graph.output) if v.name == name)
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


def test_heads_freeze_without_the_flag_and_say_so(decoder, tmp_path, capsys):
    out = tmp_path / "a.onnx"
    assert cli.main([str(decoder), "-o", str(out), "--ratio", "0.5", *_flags()]) == 0
    text = capsys.readouterr().out
    assert "--prune-cache prunes them" in text and "signature changed" not in text
    assert _dims(onnx.load(str(out)), "past_key_values.0.key")[1] == CFG.kv_heads


def test_prune_cache_prunes_heads_and_ffn_and_rewrites_the_signature(decoder, tmp_path, capsys):
    out_dir = tmp_path / "pruned"
    out_dir.mkdir()
    out = out_dir / "model.onnx"
    assert cli.main([str(decoder), "-o", str(out), "--ratio", "0.5", "--prune-cache", *_flags()]) == 0
    text = capsys.readouterr().out
    assert "signature changed (8 KV-cache inputs / outputs" in text
    pruned = onnx.load(str(out))
    kv = CFG.kv_heads // 2
    for layer in range(CFG.layers):
        for kind in ("key", "value"):
            assert _dims(pruned, f"past_key_values.{layer}.{kind}") == ["batch_size", kv, "past_sequence_length",
                                                                       CFG.hd]
            assert _dims(pruned, f"present.{layer}.{kind}")[1] == kv
    weights = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert weights["model.layers.0.self_attn.k_proj.weight"] == [CFG.hidden, kv * CFG.hd]
    assert weights["model.layers.0.self_attn.q_proj.weight"] == [CFG.hidden, CFG.heads // 2 * CFG.hd]
    assert weights["model.layers.0.mlp.down_proj.weight"] == [CFG.ffn // 2, CFG.hidden]
    genai = json.loads((out_dir / "genai_config.json").read_text())["model"]["decoder"]
    assert genai["num_key_value_heads"] == kv and genai["num_attention_heads"] == CFG.heads // 2
    assert json.loads((decoder.parent / "genai_config.json").read_text())["model"]["decoder"][
        "num_key_value_heads"] == CFG.kv_heads  # the input's copy is untouched
    # a decode step: a 3-token prefix, then one token fed the pruned model's own cache
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pre = {k: (np.zeros((1, kv, 0, CFG.hd), np.float32) if k.startswith("past") else v)
           for k, v in gen_llama.sample_feeds(CFG, batch=1, seq=3, seed=1).items()}
    first = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, pre)))
    step = {"input_ids": np.array([[7]], np.int64), "position_ids": np.array([[3]], np.int64),
            "attention_mask": np.ones((1, 4), np.int64)}
    step.update({k.replace("present", "past_key_values"): v for k, v in first.items() if k.startswith("present")})
    logits, *cache = sess.run(None, step)
    assert logits.shape == (1, 1, CFG.vocab) and np.isfinite(logits).all()
    assert all(c.shape == (1, kv, 4, CFG.hd) for c in cache)


def test_oracle_passes_with_the_new_cache_and_fails_on_the_wrong_heads(decoder, monkeypatch, capsys):
    assert cli.main(["verify", str(decoder), "--ratio", "0.5", "--prune-cache", *_flags()]) == 0
    assert "oracle PASSED" in capsys.readouterr().out
    analysis = analyze(str(decoder), _shapes())
    plan = analysis.plan(PruneConfig(ratio=0.5, prune_cache=True))
    assert any(g.interface for g in analysis.groups) and plan.groups
    assert analysis.verify(plan).passed
    # feed the kept heads another head's cache (rolled along the heads axis): the oracle must see it
    monkeypatch.setattr("onnxprune.oracle.slice_feeds", lambda feeds, interface: cache_io.slice_feeds(
        {k: np.roll(v, 1, axis=1) if k in interface else v for k, v in feeds.items()}, interface))
    result = analysis.verify(plan)
    assert not result.passed, result.detail


def test_prune_cache_with_calibration_is_refused_in_one_line(decoder, tmp_path, capsys):
    np.savez(tmp_path / "c.npz", **gen_llama.sample_feeds(CFG, seq=SEQ, past=PAST))
    code = cli.main([str(decoder), "-o", str(tmp_path / "x.onnx"), "--prune-cache", "--calib",
                     str(tmp_path / "c.npz"), *_flags()])
    err = capsys.readouterr().err
    assert code == 2 and "--prune-cache with --calib is not supported yet" in err
    assert not (tmp_path / "x.onnx").exists()


REAL = Path(__file__).resolve().parents[1] / "models" / "tiny_llama_kv"


def _real_flags() -> list[str]:
    shapes = json.loads((REAL / "model.onnx.json").read_text())["input_shapes"]
    return [a for n, dims in shapes.items() for a in ("--input-shape", f"{n}:{','.join(map(str, dims))}")]


def test_a_real_transformers_export_prunes_heads_and_ffn_and_decodes(tmp_path, capsys):
    """models/tiny_llama_kv: a random LlamaForCausalLM exported by torch with Optimum's cache names
    (tools/export_llama_cache.py). Its heads reach the cache through run-time Shape/Mul/Expand arithmetic
    (repeat_kv), not constants: they prune only because that arithmetic is traced."""
    out_dir = tmp_path / "pruned"
    out_dir.mkdir()
    out = out_dir / "model.onnx"
    src = tmp_path / "src"
    shutil.copytree(REAL, src)
    assert cli.main([str(src / "model.onnx"), "-o", str(out), "--ratio", "0.5", "--prune-cache",
                     *_real_flags()]) == 0
    text = capsys.readouterr().out
    assert "signature changed (8 KV-cache inputs / outputs" in text and "attention heads: 2 of 4 removed" in text
    pruned = onnx.load(str(out))
    assert _dims(pruned, "past_key_values.0.key")[1] == 1 and _dims(pruned, "present.1.value")[1] == 1
    genai = json.loads((out_dir / "genai_config.json").read_text())["model"]["decoder"]
    assert genai["num_key_value_heads"] == 1 and genai["num_attention_heads"] == 2
    before = sum(int(np.prod(t.dims)) for t in onnx.load(str(src / "model.onnx")).graph.initializer)
    assert sum(int(np.prod(t.dims)) for t in pruned.graph.initializer) < 0.8 * before  # FFN and heads
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    cache = {f"past_key_values.{i}.{k}": np.zeros((1, 1, 0, 16), np.float32) for i in range(2)
             for k in ("key", "value")}
    feeds = {"input_ids": rng.integers(0, 500, (1, 3)), "attention_mask": np.ones((1, 3), np.int64),
             "position_ids": np.arange(3)[None], **cache}
    for _ in range(2):  # a prefix, then one token fed the pruned model's own cache
        names = [o.name for o in sess.get_outputs()]
        outputs = dict(zip(names, sess.run(None, feeds)))
        total = feeds["attention_mask"].shape[1]
        assert all(outputs[f"present.{i}.{k}"].shape == (1, 1, total, 16) for i in range(2) for k in ("key", "value"))
        assert np.isfinite(outputs["logits"]).all()
        feeds = {"input_ids": np.array([[7]]), "attention_mask": np.ones((1, total + 1), np.int64),
                 "position_ids": np.array([[total]]),
                 **{n.replace("present", "past_key_values"): v for n, v in outputs.items() if n.startswith("present")}}
    assert cli.main(["verify", str(src / "model.onnx"), "--ratio", "0.5", "--prune-cache", *_real_flags()]) == 0
    assert "oracle PASSED" in capsys.readouterr().out
