"""Run a folder of models through the default CLI (validation on) and the dead-channel oracle.

    .venv/bin/python tools/unseen_sweep.py [FOLDER] [--ratio 0.3] [--only NAME ...] [--strip-value-info]

FOLDER defaults to /tmp/unseen (tools/export_unseen.py writes it); models
with stripped weights (../shared/zoo) are filled first. For every model:
`onnxprune MODEL --ratio R -o OUT` and `onnxprune verify MODEL --ratio R`,
as a user runs them, one line per model with both exit codes and the
CLI's message, then totals (the CLI feeds integer inputs by itself, from the
embedding tables they index); a model with dynamic axes is pruned at the
`input_shapes` of its json. Exit 1 when any model fails either.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402

import zoo  # noqa: E402
from onnxprune import cli  # noqa: E402


def _cli(argv: list[str]) -> tuple[int, str]:
    """Exit code and the last line the CLI printed (stdout or stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    lines = [ln.strip() for ln in (err.getvalue() + out.getvalue()).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("onnxprune:") and ("error" in ln or "fail" in ln)]
    last = errors[-1] if errors else next((ln for ln in lines if ln.startswith(("groups", "oracle"))), "")
    return code, last


def _prepared(path: Path, work: Path, strip_value_info: bool) -> Path:
    """The model as the CLI should read it: filled if stripped, value_info dropped when asked."""
    model = onnx.load(str(path))
    stripped = any(t.doc_string == zoo.STRIPPED for t in model.graph.initializer)
    if not stripped and not strip_value_info:
        return path
    if stripped:
        zoo.fill_stripped(model)
    if strip_value_info:
        del model.graph.value_info[:]
    out = work / path.name
    onnx.save(model, str(out))
    return out


def _input_shapes(path: Path) -> dict[str, list[int]]:
    meta = path.with_name(path.name + ".json")
    return json.loads(meta.read_text()).get("input_shapes", {}) if meta.exists() else {}


def sweep_one(path: Path, work: Path, ratio: float, strip_value_info: bool) -> tuple[bool, bool, str]:
    model = _prepared(path, work, strip_value_info)
    out = work / f"{path.stem}.pruned.onnx"
    common = ["--ratio", str(ratio)]
    for name, dims in _input_shapes(path).items():  # dynamic axes: the shapes the json gives
        common += ["--input-shape", f"{name}:{','.join(str(d) for d in dims)}"]
    t0 = time.perf_counter()
    prune_code, prune_msg = _cli([str(model), *common, "-o", str(out)])
    t1 = time.perf_counter()
    verify_code, verify_msg = _cli(["verify", str(model), *common])
    t2 = time.perf_counter()
    line = (f"prune {'ok  ' if prune_code == 0 else f'rc={prune_code}'} ({t1 - t0:5.1f}s)  "
            f"verify {'ok  ' if verify_code == 0 else f'rc={verify_code}'} ({t2 - t1:5.1f}s)  "
            f"| {prune_msg[:150]}" + ("" if verify_code == 0 else f" | {verify_msg[:150]}"))
    for p in (out, Path(str(out) + ".data")):
        p.unlink(missing_ok=True)
    return prune_code == 0, verify_code == 0, line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default="/tmp/unseen")
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--only", nargs="*", help="model names (file stems) to run")
    p.add_argument("--strip-value-info", action="store_true",
                   help="drop the input's value_info first (shape annotations the exporter wrote)")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    paths = sorted(Path(args.folder).glob("*.onnx"))
    paths = [q for q in paths if not q.stem.endswith(".pruned")]
    if args.only:
        paths = [q for q in paths if q.stem in set(args.only)]
    pruned_ok = verified_ok = 0
    with tempfile.TemporaryDirectory(prefix="onnxprune-sweep-") as tmp:
        for path in paths:
            try:
                a, b, line = sweep_one(path, Path(tmp), args.ratio, args.strip_value_info)
            except Exception as exc:  # report and go on: one broken model must not hide the others
                a, b, line = False, False, f"ERROR {type(exc).__name__}: {str(exc)[:200]}"
            pruned_ok += a
            verified_ok += b
            print(f"{'PASS' if a and b else 'FAIL'} {path.stem:36s} {line}", flush=True)
    n = len(paths)
    print(f"{n} models: default CLI passes {pruned_ok}/{n}, oracle passes {verified_ok}/{n}")
    return 0 if pruned_ok == verified_ok == n else 1


if __name__ == "__main__":
    sys.exit(main())
