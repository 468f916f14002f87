"""onnxprune vs Torch-Pruning (the PyTorch reference of DepGraph) on ResNet-50 and MobileNetV2.

    python tools/bench_vs_torch_pruning.py [--repeats N] [--runs N] [--threads 2]
                                           [--models resnet50 mobilenet_v2] [--no-shufflenet]
                                           [--default-bn] [--work DIR]

Needs torch and torch_pruning (benchmark only; never a dependency of onnxprune):
    pip install torch torch-pruning

Per model (random init, eval mode, exported with the legacy TorchScript exporter, opset 17,
constant folding on, which folds BatchNormalization into the Conv weights; both sides are exported
the same way and the folding is checked and printed; BatchNorm gets seeded trained-looking statistics,
see randomize_bn, or torch's defaults with --default-bn):
  * the unpruned export;
  * Torch-Pruning at pruning_ratio 0.5, GroupMagnitudeImportance(p=2), local (not global) pruning,
    the final Linear ignored, round_to None / 8 / 16, then exported;
  * onnxprune on the unpruned export, PruneConfig(ratio=0.5, round_to=1 / 8 / 16).
For each: MACs and params (onnxprune.testing.model_stats of the analysis), ONNX Runtime CPU
latency (intra_op_num_threads=2, median over interleaved rounds: every variant runs in every round,
alternating order, so drift of the machine hits all alike; ORT's spin-waiting is off, see session),
speedup over the unpruned model, and the
Conv output-channel counts that are not multiples of 8 / 16 (ORT's NCHWc kernels want multiples of
the SIMD width). Then the per-Conv channel counts of the two tools at the same rounding are compared.

Last, Torch-Pruning is tried on ShuffleNetV2 x1.0 (channel shuffle as view/transpose/view, chunk)
at ratio 0.3, and onnxprune on the same model exported to ONNX.

The architectures are written here in plain torch, matching torchvision's resnet50, mobilenet_v2
and shufflenet_v2_x1_0 layer for layer (there is no torchvision here).
"""
from __future__ import annotations

import argparse
from importlib.metadata import version as _version
import copy
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("bench_vs_torch_pruning: torch is not installed (benchmark only: pip install torch torch-pruning)")
try:
    import torch_pruning as tp
except ImportError:
    sys.exit("bench_vs_torch_pruning: torch_pruning is not installed (benchmark only: pip install torch-pruning)")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from bench_common import session  # noqa: E402  (no thread spinning: sessions take turns on 2 cores)

from onnxprune import PruneConfig, analyze, prune  # noqa: E402
from onnxprune.testing import model_stats  # noqa: E402

RATIO = 0.5
ROUNDINGS = (1, 8, 16)  # 1 is Torch-Pruning's round_to=None


# --------------------------------------------------------------------------- architectures
# ResNet-50 as torchvision.models.resnet50(weights=None): Bottleneck (expansion 4), layers
# [3, 4, 6, 3], the stride on the 3x3 conv (ResNet v1.5), downsample = 1x1 conv + BN.

class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def final_linear(self) -> nn.Module:
        return self.fc


# MobileNetV2 as torchvision.models.mobilenet_v2(weights=None): width 1.0, channels made divisible
# by 8, inverted residuals with ReLU6, last conv 1280, classifier Dropout(0.2) + Linear(1280, 1000).

def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    def __init__(self, inp: int, oup: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6):
        layers = [nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(oup)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden, kernel=1))
        layers += [ConvBNAct(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
                   nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0):
        super().__init__()
        settings = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                    [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
        input_channel = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNAct(3, input_channel, stride=2)]
        for t, c, n, s in settings:
            output_channel = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNAct(input_channel, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))

    def final_linear(self) -> nn.Module:
        return self.classifier[1]


# ShuffleNetV2 x1.0 as torchvision.models.shufflenet_v2_x1_0(weights=None): stages [4, 8, 4],
# channels [24, 116, 232, 464, 1024], channel shuffle as view / transpose / view, chunk(2).

def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        self.stride = stride
        bf = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True),
            nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False), nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, repeats=(4, 8, 4), channels=(24, 116, 232, 464, 1024), num_classes: int = 1000):
        super().__init__()
        inp = channels[0]
        self.conv1 = nn.Sequential(nn.Conv2d(3, inp, 3, 2, 1, bias=False), nn.BatchNorm2d(inp), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for name, n, oup in zip(("stage2", "stage3", "stage4"), repeats, channels[1:]):
            units = [ShuffleUnit(inp, oup, 2)] + [ShuffleUnit(oup, oup, 1) for _ in range(n - 1)]
            setattr(self, name, nn.Sequential(*units))
            inp = oup
        self.conv5 = nn.Sequential(nn.Conv2d(inp, channels[-1], 1, 1, 0, bias=False),
                                   nn.BatchNorm2d(channels[-1]), nn.ReLU(inplace=True))
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))

    def final_linear(self) -> nn.Module:
        return self.fc


MODELS = {"resnet50": ResNet50, "mobilenet_v2": MobileNetV2}


# --------------------------------------------------------------------------- helpers

