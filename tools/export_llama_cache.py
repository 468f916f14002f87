"""Export a tiny random LlamaForCausalLM with KV-cache I/O named as Optimum names it (for --prune-cache).

    /path/to/venv-with-torch/bin/python tools/export_llama_cache.py OUT.onnx [--exporter legacy|dynamo]

Inputs: input_ids, attention_mask, position_ids [batch, seq] and
past_key_values.N.key / .value [batch, kv_heads, past, head_dim]; outputs:
logits and present.N.key / .value. Random weights from a config (hidden 64,
2 layers, 4 query heads on 2 KV heads, FFN 128, vocab 500), eager attention;
batch, sequence and past length are dynamic. Writes OUT.json (model.onnx -> model.onnx.json) beside it with
the shapes to analyse it at (`input_shapes`, one decode step: 4 new tokens
after 3 cached) and a genai_config.json-style head count. Needs torch and
transformers (not dependencies of onnxprune; install them in a venv of their
own).
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from torch import nn

LAYERS, HEADS, KV_HEADS, HIDDEN, FFN, VOCAB = 2, 4, 2, 64, 128, 500
HEAD_DIM = HIDDEN // HEADS
PAST, SEQ = 3, 4


def build() -> nn.Module:
    """The tiny LLaMA, eager attention, weights from a fixed seed."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=128)
    model = tf.LlamaForCausalLM(cfg)
    model.set_attn_implementation("eager")
    return model.eval()


class CachedStep(nn.Module):
    """One decoding step with the cache as flat tensors: (ids, mask, positions, k0, v0, k1, v1, ...)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer in range(LAYERS):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, return_dict=True)
        present = []
        for layer in range(LAYERS):
            present += [out.past_key_values.layers[layer].keys, out.past_key_values.layers[layer].values]
        return (out.logits, *present)


def example(batch: int = 1) -> tuple:
    """Inputs for one step: SEQ new tokens after PAST cached ones."""
    ids = torch.randint(0, VOCAB, (batch, SEQ))
    mask = torch.ones(batch, PAST + SEQ, dtype=torch.int64)
    pos = torch.arange(PAST, PAST + SEQ).unsqueeze(0).expand(batch, SEQ)
    past = [torch.randn(batch, KV_HEADS, PAST, HEAD_DIM) for _ in range(2 * LAYERS)]
    return (ids, mask, pos, *past)


def names() -> tuple[list[str], list[str]]:
    """Input and output names as Optimum writes them."""
    cache = [f"{layer}.{kind}" for layer in range(LAYERS) for kind in ("key", "value")]
    return (["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{c}" for c in cache],
            ["logits"] + [f"present.{c}" for c in cache])


def export(out: Path, exporter: str) -> None:
    """Export the step to `out` and write its json beside it."""
    inputs, outputs = names()
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch_size", 1: "sequence_length"},
                                       "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
                                       "position_ids": {0: "batch_size", 1: "sequence_length"},
                                       "logits": {0: "batch_size", 1: "sequence_length"}}
    for name in inputs[3:]:
        axes[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in outputs[1:]:
        axes[name] = {0: "batch_size", 2: "total_sequence_length"}
    step = CachedStep(build())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            auto = torch.export.Dim.AUTO  # sizes tied to each other (mask = past + sequence) are found by export
            spec = [{a: auto for a in axes[name]} for name in inputs]
            dims = (*spec[:3], tuple(spec[3:]))  # *past is one argument to torch.export
            torch.onnx.export(step, example(), str(out), input_names=inputs, output_names=outputs,
                              dynamic_shapes=dims, dynamo=True, opset_version=18, external_data=False)
        else:
            torch.onnx.export(step, example(), str(out), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, dynamo=False, opset_version=17)
    shapes = {"input_ids": [1, SEQ], "attention_mask": [1, PAST + SEQ], "position_ids": [1, SEQ]}
    shapes.update({name: [1, KV_HEADS, PAST, HEAD_DIM] for name in inputs[3:]})
    meta = {"source": f"transformers LlamaForCausalLM(hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads on "
                      f"{KV_HEADS} KV heads, FFN {FFN}), KV-cache I/O, {exporter} exporter",
            "input_shapes": shapes, "int_high": {"input_ids": VOCAB}}
    out.with_suffix(".onnx.json").write_text(json.dumps(meta, indent=1) + "\n")
    genai = {"model": {"decoder": {"num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
                                   "head_size": HEAD_DIM, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS}}}
    (out.parent / "genai_config.json").write_text(json.dumps(genai, indent=4) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    export(args.out, args.exporter)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
