"""onnxprune and onnxsim's pruning passes side by side, at the same channel ratio.

    python tools/bench_vs_onnxsim.py --onnxsim-python /path/to/venv/bin/python [--ratio 0.3]
                                     [--only NAME ...] [--variants plain fp16 ...] [--cache DIR]

onnxsim is not a dependency: give the Python of a virtual environment that has it
(`python3 -m venv /tmp/simvenv && /tmp/simvenv/bin/pip install onnxsim==0.8.1`). For every zoo
model (filled, tools/zoo.py) and every variant of tools/variants.py ("plain" is the model
itself), it runs

* onnxprune: the CLI as a user does (`onnxprune VARIANT --ratio R`, validation on), then
  `onnxprune verify` (the dead-channel oracle);
* onnxsim: every structural pass of `onnxsim.pruning` that could apply, in turn, at
  sparsity R (its C++ dispatcher `apply_structured_pruning_cpp`, which covers float, QDQ,
  MatMulNBits, QOperator and DynamicQuantizeMatMul chains, then the attention-head pass
  and the dynamic ConvInteger pass); a pass that raises is skipped;

and prints one row per model and variant: the share of weight elements each removed (every
initializer of more than one element except int64 shape constants; packed int4 bytes count
as elements), whether the output runs in ONNX Runtime with the original's output shapes, the
oracle, and the time. Where onnxsim removes more than onnxprune's default (which prunes exact groups
only), onnxprune also runs with --inexact. Exit 1 when onnxprune removes less than onnxsim on a row
where both ran, by default.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import variants  # noqa: E402
import zoo  # noqa: E402
from onnxprune.testing import random_inputs, run_model  # noqa: E402

ONNXSIM_SCRIPT = r"""
import sys, onnx, onnxsim
from onnxsim import pruning
src, dst, ratio = sys.argv[1], sys.argv[2], float(sys.argv[3])
model = onnx.load(src)
passes = [("structured", onnxsim.apply_structured_pruning_cpp),
          ("heads", onnxsim.apply_attention_head_pruning_cpp),
          ("dynamic_conv", pruning.apply_structured_pruning_dynamic_quantize_conv)]