def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm trained-looking statistics and affine parameters (seeded).

    At torch's defaults (weight 1, bias 0, mean 0, var 1) every folded Conv bias is all zeros, and
    the exporter then deduplicates equal initializers: one zero bias is shared by all Convs of a
    width, which ties unrelated layers together (onnxprune freezes such groups; a trained model
    never looks like that). The zoo's torchvision exports have distinct biases too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


def export(model: nn.Module, path: Path) -> None:
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(model.eval(), x, str(path), opset_version=17, dynamo=False, do_constant_folding=True,
                      input_names=["input"], output_names=["output"])


def conv_out_channels(path: str) -> list[tuple[str, int]]:
    """(node name, output channels) of every Conv, in graph order."""
    m = onnx.load(path)
    inits = {t.name: t for t in m.graph.initializer}
    return [(n.name, int(inits[n.input[1]].dims[0])) for n in m.graph.node if n.op_type == "Conv"]


def shared_initializers(path: str) -> int:
    """Initializers read by more than one node (the exporter deduplicates equal constants)."""
    m = onnx.load(path)
    names = {t.name for t in m.graph.initializer}
    uses: dict[str, int] = {}
    for n in m.graph.node:
        for i in n.input:
            if i in names:
                uses[i] = uses.get(i, 0) + 1
    return sum(u > 1 for u in uses.values())


def op_count(path: str, op: str) -> int:
    return sum(n.op_type == op for n in onnx.load(path).graph.node)


def torch_pruned(base: nn.Module, round_to: int | None, ratio: float = RATIO) -> nn.Module:
    model = copy.deepcopy(base).eval()
    pruner = tp.pruner.MetaPruner(
        model, torch.randn(1, 3, 224, 224),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=[model.final_linear()],
        round_to=round_to, global_pruning=False)
    pruner.step()
    return model


def measure(paths: dict[str, str], threads: int, rounds: int, runs: int) -> dict[str, list[float]]:
    """Times (ms) per variant; every round runs each variant `runs` times, the order alternating."""
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    sessions = {k: session(p, threads) for k, p in paths.items()}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in paths}
    labels = list(paths)
    for r in range(rounds):
        for k in (labels if r % 2 == 0 else labels[::-1]):
            s = sessions[k]
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feeds)
                times[k].append((time.perf_counter() - t0) * 1000)
    return times


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def off_multiples(channels: list[int], m: int) -> str:
    bad = [c for c in channels if c % m]
    if not bad:
        return "0"
    values = sorted(set(bad))
    return f"{len(bad)} [" + " ".join(f"{v}x{bad.count(v)}" if bad.count(v) > 1 else str(v) for v in values) + "]"


def short(name: str) -> str:
    return name.strip("/").removesuffix("/Conv") or name


# --------------------------------------------------------------------------- the benchmark

def bench_model(name: str, work: Path, threads: int, rounds: int, runs: int, default_bn: bool) -> None:
    torch.manual_seed(0)
    base = MODELS[name]().eval()
    if not default_bn:
        randomize_bn(base)
    paths: dict[str, str] = {}
    src = work / f"{name}.onnx"
    export(base, src)
    paths["unpruned"] = str(src)
    bn = op_count(str(src), "BatchNormalization")
    print(f"\n== {name}: exported, {op_count(str(src), 'Conv')} Conv, {bn} BatchNormalization "
          f"({'BN folded into Conv' if bn == 0 else 'BN kept'}), {shared_initializers(str(src))} shared initializers",
          flush=True)

    t_times = {}
    for r in ROUNDINGS:
        t0 = time.perf_counter()
        model = torch_pruned(base, None if r == 1 else r)
        t_times[r] = time.perf_counter() - t0
        out = work / f"{name}.tp_r{r}.onnx"
        export(model, out)
        paths[f"torch-pruning round_to={'None' if r == 1 else r}"] = str(out)
    o_times = {}
    for r in ROUNDINGS:
        out = work / f"{name}.op_r{r}.onnx"
        t0 = time.perf_counter()
        prune(str(src), str(out), PruneConfig(ratio=RATIO, round_to=r, validate=False))
        o_times[r] = time.perf_counter() - t0
        paths[f"onnxprune round_to={r}"] = str(out)
    print("  pruning time (s): " + ", ".join(f"TP r={r} {t_times[r]:.1f}" for r in ROUNDINGS) + "; "
          + ", ".join(f"onnxprune r={r} {o_times[r]:.1f}" for r in ROUNDINGS), flush=True)

    stats = {k: model_stats(analyze(p)) for k, p in paths.items()}
    convs = {k: conv_out_channels(p) for k, p in paths.items()}
    load = os.getloadavg()
    times = measure(paths, threads, rounds, runs)
    latency = {k: statistics.median(t) for k, t in times.items()}
    load_after = os.getloadavg()

    b = "unpruned"
    print(f"  ORT {ort.__version__} CPU, intra_op_num_threads={threads}, median of {rounds} interleaved rounds x "
          f"{runs} runs, no spin-waiting; load average before {load[0]:.2f}, after {load_after[0]:.2f}")
    print(f"  {'variant':26s} {'MACs':>8s} {'MACs x':>6s} {'params':>7s} {'ms':>7s} {'p10-p90':>11s} {'speedup':>7s}  "
          f"Conv out-ch not %8 | not %16")
    for k in paths:
        ch = [c for _, c in convs[k]]
        print(f"  {k:26s} {stats[k].macs / 1e9:7.3f}G {stats[b].macs / stats[k].macs:5.2f}x "
              f"{stats[k].params / 1e6:6.2f}M {latency[k]:7.2f} {pct(times[k], 10):5.2f}-{pct(times[k], 90):<5.2f} "
              f"{latency[b] / latency[k]:6.2f}x  "
              f"{off_multiples(ch, 8)} | {off_multiples(ch, 16)}")

    # the two tools' channel counts Conv by Conv at the same rounding
    names = [short(n) for n, _ in convs[b]]
    for r in ROUNDINGS:
        tk, ok = f"torch-pruning round_to={'None' if r == 1 else r}", f"onnxprune round_to={r}"
        tc, oc = [c for _, c in convs[tk]], [c for _, c in convs[ok]]
        if len(tc) != len(oc) or len(tc) != len(names):
            print(f"  round_to={r}: Conv counts differ ({len(tc)} vs {len(oc)}), not compared")
            continue
        diff = [(names[i], convs[b][i][1], tc[i], oc[i]) for i in range(len(tc)) if tc[i] != oc[i]]
        if not diff:
            print(f"  round_to={r}: every Conv has the same output channels in both tools")
            continue
        print(f"  round_to={r}: {len(diff)} of {len(tc)} Convs differ (name: unpruned -> Torch-Pruning / onnxprune)")
        for n, u, t, o in diff:
            print(f"      {n}: {u} -> {t} / {o}")


