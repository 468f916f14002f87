#!/usr/bin/env python3
"""Generate LLaMA-shaped ONNX decoder stacks with random weights, of any size (numpy + onnx only).

    python tools/gen_llama.py /tmp/llama/tiny.onnx --preset tiny
    python tools/gen_llama.py /tmp/ffn/ffn_stack.onnx --preset ffn-stack      # 2.16 GB, the memory benchmark
    python tools/gen_llama.py /tmp/7b/llama7b.onnx --preset 7b                # 13.5 GB fp16
    python tools/gen_llama.py out.onnx --layers 4 --hidden 512 --heads 8 --kv-heads 2 --ffn 1376 --dtype float16

The decoder: token embedding (Gather) -> N layers of [RMSNorm -> GQA attention with RoPE
(q/k/v/o MatMuls, kv heads repeated by Unsqueeze/Expand/Reshape as Hugging Face exports do,
optional KV cache `past_key_values.N.key/value` in, `present.N.key/value` out, Concat on the
sequence axis) -> residual -> RMSNorm -> SwiGLU FFN (gate/up/down, Sigmoid(g) * g * up) ->
residual] -> RMSNorm -> lm_head (tied to the embedding through a Transpose, or its own weight).
RMSNorm is decomposed (Pow, ReduceMean, Add, Sqrt, Div, Mul): the default domain has no fused op.
Inputs: input_ids, attention_mask [batch, total_len] (1 = attend), position_ids; the causal mask
is a constant table gathered by position_ids, and RoPE's cos/sin tables are gathered the same way.

The `ffn-stack` preset is the benchmark of the streaming-weights issue: 6 blocks of
MatMul 4096 -> 11008, SiLU (x * Sigmoid(x)), MatMul 11008 -> 4096 and a residual Add
(2 x 6 x 4096 x 11008 = 541M fp32 parameters, 2.16 GB); `--gated` adds a gate matrix per block.

Weights are seeded normal(0, 1) / sqrt(fan_in) (norm weights near 1). Every tensor of at
least 1 kB goes to MODEL.onnx.data, written chunk by chunk as it is generated, 4 kB-aligned,
with the TensorProto's external_data fields set directly: the whole model is never in memory,
so the 7B preset needs a few hundred MB at most.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 18
INLINE_MAX_BYTES = 1024  # smaller tensors stay inside the .onnx (onnx.save's default threshold)
ALIGN = 4096  # offsets of external tensors, so that a reader can memory-map them page by page
CHUNK_ELEMENTS = 1 << 22  # elements generated at once (16 MB of float32)
MASK_VALUE = -10000.0  # additive mask for positions not attended (finite in float16)


@dataclass(frozen=True)
class LlamaConfig:
    """Sizes of a generated model; `kind` "decoder" (LLaMA) or "ffn" (FFN blocks only)."""
    kind: str = "decoder"
    layers: int = 2
    hidden: int = 64
    ffn: int = 128
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 0  # 0: hidden // heads
    vocab: int = 256
    max_pos: int = 64
    dtype: str = "float32"
    tied: bool = False
    cache: bool = True
    gated: bool = True  # SwiGLU (decoder always; ffn-stack only with --gated)
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0
    seed: int = 0

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def params(self) -> int:
        """Number of weight parameters (norm weights included, tables and shape constants not)."""
        d, f = self.hidden, self.ffn
        if self.kind == "ffn":
            return self.layers * (3 if self.gated else 2) * d * f
        attn = d * self.heads * self.hd * 2 + d * self.kv_heads * self.hd * 2
        per_layer = attn + 3 * d * f + 2 * d
        return self.layers * per_layer + self.vocab * d * (1 if self.tied else 2) + d


PRESETS = {
    "tiny": LlamaConfig(),
    "ffn-stack": LlamaConfig(kind="ffn", layers=6, hidden=4096, ffn=11008, gated=False, cache=False),
    # LLaMA-2 7B: 32 layers, hidden 4096, 32 heads (no GQA), FFN 11008, vocab 32000; 6.74B params
    "7b": LlamaConfig(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, vocab=32000, max_pos=2048,
                      dtype="float16"),
}


# -- streaming external data --

class DataWriter:
    """Appends tensors to one external data file and makes the TensorProtos that point into it."""

    def __init__(self, data_path: str):
        self.path = data_path
        self.location = os.path.basename(data_path)
        self.file = open(data_path, "wb")
        self.offset = 0

    def tensor(self, name: str, dtype: np.dtype, dims: tuple[int, ...],
               chunks: Iterator[np.ndarray]) -> TensorProto:
        """A tensor whose values `chunks` yields in C order; inline when small, else written out."""
        nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(dtype), dims=list(dims))
        if nbytes < INLINE_MAX_BYTES:
            t.raw_data = b"".join(np.ascontiguousarray(c, dtype=dtype).tobytes() for c in chunks)
            return t
        pad = -self.offset % ALIGN
        self.file.write(b"\0" * pad)
        start = self.offset + pad
        written = 0
        for c in chunks:
            data = np.ascontiguousarray(c, dtype=dtype).tobytes()
            self.file.write(data)
            written += len(data)
        if written != nbytes:
            raise ValueError(f"tensor '{name}': expected {nbytes} bytes for dims {dims}, generated {written}")
        self.offset = start + written
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(start)), ("length", str(nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    def close(self) -> None:
        self.file.close()


def _rows(dims: tuple[int, ...], make: Callable[[int, int], np.ndarray]) -> Iterator[np.ndarray]:
    """Chunks of whole leading-axis rows: make(start, stop) gives rows [start, stop)."""
    rows = dims[0] if dims else 1
    per_row = max(1, int(np.prod(dims[1:], dtype=np.int64)))
    step = max(1, CHUNK_ELEMENTS // per_row)
    for start in range(0, rows, step):
        yield make(start, min(rows, start + step))


class Builder:
    """Nodes, initializers (streamed to the data file) and fresh names for one graph."""

    def __init__(self, cfg: LlamaConfig, writer: DataWriter):
        self.cfg, self.writer = cfg, writer
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.count = 0

    def op(self, op_type: str, inputs: list[str], name: str, n_out: int = 1, **attrs) -> str | list[str]:
        outs = [name] if n_out == 1 else [f"{name}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"/{name}/{op_type}", **attrs))
        return outs[0] if n_out == 1 else outs

    def random(self, name: str, dims: tuple[int, ...], fan_in: int | None = None, around: float = 0.0) -> str:
        """Seeded normal(0, 1) / sqrt(fan_in) (+ around), generated and written chunk by chunk."""
        self.count += 1
        rng = np.random.default_rng([self.cfg.seed, self.count])
        per_row = max(1, int(np.prod(dims[1:], dtype=np.int64)))
        scale = 1.0 / np.sqrt(fan_in or (dims[0] if len(dims) > 1 else 1))

        def make(start: int, stop: int) -> np.ndarray:
            values = rng.standard_normal((stop - start) * per_row, dtype=np.float32)
            values *= scale if not around else 0.1
            return (values + around) if around else values

        self.inits.append(self.writer.tensor(name, self.cfg.np_dtype, dims, _rows(dims, make)))
        return name

    def table(self, name: str, dims: tuple[int, ...], make: Callable[[int, int], np.ndarray]) -> str:
        """A computed (not random) float table, e.g. RoPE cos/sin or the causal mask."""
        self.inits.append(self.writer.tensor(name, self.cfg.np_dtype, dims, _rows(dims, make)))
        return name

    def const(self, name: str, values, dtype=np.int64) -> str:
        array = np.asarray(values, dtype=dtype)
        self.inits.append(self.writer.tensor(name, array.dtype, array.shape, iter([array])))
        return name


# -- the model --

def _rms_norm(b: Builder, x: str, name: str) -> str:
    """x / sqrt(mean(x^2) + eps) * w, decomposed as exporters write it."""
    d = b.cfg.hidden
    w = b.random(f"{name}.weight", (d,), around=1.0)
    two = b.const(f"{name}.two", 2.0, b.cfg.np_dtype)
    eps = b.const(f"{name}.eps", b.cfg.rms_eps, b.cfg.np_dtype)
    axes = b.const(f"{name}.axes", [-1])
    sq = b.op("Pow", [x, two], f"{name}/pow")
    mean = b.op("ReduceMean", [sq, axes], f"{name}/mean", keepdims=1)
    root = b.op("Sqrt", [b.op("Add", [mean, eps], f"{name}/add_eps")], f"{name}/sqrt")
    return b.op("Mul", [b.op("Div", [x, root], f"{name}/div"), w], f"{name}/scale")


def _linear(b: Builder, x: str, name: str, n_in: int, n_out: int) -> str:
    return b.op("MatMul", [x, b.random(f"{name}.weight", (n_in, n_out))], f"{name}/matmul")


def _silu(b: Builder, x: str, name: str) -> str:
    return b.op("Mul", [x, b.op("Sigmoid", [x], f"{name}/sigmoid")], f"{name}/silu")


def _swiglu(b: Builder, x: str, name: str) -> str:
    c = b.cfg
    gate = _linear(b, x, f"{name}.gate_proj", c.hidden, c.ffn)
    up = _linear(b, x, f"{name}.up_proj", c.hidden, c.ffn)
    act = b.op("Mul", [_silu(b, gate, f"{name}/act"), up], f"{name}/gated")
    return _linear(b, act, f"{name}.down_proj", c.ffn, c.hidden)


def _heads(b: Builder, x: str, name: str, heads: int) -> str:
    """[B, S, heads*hd] -> [B, heads, S, hd]."""
    shape = b.const(f"{name}.shape", [0, 0, heads, b.cfg.hd])
    return b.op("Transpose", [b.op("Reshape", [x, shape], f"{name}/reshape")], f"{name}/transpose", perm=[0, 2, 1, 3])


def _rope(b: Builder, x: str, cos: str, sin: str, name: str) -> str:
    """x * cos + rotate_half(x) * sin on [B, heads, S, hd]."""
    half = b.cfg.hd // 2
    axis = b.const(f"{name}.axis", [3])
    lo, mid, hi = (b.const(f"{name}.{k}", [v]) for k, v in (("lo", 0), ("mid", half), ("hi", b.cfg.hd)))
    x1 = b.op("Slice", [x, lo, mid, axis], f"{name}/x1")
    x2 = b.op("Slice", [x, mid, hi, axis], f"{name}/x2")
    rotated = b.op("Concat", [b.op("Neg", [x2], f"{name}/neg"), x1], f"{name}/rotate", axis=3)
    return b.op("Add", [b.op("Mul", [x, cos], f"{name}/cos"), b.op("Mul", [rotated, sin], f"{name}/sin")],
                f"{name}/out")


def _repeat_kv(b: Builder, x: str, name: str) -> str:
    """[B, kv, T, hd] -> Unsqueeze -> Expand [B, kv, heads/kv, T, hd] -> Reshape [B, heads, T, hd]."""
    c = b.cfg
    if c.kv_heads == c.heads:
        return x
    unsq = b.op("Unsqueeze", [x, b.const(f"{name}.axes", [2])], f"{name}/unsqueeze")
    expanded = b.op("Expand", [unsq, b.const(f"{name}.expand", [1, 1, c.heads // c.kv_heads, 1, 1])], f"{name}/expand")
    return b.op("Reshape", [expanded, b.const(f"{name}.shape", [0, c.heads, -1, c.hd])], f"{name}/reshape")


def _attention(b: Builder, x: str, layer: int, cos: str, sin: str, mask: str, io: dict) -> str:
    c, name = b.cfg, f"model.layers.{layer}.self_attn"
    q = _rope(b, _heads(b, _linear(b, x, f"{name}.q_proj", c.hidden, c.heads * c.hd), f"{name}.q", c.heads),
              cos, sin, f"{name}.q_rope")
    k = _rope(b, _heads(b, _linear(b, x, f"{name}.k_proj", c.hidden, c.kv_heads * c.hd), f"{name}.k", c.kv_heads),
              cos, sin, f"{name}.k_rope")
    v = _heads(b, _linear(b, x, f"{name}.v_proj", c.hidden, c.kv_heads * c.hd), f"{name}.v", c.kv_heads)
    if c.cache:
        for kind in ("key", "value"):
            past, present = f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}"
            elem = helper.np_dtype_to_tensor_dtype(c.np_dtype)
            io["inputs"].append(helper.make_tensor_value_info(
                past, elem, ["batch_size", c.kv_heads, "past_sequence_length", c.hd]))
            io["outputs"].append(helper.make_tensor_value_info(
                present, elem, ["batch_size", c.kv_heads, "total_sequence_length", c.hd]))
            new = k if kind == "key" else v
            b.nodes.append(helper.make_node("Concat", [past, new], [present], name=f"/{name}/{kind}_cache/Concat",
                                            axis=2))
            if kind == "key":
                k = present
            else:
                v = present
    k_all, v_all = _repeat_kv(b, k, f"{name}.k_repeat"), _repeat_kv(b, v, f"{name}.v_repeat")
    kt = b.op("Transpose", [k_all], f"{name}/k_t", perm=[0, 1, 3, 2])
    scale = b.const(f"{name}.scale", 1.0 / np.sqrt(c.hd), c.np_dtype)
    scores = b.op("Mul", [b.op("MatMul", [q, kt], f"{name}/qk"), scale], f"{name}/scaled")
    probs = b.op("Softmax", [b.op("Add", [scores, mask], f"{name}/masked")], f"{name}/softmax", axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v_all], f"{name}/pv")], f"{name}/ctx_t", perm=[0, 2, 1, 3])
    merged = b.op("Reshape", [ctx, b.const(f"{name}.merge", [0, 0, c.heads * c.hd])], f"{name}/merge")
    return _linear(b, merged, f"{name}.o_proj", c.heads * c.hd, c.hidden)


def _rope_tables(b: Builder, positions: str) -> tuple[str, str]:
    """cos/sin [max_pos, hd] gathered by position_ids -> [B, 1, S, hd] (shared by every layer)."""
    c = b.cfg
    inv = 1.0 / (c.rope_theta ** (np.arange(0, c.hd, 2, dtype=np.float64) / c.hd))

    def angles(start: int, stop: int) -> np.ndarray:
        a = np.outer(np.arange(start, stop, dtype=np.float64), inv)
        return np.concatenate([a, a], axis=1)

    out = []
    for fn in ("cos", "sin"):
        f = np.cos if fn == "cos" else np.sin
        table = b.table(f"model.rotary_emb.{fn}_cached", (c.max_pos, c.hd), lambda s, e, f=f: f(angles(s, e)))
        gathered = b.op("Gather", [table, positions], f"model.rotary_emb/{fn}_gather", axis=0)
        out.append(b.op("Unsqueeze", [gathered, b.const(f"model.rotary_emb.{fn}_axes", [1])], f"model.rotary_emb/{fn}"))
    return out[0], out[1]


def _mask(b: Builder, positions: str) -> str:
    """Causal rows (gathered by position_ids, cut to total_len) + padding from attention_mask: [B, 1, S, T]."""
    c = b.cfg

    def causal(start: int, stop: int) -> np.ndarray:
        rows = np.arange(start, stop)[:, None] < np.arange(c.max_pos)[None, :]
        return np.where(rows, MASK_VALUE, 0.0)

    table = b.table("model.causal_mask", (c.max_pos, c.max_pos), causal)
    rows = b.op("Gather", [table, positions], "model.mask/causal_rows", axis=0)
    total = b.op("Shape", ["attention_mask"], "model.mask/total_len", start=1, end=2)
    cut = b.op("Slice", [rows, b.const("model.mask.zero", [0]), total, b.const("model.mask.axis", [2])],
               "model.mask/causal")
    causal4 = b.op("Unsqueeze", [cut, b.const("model.mask.causal_axes", [1])], "model.mask/causal4")
    keep = b.op("Cast", ["attention_mask"], "model.mask/keep", to=helper.np_dtype_to_tensor_dtype(c.np_dtype))
    one = b.const("model.mask.one", 1.0, c.np_dtype)
    drop = b.op("Sub", [one, keep], "model.mask/drop")
    pad = b.op("Mul", [drop, b.const("model.mask.value", MASK_VALUE, c.np_dtype)], "model.mask/pad_value")
    pad4 = b.op("Unsqueeze", [pad, b.const("model.mask.pad_axes", [1, 2])], "model.mask/pad4")
    return b.op("Add", [causal4, pad4], "model.mask/mask")


def _decoder(b: Builder, io: dict) -> None:
    c = b.cfg
    elem = helper.np_dtype_to_tensor_dtype(c.np_dtype)
    io["inputs"] += [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
                     helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                                   ["batch_size", "total_sequence_length"]),
                     helper.make_tensor_value_info("position_ids", TensorProto.INT64,
                                                   ["batch_size", "sequence_length"])]
    embed = b.random("model.embed_tokens.weight", (c.vocab, c.hidden), fan_in=c.hidden)
    h = b.op("Gather", [embed, "input_ids"], "model.embed_tokens/gather", axis=0)
    cos, sin = _rope_tables(b, "position_ids")
    mask = _mask(b, "position_ids")
    for i in range(c.layers):
        prefix = f"model.layers.{i}"
        attn = _attention(b, _rms_norm(b, h, f"{prefix}.input_layernorm"), i, cos, sin, mask, io)
        h = b.op("Add", [h, attn], f"{prefix}/attn_residual")
        ffn = _swiglu(b, _rms_norm(b, h, f"{prefix}.post_attention_layernorm"), f"{prefix}.mlp")
        h = b.op("Add", [h, ffn], f"{prefix}/mlp_residual")
    h = _rms_norm(b, h, "model.norm")
    if c.tied:
        head = b.op("Transpose", [embed], "lm_head/tied_weight", perm=[1, 0])
    else:
        head = b.random("lm_head.weight", (c.hidden, c.vocab))
    b.nodes.append(helper.make_node("MatMul", [h, head], ["logits"], name="/lm_head/MatMul"))
    io["outputs"].insert(0, helper.make_tensor_value_info("logits", elem, ["batch_size", "sequence_length", c.vocab]))


def _ffn_stack(b: Builder, io: dict) -> None:
    c = b.cfg
    elem = helper.np_dtype_to_tensor_dtype(c.np_dtype)
    io["inputs"].append(helper.make_tensor_value_info("x", elem, ["batch_size", "sequence_length", c.hidden]))
    h = "x"
    for i in range(c.layers):
        name = f"blocks.{i}.mlp"
        if c.gated:
            y = _swiglu(b, h, name)
        else:
            up = _linear(b, h, f"{name}.up_proj", c.hidden, c.ffn)
            y = _linear(b, _silu(b, up, f"{name}/act"), f"{name}.down_proj", c.ffn, c.hidden)
        h = b.op("Add", [h, y], f"blocks.{i}/residual")
    b.nodes.append(helper.make_node("Identity", [h], ["y"], name="/output/Identity"))
    io["outputs"].append(helper.make_tensor_value_info("y", elem, ["batch_size", "sequence_length", c.hidden]))


def generate(path: str, cfg: LlamaConfig) -> str:
    """Write the model to `path` and its weights to `path`.data; returns the data file's path."""
    if cfg.kind == "decoder" and (cfg.heads % cfg.kv_heads or cfg.hd % 2):
        raise ValueError(f"heads ({cfg.heads}) must be a multiple of kv heads ({cfg.kv_heads}) "
                         f"and head_dim ({cfg.hd}) even")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = DataWriter(path + ".data")
    b = Builder(cfg, writer)
    io: dict = {"inputs": [], "outputs": []}
    try:
        (_decoder if cfg.kind == "decoder" else _ffn_stack)(b, io)
    finally:
        writer.close()
    graph = helper.make_graph(b.nodes, f"gen_llama_{cfg.kind}", io["inputs"], io["outputs"], initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onnxprune tools/gen_llama.py")
    model.ir_version = 9
    model.doc_string = f"gen_llama {dataclasses.asdict(cfg)}"
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return writer.path


def sample_feeds(cfg: LlamaConfig, batch: int = 1, seq: int = 4, past: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for one decoding step: `seq` new tokens after `past` cached ones (cache inputs when cfg.cache)."""
    rng = np.random.default_rng(seed)
    if cfg.kind == "ffn":
        return {"x": rng.standard_normal((batch, seq, cfg.hidden)).astype(cfg.np_dtype)}
    if past + seq > cfg.max_pos or (past and not cfg.cache):
        raise ValueError(f"past {past} + seq {seq} does not fit (max_pos {cfg.max_pos}, cache {cfg.cache})")
    feeds = {"input_ids": rng.integers(0, cfg.vocab, (batch, seq), dtype=np.int64),
             "attention_mask": np.ones((batch, past + seq), np.int64),
             "position_ids": np.tile(np.arange(past, past + seq, dtype=np.int64), (batch, 1))}
    if cfg.cache:
        for i in range(cfg.layers):
            for kind in ("key", "value"):
                feeds[f"past_key_values.{i}.{kind}"] = rng.standard_normal(
                    (batch, cfg.kv_heads, past, cfg.hd)).astype(cfg.np_dtype)
    return feeds


def config_from_args(args: argparse.Namespace) -> LlamaConfig:
    cfg = PRESETS[args.preset]
    changes = {k: v for k, v in (("layers", args.layers), ("hidden", args.hidden), ("ffn", args.ffn),
                                 ("heads", args.heads), ("kv_heads", args.kv_heads), ("head_dim", args.head_dim),
                                 ("vocab", args.vocab), ("max_pos", args.max_pos), ("dtype", args.dtype),
                                 ("tied", args.tied), ("cache", args.cache), ("gated", args.gated),
                                 ("seed", args.seed)) if v is not None}
    return dataclasses.replace(cfg, **changes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output", help="the .onnx to write (weights go to OUTPUT.data beside it)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="base sizes (default tiny)")
    for flag in ("layers", "hidden", "ffn", "heads", "kv-heads", "head-dim", "vocab", "max-pos", "seed"):
        p.add_argument(f"--{flag}", type=int, default=None)
    p.add_argument("--dtype", choices=("float32", "float16"), default=None)
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help="lm_head shares the embedding (through a Transpose)")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None,
                   help="KV-cache inputs and outputs (decoder presets)")
    p.add_argument("--gated", action=argparse.BooleanOptionalAction, default=None,
                   help="ffn-stack: SwiGLU blocks (gate, up, down) instead of up, SiLU, down")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    data = generate(args.output, cfg)
    size = os.path.getsize(args.output) + os.path.getsize(data)
    print(f"{args.output}: {cfg.kind}, {cfg.params() / 1e6:.1f}M params, {cfg.dtype}, "
          f"{size / 1e9:.3f} GB with {os.path.basename(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