done = []
for name, fn in passes:
    try:
        model = fn(model, sparsity=ratio)
        done.append(name)
    except Exception as exc:
        print(f"{name}: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr)
onnx.save(model, dst)
print(",".join(done))
"""


def weight_elements(path: Path) -> int:
    model = onnx.load(str(path))
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type not in (onnx.TensorProto.INT64, onnx.TensorProto.STRING) and int(np.prod(t.dims)) > 1)


def runs_like(original: Path, pruned: Path, int_high: dict) -> bool:
    """The pruned file runs in ONNX Runtime with the original's output shapes, finite wherever the original is."""
    try:
        feeds = random_inputs(onnx.load(str(original)), {}, int_high=int_high)
        ref = run_model(str(original), feeds).outputs
        out = run_model(str(pruned), feeds).outputs
    except Exception:
        return False
    # non-finite only where the original is too (fp16 conversion overflows some zoo models already)
    return [a.shape for a in ref] == [b.shape for b in out] and all(
        np.all(np.isfinite(b) | ~np.isfinite(a)) for a, b in zip(ref, out) if b.dtype.kind == "f")


def _onnxprune(path: Path, out: Path, ratio: float, *flags: str) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "onnxprune.cli", str(path), "--ratio", str(ratio), "-o", str(out), "-q", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    last_line = proc.stderr.strip().splitlines()[-1:][0] if proc.stderr.strip() else ""
    return proc.returncode, time.perf_counter() - t0, last_line


def _oracle(path: Path, ratio: float) -> str:
    proc = subprocess.run([sys.executable, "-m", "onnxprune.cli", "verify", str(path), "--ratio", str(ratio), "-q"],
                          capture_output=True, text=True)
    return {0: "pass", 1: "FAIL"}.get(proc.returncode, f"rc{proc.returncode}")


def _onnxsim(python: str, path: Path, out: Path, ratio: float) -> tuple[bool, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-c", ONNXSIM_SCRIPT, str(path), str(out), str(ratio)], capture_output=True,
                          text=True)
    return proc.returncode == 0 and out.exists(), time.perf_counter() - t0, proc.stdout.strip()


def bench_row(name: str, variant: str, path: Path, args, work: Path) -> dict:
    int_high = zoo.meta(name).get("int_high", {})
    before = weight_elements(path)
    row = {"model": name, "variant": variant, "weights": before}
    ours = work / f"{path.stem}.onnxprune.onnx"
    rc, seconds, err = _onnxprune(path, ours, args.ratio)
    row["onnxprune"] = {"rc": rc, "s": round(seconds, 1), "error": err if rc else ""}
    if rc == 0:
        row["onnxprune"].update(removed=1 - weight_elements(ours) / before, runs=runs_like(path, ours, int_high),
                                oracle=_oracle(path, args.ratio))
    theirs = work / f"{path.stem}.onnxsim.onnx"
    ok, seconds, passes = _onnxsim(args.onnxsim_python, path, theirs, args.ratio)
    row["onnxsim"] = {"ok": ok, "s": round(seconds, 1), "passes": passes}
    if ok:
        row["onnxsim"].update(removed=1 - weight_elements(theirs) / before, runs=runs_like(path, theirs, int_high))
    if ok and row["onnxsim"]["removed"] > row["onnxprune"].get("removed", 0.0):
        # behind by default: inexact groups (dynamic quantization scales, normalisations) are what is left
        rc, seconds, _ = _onnxprune(path, ours, args.ratio, "--inexact")
        if rc == 0:
            row["onnxprune_inexact"] = {"removed": 1 - weight_elements(ours) / before,
                                        "runs": runs_like(path, ours, int_high), "s": round(seconds, 1)}
    return row


def _line(row: dict) -> str:
    ours, theirs = row["onnxprune"], row["onnxsim"]
    a = (f"{ours['removed'] * 100:5.1f}% {'runs' if ours['runs'] else 'BROKEN'} oracle {ours['oracle']:4s} "
         f"{ours['s']:5.1f}s" if "removed" in ours else f"exit {ours['rc']}: {ours['error'][:60]}")
    b = (f"{theirs['removed'] * 100:5.1f}% {'runs' if theirs['runs'] else 'BROKEN'} {theirs['s']:5.1f}s"
         if "removed" in theirs else "failed")
    line = f"{row['model']:38s} {row['variant']:12s} onnxprune {a:38s} | onnxsim {b}"
    if "onnxprune_inexact" in row:
        c = row["onnxprune_inexact"]
        line += f" | onnxprune --inexact {c['removed'] * 100:5.1f}% {'runs' if c['runs'] else 'BROKEN'}"
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnxsim-python", required=True, help="a Python that can import onnxsim")
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--only", nargs="*", help="zoo model names (default: all)")
    p.add_argument("--variants", nargs="*", default=["plain", *variants.VARIANTS])
    p.add_argument("--cache", default="/tmp/onnxprune-variants", help="where filled models and variants go")
    p.add_argument("--json", help="write every row as JSON here")
    args = p.parse_args(argv)
    cache = Path(args.cache)
    names = args.only or zoo.model_names()
    rows, behind, behind_inexact = [], 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            plain = zoo.write_filled(name, cache)
            for variant in args.variants:
                try:
                    path = plain if variant == "plain" else variants.make(variant, plain, cache,
                                                                          zoo.meta(name).get("int_high"))
                except variants.VariantUnavailable:
                    continue
                except Exception as exc:  # a variant tool failing on one model: say so, go on
                    print(f"{name:38s} {variant:12s} variant not made: {type(exc).__name__}: {str(exc)[:80]}",
                          flush=True)
                    continue
                row = bench_row(name, variant, path, args, Path(tmp))
                rows.append(row)
                ours, theirs = row["onnxprune"].get("removed"), row["onnxsim"].get("removed")
                if theirs is not None and row["onnxsim"]["runs"] and (ours is None or ours < theirs - 1e-9):
                    behind += 1
                    inexact = row.get("onnxprune_inexact", {}).get("removed")
                    behind_inexact += inexact is None or inexact < theirs - 1e-9
                print(_line(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"{len(rows)} rows; onnxprune behind onnxsim on {behind} by default, on {behind_inexact} with --inexact")
    return 1 if behind else 0


if __name__ == "__main__":
    sys.exit(main())
