"""Export models of the zoo's families that are NOT in the zoo (other exporters, other versions).

    .venv/bin/python tools/export_unseen.py [OUT_DIR] [--only NAME ...]

OUT_DIR defaults to /tmp/unseen. Writes NAME.onnx (weights inside the file)
and NAME.onnx.json (source, exporter and, for integer inputs, `int_high` as
in ../shared/zoo) for every model: random weights, tiny configs and small
inputs so that the whole set exports in a few minutes on two cores.
`__dynamo` = torch.onnx.export(dynamo=True), `__legacy` = the TorchScript
exporter. Models with dynamic axes have `input_shapes` in their json: the
shapes to prune them at (`--input-shape`). Needs torch, torchvision, onnxscript (and transformers for the
hf_* models, skipped when absent); none is a dependency of onnxprune.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import onnx
import torch
from torch import nn

DYNAMO_OPSET = 18
LEGACY_OPSET = 17


class EncoderClassifier(nn.Module):
    """nn.TransformerEncoder (batch_first, several layers) + mean pooling + a linear head."""

    def __init__(self, d: int = 64, heads: int = 4, ffn: int = 128, layers: int = 3, norm_first: bool = False):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, ffn, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


class RecurrentClassifier(nn.Module):
    """Embedding -> LSTM/GRU -> last step -> linear: the zoo's rnn_* family."""

    def __init__(self, cell: str, hidden: int = 32, layers: int = 2, bidirectional: bool = False):
        super().__init__()
        self.embed = nn.Embedding(100, 24)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(24, hidden, layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(ids))
        return self.head(out[:, -1])


def _distinct_weights(model: nn.Module, seed: int) -> nn.Module:
    """Random weights that differ per layer: nn.TransformerEncoder deep-copies one layer, and the
    legacy exporter would then store one shared weight for all layers, unlike a trained model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def _torchvision():
    """Import torchvision even when its compiled ops do not load (a wheel built for another torch
    build, e.g. CUDA): the models exported here need none of them (nms, roi_align...)."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    strict = torch.library.register_fake

    def lenient(op, fn=None, **kwargs):
        def register(f):
            try:
                return strict(op, **kwargs)(f)
            except RuntimeError:
                return f
        return register(fn) if fn is not None else register

    torch.library.register_fake = lenient
    try:
        import torchvision
    finally:
        torch.library.register_fake = strict
    return torchvision


def _tv(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torchvision = _torchvision()

        return getattr(torchvision.models, name)(weights=None, **kwargs)
    return build


def _tiny_vit() -> nn.Module:
    _torchvision()
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                             num_classes=10)


def _tiny_swin() -> nn.Module:
    _torchvision()
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                           num_classes=10)


def _hf(kind: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        _torchvision()  # transformers imports it when installed
        import transformers as tf

        if kind == "bert":
            cfg = tf.BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=64, num_labels=3)
            model = tf.BertForSequenceClassification(cfg)
        elif kind == "gpt2":
            cfg = tf.GPT2Config(vocab_size=500, n_embd=64, n_layer=2, n_head=4, n_positions=64)
            model = tf.GPT2LMHeadModel(cfg)
        else:
            cfg = tf.LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
            model = tf.LlamaForCausalLM(cfg)
        model.config.use_cache = False
        model.config.attn_implementation = "eager"
        model.set_attn_implementation("eager")
        return _HFLogits(model)
    return build


