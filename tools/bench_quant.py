"""Pruning quantized deployments: parameters removed from each quantized variant of a zoo model,
next to the float model at the same ratio, with the dead-channel oracle and an ONNX Runtime run.

    python tools/bench_quant.py [--models tv_resnet18 tv_mobilenet_v2 hf_tiny_bert rnn_lstm2_classifier]
                                [--ratio 0.3] [--variants qdq qdq_pc dynamic weight_only]

Variants are made with ONNX Runtime's own tools: `quantize_static` (QDQ per tensor and per
channel, QOperator per channel; a few random calibration samples), `quantize_dynamic` (int8 MatMulInteger / ConvInteger;
its groups prune exactly once the removed channels are silenced where the run-time range is taken), and a
weight-only int8 rewrite (every MatMul / Gemm / Conv weight becomes Mul(Cast(int8 W), scale)) and
`MatMulNBitsQuantizer` (int4 MatMulNBits, blocks of 32; it needs the onnx_ir package).
Parameters count every initializer but int64 / bool ones (int8 weights, scales, zero points).
The contrib ops' output shapes come from their rules' shape functions; --ort-shapes takes them
from an ONNX Runtime run instead, to compare.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from onnxprune import PruneConfig, prune, verify  # noqa: E402
from onnxprune.testing import random_inputs  # noqa: E402

VARIANTS = ("qdq", "qdq_pc", "qoperator", "dynamic", "weight_only", "nbits")


class _Reader:
    """Calibration data: a few seeded random inputs (token ids stay in range)."""

    def __init__(self, model: onnx.ModelProto, samples: int = 2):
        self.data = iter([random_inputs(model, {}, seed) for seed in range(samples)])

    def get_next(self):
        return next(self.data, None)


def make_variant(src: str, kind: str, out: str) -> str:
    from onnxruntime import quantization as q
    if kind in ("qdq", "qdq_pc"):
        reader = type("Reader", (_Reader, q.CalibrationDataReader), {})(onnx.load(src))
        q.quantize_static(src, out, reader, quant_format=q.QuantFormat.QDQ, per_channel=kind == "qdq_pc")
    elif kind == "qoperator":
        reader = type("Reader", (_Reader, q.CalibrationDataReader), {})(onnx.load(src))
        q.quantize_static(src, out, reader, quant_format=q.QuantFormat.QOperator, per_channel=True)
    elif kind == "dynamic":
        q.quantize_dynamic(src, out)
    elif kind == "nbits":  # needs onnx_ir next to onnxruntime
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits
        quantizer = nbits.MatMulNBitsQuantizer(onnx.load(src), block_size=32, is_symmetric=True)
        quantizer.process()
        if not any(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node):
            raise ValueError("no MatMul with a constant weight to quantize")
        onnx.save(quantizer.model.model, out)
    elif kind == "weight_only":
        onnx.save(weight_only_int8(onnx.load(src)), out)
    else:
        raise ValueError(kind)
    return out


def weight_only_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every float weight (rank >= 2) of a MatMul / Gemm / Conv as Mul(Cast(int8 W), per-tensor scale)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    done: dict[str, str] = {}
    new_nodes = []
    for n in g.node:
        if n.op_type in ("MatMul", "Gemm", "Conv") and len(n.input) > 1 and n.input[1] in inits:
            name = n.input[1]
            w = numpy_helper.to_array(inits[name])
            if w.dtype == np.float32 and w.ndim >= 2 and name not in done:
                scale = np.float32(max(float(np.abs(w).max()), 1e-8) / 127)
                wq = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
                g.initializer.remove(inits[name])
                g.initializer.extend([numpy_helper.from_array(wq, name + "_int8"),
                                      numpy_helper.from_array(scale, name + "_scale")])
                new_nodes += [helper.make_node("Cast", [name + "_int8"], [name + "_f"], to=1, name=name + "_cast"),
                              helper.make_node("Mul", [name + "_f", name + "_scale"], [name], name=name + "_deq")]
                done[name] = name
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return model


def use_ort_shapes(model_path: str) -> None:
    """Fill the shapes ONNX inference leaves unknown (ONNX Runtime's contrib ops) from one ONNX Runtime
    run of the model, instead of the rules' shape functions, for --ort-shapes."""
    import onnxruntime as ort
    import onnxprune.ir as ir_pkg
    ir_load = sys.modules["onnxprune.ir.load"]
    model = onnx.load(model_path)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in probe.graph.node:
        for o in n.output:
            if o and o not in have:
                probe.graph.output.append(onnx.ValueInfoProto(name=o))
                have.add(o)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    known = {o.name: tuple(v.shape) for o, v in zip(sess.get_outputs(), sess.run(None, random_inputs(model, {}, 0)))}
    original = getattr(ir_load.infer_shapes, "original", ir_load.infer_shapes)

    def infer(proto, input_shapes):
        shapes = original(proto, input_shapes)
        shapes.update({k: v for k, v in known.items() if k not in shapes or None in shapes[k]})
        return shapes

    infer.original = original
    ir_load.infer_shapes = ir_pkg.infer_shapes = infer


def measure(path: str, ratio: float, inexact: bool, out: str) -> dict:
    config = PruneConfig(ratio=ratio, inexact=inexact, latency_repeats=0)
    row: dict = {}
    try:
        report = prune(path, out, config)
        row["removed"] = report.before.params - report.after.params
        row["before"] = report.before.params
        row["groups"] = f"{report.groups_pruned}/{report.groups_total}"
        row["runs"] = "yes" if report.validation else "?"
        row["frozen"] = report.frozen_reasons[0][0][:70] if report.frozen_reasons else ""
    except Exception as exc:  # a refused or failing variant is a row, not a crash
        return {"removed": 0, "before": 0, "groups": "-", "runs": f"no: {str(exc)[:60]}", "oracle": "-", "frozen": ""}
    try:
        res = verify(path, config)
        row["oracle"] = f"pass ({res.groups_checked})" if res.passed else f"FAIL {res.comparison.relative:.2g}"
    except Exception as exc:
        row["oracle"] = f"error: {str(exc)[:40]}"
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tv_resnet18", "tv_mobilenet_v2", "hf_tiny_bert",
                                                   "rnn_lstm2_classifier"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--ort-shapes", action="store_true",
                   help="take contrib-op shapes from an ONNX Runtime run (to compare with the rules' shape functions)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    print("| model | variant | params before | removed (plain) | removed (variant) | variant/plain | groups | oracle "
          "| runs | first frozen reason |")
    print("|---|---|---:|---:|---:|---:|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models:
            filled = Path("/tmp/zf") / f"{name}.onnx"  # a filled copy already there is reused
            src = str(filled if filled.exists() else zoo.write_filled(name, work))
            plain = {}
            for kind in args.variants:
                inexact = False  # dynamic int8 prunes exactly too (shared-range groups)
                if inexact not in plain:
                    plain[inexact] = measure(src, args.ratio, inexact, str(work / f"{name}.plain.onnx"))
                try:
                    path = make_variant(src, kind, str(work / f"{name}.{kind}.onnx"))
                except Exception as exc:
                    print(f"| {name} | {kind} | - | - | - | - | - | - | quantization failed: {str(exc)[:60]} | |")
                    continue
                if args.ort_shapes:
                    use_ort_shapes(path)
                row = measure(path, args.ratio, inexact, str(work / f"{name}.{kind}.pruned.onnx"))
                base = plain[inexact]["removed"]
                share = f"{row['removed'] / base:.3f}" if base else "-"
                print(f"| {name} | {kind}{' (--inexact)' if inexact else ''} | {row['before']:,} | {base:,} | "
                      f"{row['removed']:,} | {share} | {row['groups']} | {row['oracle']} | {row['runs']} | "
                      f"{row['frozen']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
