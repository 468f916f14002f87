"""Variants of a model as deployment pipelines produce them, made with ONNX Runtime's own tools.

    python tools/variants.py MODEL.onnx OUT_DIR [--only fp16 qdq_tensor ...]

Each variant is written as OUT_DIR/<stem>__<variant>.onnx and reused when already there:

* fp16         onnxruntime.transformers.float16 (inputs and outputs stay float32)
* qdq_tensor   quantize_static, QDQ format, per-tensor int8 (random calibration inputs)
* qdq_channel  quantize_static, QDQ format, per-channel int8
* dynamic      quantize_dynamic, int8 weights (MatMulInteger / ConvInteger / DynamicQuantizeLinear)
* wonly_int8   weight-only int8: MatMul/Gemm weights as Mul(Cast(int8 W), per-column scale)
* nbits        MatMulNBits int4 (matmul_nbits_quantizer, block 32; that tool needs `pip install onnx-ir`)
* ort_extended ONNX Runtime's graph optimizer at ORT_ENABLE_EXTENDED (FusedConv, FusedGemm, ...)
* fused_attn   onnxruntime.transformers optimizer (Attention, SkipLayerNormalization, FastGelu, ...)

A variant that a tool cannot make for a model (no MatMul for nbits, not a transformer for
fused_attn) raises VariantUnavailable with the reason.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxprune.testing import random_inputs  # noqa: E402

VARIANTS = ("fp16", "qdq_tensor", "qdq_channel", "dynamic", "wonly_int8", "nbits", "ort_extended", "fused_attn")


class VariantUnavailable(Exception):
    """The tool cannot make this variant of this model."""


def make(variant: str, source: Path, out_dir: Path, int_high: dict | None = None) -> Path:
    """Write (or reuse) one variant of `source`; returns its path."""
    out = Path(out_dir) / f"{source.stem}__{variant}.onnx"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    model = _BUILDERS[variant](source, int_high or {})
    onnx.save(model, str(out))
    return out


def _fp16(source: Path, _: dict) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)


class _RandomReader:
    """Calibration reader of a few seeded random inputs (the zoo has random weights anyway)."""

    def __init__(self, model: onnx.ModelProto, int_high: dict, count: int = 4):
        self._feeds = [random_inputs(model, {}, seed, int_high) for seed in range(count)]

    def get_next(self):
        return self._feeds.pop() if self._feeds else None


def _qdq(per_channel: bool):
    def build(source: Path, int_high: dict) -> onnx.ModelProto:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        out = source.with_name(source.stem + ".qdq.tmp.onnx")
        try:
            model = onnx.load(str(source))
            quantize_static(model, str(out), _RandomReader(model, int_high),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            return onnx.load(str(out))
        finally:
            out.unlink(missing_ok=True)
    return build


def _dynamic(source: Path, _: dict) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = source.with_name(source.stem + ".dyn.tmp.onnx")
    try:
        quantize_dynamic(onnx.load(str(source)), str(out), weight_type=QuantType.QInt8)
        return onnx.load(str(out))
    finally:
        out.unlink(missing_ok=True)


def _weight_only_int8(source: Path, _: dict) -> onnx.ModelProto:
    """MatMul/Gemm(x, W) -> (x, Mul(Cast(W_int8), scale)) for every 2-D float weight, per output feature."""
    model = onnx.load(str(source))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    done: dict[str, str] = {}
    new_nodes = []
    for n in g.node:
        if n.op_type in ("MatMul", "Gemm") and len(n.input) >= 2 and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]])
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            if w.ndim == 2 and w.dtype == np.float32:
                if n.input[1] not in done:
                    done[n.input[1]] = _int8_weight(g, n.input[1], w, 1 if trans_b else 0, new_nodes)
                n.input[1] = done[n.input[1]]
        new_nodes.append(n)
    if not done:
        raise VariantUnavailable("no MatMul or Gemm with a 2-D float weight")
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return model


def _int8_weight(g: onnx.GraphProto, name: str, w: np.ndarray, reduce_axis: int, nodes: list) -> str:
    """Quantize `w` per output feature (the axis kept by `reduce_axis`); the Mul dequantizes it."""
    scale = (np.abs(w).max(axis=reduce_axis, keepdims=True) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    g.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale")])
    nodes.append(helper.make_node("Cast", [f"{name}_int8"], [f"{name}_cast"], to=onnx.TensorProto.FLOAT,
                                  name=f"{name}_cast"))
    nodes.append(helper.make_node("Mul", [f"{name}_cast", f"{name}_scale"], [f"{name}_dq"], name=f"{name}_dq"))
    return f"{name}_dq"


def _nbits(source: Path, _: dict) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), block_size=32, is_symmetric=True)
    quantizer.process()
    model = quantizer.model.model
    if not any(n.op_type == "MatMulNBits" for n in model.graph.node):
        raise VariantUnavailable("no MatMul that MatMulNBits can take")
    return model


def _ort_extended(source: Path, _: dict) -> onnx.ModelProto:
    import onnxruntime as ort

    out = source.with_name(source.stem + ".ext.tmp.onnx")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(out)
    try:
        ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
        return onnx.load(str(out))
    finally:
        out.unlink(missing_ok=True)


def _fused_attention(source: Path, _: dict) -> onnx.ModelProto:
    from onnxruntime.transformers.optimizer import optimize_model

    name = source.stem
    kind = "gpt2" if "gpt2" in name else "bert" if ("bert" in name or "vit" in name) else None
    if kind is None:
        raise VariantUnavailable("the transformers optimizer is for BERT/GPT-2/ViT-like models")
    heads, hidden = _heads_and_hidden(onnx.load(str(source)))
    optimized = optimize_model(str(source), model_type=kind, num_heads=heads, hidden_size=hidden, opt_level=0)
    model = optimized.model
    fused = {"Attention", "MultiHeadAttention", "SkipLayerNormalization", "FastGelu", "BiasGelu", "Gelu"}
    if not any(n.op_type in fused for n in model.graph.node):
        raise VariantUnavailable("the transformers optimizer fused nothing")
    return model


def _heads_and_hidden(model: onnx.ModelProto) -> tuple[int, int]:
    """Head count and hidden size from the first 4-D Reshape target (B, S, heads, head_dim)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 1}
    for n in model.graph.node:
        if n.op_type == "Reshape" and n.input[1] in inits and inits[n.input[1]].size == 4:
            heads, head_dim = (int(v) for v in inits[n.input[1]][2:])
            if heads > 0 and head_dim > 0:
                return heads, heads * head_dim
    return 0, 0  # let the optimizer detect them


_BUILDERS = {"fp16": _fp16, "qdq_tensor": _qdq(False), "qdq_channel": _qdq(True), "dynamic": _dynamic,
             "wonly_int8": _weight_only_int8, "nbits": _nbits, "ort_extended": _ort_extended,
             "fused_attn": _fused_attention}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("out_dir")
    p.add_argument("--only", nargs="*", choices=VARIANTS, default=list(VARIANTS))
    args = p.parse_args(argv)
    for variant in args.only:
        try:
            print(variant, make(variant, Path(args.model), Path(args.out_dir)))
        except VariantUnavailable as exc:
            print(variant, "unavailable:", exc)
        except Exception as exc:  # one tool failing on one model must not stop the others
            print(variant, f"failed: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