class _HFLogits(nn.Module):
    """Only the logits, from input_ids (and a token-type input for BERT): fixed-shape graphs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False, return_dict=True).logits


def _image(size: int) -> tuple:
    return (torch.randn(1, 3, size, size),)


def _ids(high: int, shape=(1, 12)) -> tuple:
    return (torch.randint(0, high, shape),)


# name -> (builder, example inputs, input names, dynamo?, opset, int_high, source)
MODELS: dict[str, tuple] = {
    "te_encoder3__dynamo": (lambda: EncoderClassifier(), (torch.randn(1, 10, 64),), ["x"], True, DYNAMO_OPSET, {},
                            "nn.TransformerEncoder(d 64, 4 heads, ffn 128, 3 layers, batch_first), batch 1"),
    "te_encoder3_b2__dynamo": (lambda: EncoderClassifier(), (torch.randn(2, 10, 64),), ["x"], True, DYNAMO_OPSET, {},
                               "nn.TransformerEncoder(d 64, 4 heads, ffn 128, 3 layers, batch_first), batch 2"),
    "te_encoder3_prenorm__dynamo": (lambda: EncoderClassifier(d=48, heads=6, ffn=96, norm_first=True),
                                    (torch.randn(1, 8, 48),), ["x"], True, DYNAMO_OPSET, {},
                                    "nn.TransformerEncoder(d 48, 6 heads, ffn 96, 3 layers, norm_first)"),
    "te_encoder3__legacy": (lambda: EncoderClassifier(), (torch.randn(1, 10, 64),), ["x"], False, LEGACY_OPSET, {},
                            "nn.TransformerEncoder(d 64, 4 heads, ffn 128, 3 layers, batch_first), batch 1"),
    "te_encoder3_b2__legacy": (lambda: EncoderClassifier(), (torch.randn(2, 10, 64),), ["x"], False, 14, {},
                               "nn.TransformerEncoder(d 64, 4 heads, ffn 128, 3 layers, batch_first), batch 2, "
                               "opset 14"),
    "tv_resnet34__dynamo": (_tv("resnet34"), _image(64), ["x"], True, DYNAMO_OPSET, {}, "torchvision resnet34"),
    "tv_mobilenet_v3_large__dynamo": (_tv("mobilenet_v3_large"), _image(64), ["x"], True, DYNAMO_OPSET, {},
                                      "torchvision mobilenet_v3_large"),
    "tv_efficientnet_b1__dynamo": (_tv("efficientnet_b1"), _image(64), ["x"], True, DYNAMO_OPSET, {},
                                   "torchvision efficientnet_b1"),
    "tv_densenet121__dynamo": (_tv("densenet121"), _image(64), ["x"], True, DYNAMO_OPSET, {},
                               "torchvision densenet121"),
    "tv_convnext_tiny__dynamo": (_tv("convnext_tiny"), _image(64), ["x"], True, DYNAMO_OPSET, {},
                                 "torchvision convnext_tiny"),
    "tv_shufflenet_v2_x0_5__dynamo": (_tv("shufflenet_v2_x0_5"), _image(64), ["x"], True, DYNAMO_OPSET, {},
                                      "torchvision shufflenet_v2_x0_5"),
    "tv_vit_tiny__dynamo": (_tiny_vit, _image(32), ["x"], True, DYNAMO_OPSET, {},
                            "torchvision VisionTransformer(image 32, patch 8, 2 layers, 4 heads, hidden 64)"),
    "tv_swin_tiny__dynamo": (_tiny_swin, _image(32), ["x"], True, DYNAMO_OPSET, {},
                             "torchvision SwinTransformer(embed 32, depths [2, 2], heads [2, 4], window 4)"),
    "tv_regnet_y_400mf__legacy": (_tv("regnet_y_400mf"), _image(64), ["x"], False, LEGACY_OPSET, {},
                                  "torchvision regnet_y_400mf"),
    "tv_shufflenet_v2_x0_5__legacy": (_tv("shufflenet_v2_x0_5"), _image(64), ["x"], False, 13, {},
                                      "torchvision shufflenet_v2_x0_5, opset 13"),
    "tv_googlenet__legacy13": (_tv("googlenet", aux_logits=False, init_weights=True), _image(64), ["x"], False, 13,
                               {}, "torchvision googlenet (no aux logits), opset 13"),
    "tv_mnasnet1_0__legacy": (_tv("mnasnet1_0"), _image(64), ["x"], False, LEGACY_OPSET, {},
                              "torchvision mnasnet1_0"),
    "tv_squeezenet1_1__legacy": (_tv("squeezenet1_1"), _image(64), ["x"], False, LEGACY_OPSET, {},
                                 "torchvision squeezenet1_1"),
    "tv_vit_tiny__legacy": (_tiny_vit, _image(32), ["x"], False, LEGACY_OPSET, {},
                            "torchvision VisionTransformer(image 32, patch 8, 2 layers, 4 heads, hidden 64)"),
    "rnn_lstm2_classifier__dynamo": (lambda: RecurrentClassifier("lstm"), _ids(100), ["ids"], True, DYNAMO_OPSET,
                                     {"ids": 100}, "Embedding -> LSTM(hidden 32, 2 layers) -> Linear"),
    "rnn_bigru1_classifier__dynamo": (lambda: RecurrentClassifier("gru", layers=1, bidirectional=True), _ids(100),
                                      ["ids"], True, DYNAMO_OPSET, {"ids": 100},
                                      "Embedding -> GRU(hidden 32, bidirectional) -> Linear"),
    "hf_tiny_bert__dynamo": (_hf("bert"), _ids(500), ["input_ids"], True, DYNAMO_OPSET, {"input_ids": 500},
                             "transformers BertForSequenceClassification(hidden 64, 2 layers, 4 heads)"),
    "hf_tiny_bert__legacy14": (_hf("bert"), _ids(500), ["input_ids"], False, 14, {"input_ids": 500},
                               "transformers BertForSequenceClassification(hidden 64, 2 layers, 4 heads), opset 14"),
    # transformers 5 builds its causal masks with aten::diff, which the legacy exporter lacks
    "hf_tiny_gpt2__dynamo20": (_hf("gpt2"), _ids(500), ["input_ids"], True, 20, {"input_ids": 500},
                               "transformers GPT2LMHeadModel(n_embd 64, 2 layers, 4 heads), opset 20"),
    "hf_tiny_llama__dynamo20": (_hf("llama"), _ids(500), ["input_ids"], True, 20, {"input_ids": 500},
                                "transformers LlamaForCausalLM(hidden 64, 2 layers, 4 heads, 2 kv heads), opset 20"),
}


# dynamo exports with dynamic axes: name -> (dynamic axes per input, the shapes to prune at (--input-shape))
DYNAMIC: dict[str, tuple[dict[str, dict[int, str]], dict[str, list[int]]]] = {
    "te_encoder3_dynbatch__dynamo": ({"x": {0: "batch", 1: "seq"}}, {"x": [1, 10, 64]}),
}
MODELS["te_encoder3_dynbatch__dynamo"] = (
    lambda: EncoderClassifier(), (torch.randn(2, 10, 64),), ["x"], True, DYNAMO_OPSET, {},
    "nn.TransformerEncoder(d 64, 4 heads, ffn 128, 3 layers, batch_first), dynamic batch and sequence")


def _dynamic_shapes(name: str, names: list[str]):
    from torch.export import Dim

    axes = DYNAMIC[name][0]
    dims: dict[str, object] = {}
    return tuple({a: dims.setdefault(d, Dim(d)) for a, d in axes.get(n, {}).items()} or None for n in names)


def export(name: str, out_dir: Path, seed: int = 0) -> Path:
    build, args, names, dynamo, opset, int_high, source = MODELS[name]
    torch.manual_seed(seed)
    model = _distinct_weights(build(), seed)
    path = out_dir / f"{name}.onnx"
    with warnings.catch_warnings():  # no torch.no_grad(): it selects fused kernels the legacy exporter lacks
        warnings.simplefilter("ignore")
        if dynamo:
            dynamic = _dynamic_shapes(name, names) if name in DYNAMIC else None
            torch.onnx.export(model, args, str(path), dynamo=True, opset_version=opset, input_names=names,
                              output_names=["logits"], verbose=False, dynamic_shapes=dynamic)
        else:
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset, input_names=names,
                              output_names=["logits"])
    proto = onnx.load(str(path))  # dynamo writes weights beside the file: keep them inside
    onnx.save(proto, str(path))
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    meta = {"source": source + ", random weights" + ("" if name in DYNAMIC else ", fixed shapes"),
            "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo={dynamo}, opset_version={opset})"}
    if int_high:
        meta["int_high"] = int_high
    if name in DYNAMIC:
        meta["input_shapes"] = DYNAMIC[name][1]
    path.with_name(path.name + ".json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", nargs="?", default="/tmp/unseen")
    p.add_argument("--only", nargs="*", help="model names to export")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in MODELS if not args.only or n in args.only]
    failed = 0
    for name in names:
        t0 = time.perf_counter()
        try:
            path = export(name, out)
            print(f"{name:36s} ok     {path.stat().st_size / 1e6:7.2f} MB  {time.perf_counter() - t0:5.1f}s",
                  flush=True)
        except ImportError as exc:
            print(f"{name:36s} skip   {exc}", flush=True)
        except Exception as exc:  # one exporter failure must not stop the others
            failed += 1
            print(f"{name:36s} FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:160]}", flush=True)
    print(f"{len(names) - failed} exported (or skipped), {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
