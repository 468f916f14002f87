"""ONNX Runtime GenAI's genai_config.json beside a decoder: its head counts follow a --prune-cache plan.

GenAI sizes the KV cache from `model.decoder.num_key_value_heads` (and the
query heads from `num_attention_heads`), one count for every layer. After
pruning heads, a copy with the new counts is written beside the output model;
the input's copy is never touched.
"""
from __future__ import annotations

import json
import logging
import os

from . import paths

log = logging.getLogger(__name__)

NAME = "genai_config.json"


def update_beside(model_path: str, output_path: str, signature: list[dict]) -> str | None:
    """Write the updated genai_config.json beside `output_path` when the input model has one and the plan
    changed its KV-cache inputs; the one-line note for the report, or None when there is nothing to do."""
    source = os.path.join(os.path.dirname(os.path.abspath(model_path)), NAME)
    inputs = [row for row in signature if row["kind"] == "input"]
    if not inputs or not os.path.isfile(source):
        return None
    target = os.path.join(os.path.dirname(os.path.abspath(output_path)), NAME)
    if os.path.abspath(target) == os.path.abspath(source):
        return f"{NAME} not updated: the output is in the input's folder; write the model to a folder of its own"
    counts = {row["after"][row["axis"]] for row in inputs}
    before = {row["before"][row["axis"]] for row in inputs}
    if len(counts) != 1 or len(before) != 1 or not all(isinstance(c, int) for c in counts | before):
        return (f"{NAME} not written: the layers keep different KV head counts ({sorted(map(str, counts))}), "
                "and GenAI takes one count for all")
    try:
        with open(source, encoding="utf-8") as f:
            config = json.load(f)
        decoder = config["model"]["decoder"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{NAME} beside the input not updated: cannot read model.decoder from it ({exc})"
    (kv_after,), (kv_before,) = counts, before
    decoder["num_key_value_heads"] = kv_after
    heads = ""
    if isinstance(decoder.get("num_attention_heads"), int):
        q_before = decoder["num_attention_heads"]
        decoder["num_attention_heads"] = q_before * kv_after // kv_before
        heads = f", num_attention_heads {q_before} -> {decoder['num_attention_heads']}"
    paths.write_text(target, json.dumps(config, indent=4) + "\n")
    log.info("wrote %s", target)
    return f"{NAME} written beside the output: num_key_value_heads {kv_before} -> {kv_after}{heads}"