def bench_shufflenet(work: Path, default_bn: bool, ratio: float = 0.3) -> None:
    print(f"\n== shufflenet_v2_x1_0 at ratio {ratio}")
    torch.manual_seed(0)
    base = ShuffleNetV2().eval()
    if not default_bn:
        randomize_bn(base)
    src = work / "shufflenet_v2_x1_0.onnx"
    export(base, src)
    x = torch.randn(1, 3, 224, 224)
    before = model_stats(analyze(str(src)))
    print(f"  unpruned: {before.macs / 1e9:.3f} GMACs, {before.params / 1e6:.2f}M params")
    try:
        model = torch_pruned(base, None, ratio)
        with torch.no_grad():
            y = model(x)
        out = work / "shufflenet_v2_x1_0.tp.onnx"
        export(model, out)
        s = model_stats(analyze(str(out)))
        print(f"  Torch-Pruning: pruned and ran, output {tuple(y.shape)}; {s.macs / 1e9:.3f} GMACs, "
              f"{s.params / 1e6:.2f}M params")
        print("    Conv out-ch: " + " ".join(str(c) for _, c in conv_out_channels(str(out))))
    except Exception as e:  # noqa: BLE001 - reporting what Torch-Pruning does is the point
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "torch_pruning" in f.filename]
        print(f"  Torch-Pruning: FAILED: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        print("    in " + " -> ".join(f"{f.name} ({Path(f.filename).name}:{f.lineno})" for f in frames[-4:]))
    out = work / "shufflenet_v2_x1_0.op.onnx"
    try:
        report = prune(str(src), str(out), PruneConfig(ratio=ratio, validate=False))
        y = session(str(out), 2).run(None, {"input": x.numpy()})[0]
        print(f"  onnxprune (default round_to=8): ran in ORT, output {y.shape}; {report.after.macs / 1e9:.3f} GMACs, "
              f"{report.after.params / 1e6:.2f}M params; groups pruned {report.groups_pruned} of "
              f"{report.groups_total}, frozen {report.groups_frozen}")
        for reason, n in report.frozen_reasons:
            print(f"    frozen: {n} x {reason if len(reason) < 160 else reason[:157] + '...'}")
    except Exception as e:  # noqa: BLE001
        print(f"  onnxprune: FAILED: {type(e).__name__}: {e}")


def cpu_line() -> str:
    model, flags = platform.processor() or "?", ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                fl = line.split(":", 1)[1].split()
                flags = " ".join(sorted(f for f in fl if f.startswith(("avx512", "avx2", "amx", "fma"))))
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs; {flags or 'no AVX2/AVX-512 flags'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds (default 15)")
    p.add_argument("--runs", type=int, default=5, help="runs per variant per round (default 5)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    p.add_argument("--no-shufflenet", action="store_true")
    p.add_argument("--default-bn", action="store_true",
                   help="keep BatchNorm at torch's init (folded biases all zero and deduplicated by the exporter)")
    p.add_argument("--work", default="/tmp/onnxprune-vs-tp")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_line()}")
    print(f"torch {torch.__version__}, torch_pruning {_version('torch-pruning')}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}; load average {os.getloadavg()}", flush=True)
    for name in args.models:
        bench_model(name, work, args.threads, args.repeats, args.runs, args.default_bn)
    if not args.no_shufflenet:
        bench_shufflenet(work, args.default_bn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
