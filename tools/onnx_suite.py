"""Run the CLI over ONNX's own operator test models and check every output it writes.

    python tools/onnx_suite.py [--only SUBSTR ...] [--sample N] [--jobs 2] [--timeout 120] [-v]

Models: the node test cases of `onnx.backend.test.case.node` (generated into a
temporary folder with their test inputs) and the `light`, `pytorch-converted`,
`pytorch-operator` and `simple` folders of `onnx/backend/test/data` (`real` holds
only download links and is skipped). Each model goes through `onnxprune MODEL -o OUT`
with the defaults and with `--no-validate`, in-process (`onnxprune.cli.main`), the
way a user runs it. A run is broken when it

* prints a traceback or an internal error, or exits with a code other than 0, 1, 2
  (exit 1 is listed apart: a check that failed, honestly or not);
* exits 0 but its output fails `onnx.checker` (full check) where the input passes it;
* exits 0 but its output does not run in ONNX Runtime on the shipped test inputs
  where the input does, or gives other output shapes;
* exits 0 with nothing pruned and outputs that are not identical (tight allclose)
  to the input model's on those inputs.

The shipped test inputs, not random ones, are what catch folding of values that
depend on the inputs. The `light` models ship no inputs: they get seeded random ones.
Prints totals and every broken case; exit 1 when any is broken.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import multiprocessing
import os
import pickle
import re
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

FOLDERS = ("light", "pytorch-converted", "pytorch-operator", "simple")
MODES = {"default": [], "no-validate": ["--no-validate"]}
RTOL, ATOL = 1e-5, 1e-6


@dataclass
class Case:
    name: str
    model: str
    inputs: str | None  # pickle of the list of input values, in graph-input order; None: random


@dataclass
class Result:
    name: str
    mode: str
    rc: int | None
    pruned: bool | None = None
    checked: bool = False  # the output was compared against the input model on the test inputs
    broken: str | None = None
    failed: str | None = None  # the message of an exit 1 or 2
    seconds: float = 0.0


@dataclass
class Totals:
    models: int = 0
    runs: int = 0
    rc: dict = field(default_factory=dict)
    checked: int = 0
    identical: int = 0
    pruned: int = 0
    broken: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    refused: list = field(default_factory=list)  # exit 2: bad or unsupported input
    # exit 1 by default while the --no-validate output runs on the test inputs and passes every check:
    # validation (random inputs) blamed a good output
    blamed: list = field(default_factory=list)


# -- collecting ----------------------------------------------------------------

def collect(work: Path, only: list[str] | None = None) -> list[Case]:
    """Write every node test case into `work` and list them with the data folders' models."""
    cases: list[Case] = []
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        from onnx.backend.test.case import node

        node_cases = node.collect_testcases(None)
    for tc in node_cases:
        if only and not any(s in tc.name for s in only):
            continue
        folder = work / "node" / tc.name
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(tc.model, str(folder / "model.onnx"))
        inputs = list(tc.data_sets[0][0]) if tc.data_sets else None
        path = None
        if inputs is not None:
            path = str(folder / "inputs.pkl")
            with open(path, "wb") as f:
                pickle.dump(inputs, f)
        cases.append(Case(f"node/{tc.name}", str(folder / "model.onnx"), path))
    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    for sub in FOLDERS:
        for entry in sorted((data / sub).iterdir()):
            if entry.is_dir() and (entry / "model.onnx").exists():
                name, model = f"{sub}/{entry.name}", entry / "model.onnx"
                inputs = _read_pb_inputs(entry / "test_data_set_0", work / sub / entry.name)
            elif entry.suffix == ".onnx":
                name, model, inputs = f"{sub}/{entry.stem}", entry, None
            else:
                continue
            if only and not any(s in name for s in only):
                continue
            cases.append(Case(name, str(model), inputs))
    return cases


def _read_pb_inputs(folder: Path, work: Path) -> str | None:
    files = sorted(folder.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        return None
    values = []
    for f in files:
        t = onnx.TensorProto()
        t.ParseFromString(f.read_bytes())
        values.append(numpy_helper.to_array(t))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "inputs.pkl"
    with open(path, "wb") as out:
        pickle.dump(values, out)
    return str(path)


# -- one model -----------------------------------------------------------------

class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that the CLI's catch-all does not report it."""


def _on_alarm(signum, frame):
    raise _Timeout()


class _CurrentStderr:
    """A logging stream that writes to whatever sys.stderr is now (the CLI configures logging once)."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _init_worker(quiet_fd: bool = True) -> None:
    if quiet_fd:  # ONNX Runtime logs its own load errors to file descriptor 2; the CLI's text is captured
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    logging.basicConfig(level=logging.WARNING, format="onnxprune: %(message)s", stream=_CurrentStderr())
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _on_alarm)


def run_case(case: Case, out_dir: str, timeout: int) -> list[Result]:
    """Both CLI modes on one model, each output checked."""
    from onnxprune import cli

    results = []
    reference = _Reference(case)
    for mode, flags in MODES.items():
        out = os.path.join(out_dir, case.name.replace("/", "__") + f".{mode}.onnx")
        report = out + ".json"
        stdout, stderr = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        rc: int | None = None
        crash = None
        signal.alarm(timeout)
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                rc = cli.main([case.model, "-o", out, "--report-json", report, "--providers", "cpu", *flags])
        except _Timeout:
            crash = f"timed out after {timeout}s"
        except BaseException as exc:  # noqa: BLE001 - a runner records every escape
            crash = f"escaped cli.main: {type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
        r = Result(case.name, mode, rc, seconds=time.perf_counter() - t0)
        text = stdout.getvalue() + stderr.getvalue()
        if crash:
            r.broken = crash
        elif "Traceback" in text or "internal error" in text:
            r.broken = "internal error: " + _line(text, "internal error") if "internal error" in text else "traceback"
        elif rc not in (0, 1, 2):
            r.broken = f"exit code {rc}"
        elif rc in (1, 2):
            r.failed = _line(text, "onnxprune:")
        elif rc == 0:
            r.pruned = _pruned(report)
            if r.pruned is False and "nothing pruned" not in text:
                r.broken = "nothing pruned, but the report does not say why"
            else:
                r.broken, r.checked = reference.check(out, r.pruned)
        results.append(r)
        for f in (out, out + ".data", report):
            if os.path.exists(f):
                os.remove(f)
    return results


def _line(text: str, key: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if key in ln), text.strip()[-300:])


def _pruned(report_path: str) -> bool | None:
    try:
        with open(report_path) as f:
            return json.load(f)["channels_removed"] > 0
    except (OSError, ValueError, KeyError):
        return None


class _Reference:
    """The input model: does it pass the checker, does it run, its outputs on the test inputs."""

    def __init__(self, case: Case):
        self.case = case
        self.model = onnx.load(case.model)
        self.passes_checker = _checker(case.model) is None
        self.feeds = self._feeds()
        self.outputs, self.error = (None, "no inputs") if self.feeds is None else _run(case.model, self.feeds)

    def _feeds(self) -> dict | None:
        from onnxprune.testing import random_inputs

        inits = {t.name for t in self.model.graph.initializer}
        names = [i.name for i in self.model.graph.input if i.name not in inits]
        if self.case.inputs is None:
            try:
                return random_inputs(self.model, {})
            except Exception:  # noqa: BLE001 - dynamic shapes: no reference run
                return None
        with open(self.case.inputs, "rb") as f:
            values = pickle.load(f)
        if len(values) > len(names):
            return None
        return dict(zip(names, values))

    def check(self, out: str, pruned: bool | None) -> tuple[str | None, bool]:
        """(why the output is broken or None, whether its outputs were compared)."""
        if not os.path.exists(out):
            return "exit 0 but no output file", False
        if self.passes_checker:
            err = _checker(out)
            if err:
                return f"onnx.checker: {err}", False
        if self.outputs is None:
            return None, False  # the input itself does not run here
        outputs, err = _run(out, self.feeds)
        if outputs is None:
            return f"output does not run on the test inputs where the input does: {err}", False
        if len(outputs) != len(self.outputs):
            return f"{len(outputs)} outputs, the input has {len(self.outputs)}", True
        for i, (a, b) in enumerate(zip(self.outputs, outputs)):
            if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
                if a.shape != b.shape:
                    return f"output {i} has shape {list(b.shape)}, the input model gives {list(a.shape)}", True
                if not pruned and not _same(a, b):
                    return f"nothing pruned, but output {i} differs (max abs {_max_abs(a, b):.3g})", True
            elif not pruned and not _same_nested(a, b):
                return f"nothing pruned, but output {i} differs", True
        return None, True


def _checker(path: str) -> str | None:
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as exc:  # noqa: BLE001
        return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return None


def _run(path: str, feeds: dict) -> tuple[list | None, str | None]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return sess.run(None, feeds), None
    except Exception as exc:  # noqa: BLE001
        return None, str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))
    return bool(np.array_equal(a, b))


def _same_nested(a, b) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return _same(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_nested(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_nested(a[k], b[k]) for k in a)
    return a == b


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        return float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


# -- the whole suite -----------------------------------------------------------

def _job(args):
    case, out_dir, timeout = args
    try:
        return run_case(case, out_dir, timeout)
    except BaseException as exc:  # noqa: BLE001 - the reference model itself, or the runner
        return [Result(case.name, "runner", None, broken=f"runner: {type(exc).__name__}: {exc}")]


def run_suite(cases: list[Case], jobs: int = 2, timeout: int = 120, progress: bool = False) -> Totals:
    totals = Totals(models=len(cases))
    with tempfile.TemporaryDirectory(prefix="onnx-suite-out-") as out_dir:
        args = [(c, out_dir, timeout) for c in cases]
        if jobs <= 1:  # in this process (tests): only the alarm is installed, and restored after
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            stream = map(_job, args)
            pool = None
        else:
            ctx = multiprocessing.get_context("fork")
            pool = ctx.Pool(jobs, initializer=_init_worker, maxtasksperchild=50)
            stream = pool.imap_unordered(_job, args)
        try:
            for done, results in enumerate(stream, 1):
                for r in results:
                    _add(totals, r)
                by_mode = {r.mode: r for r in results}
                default, unvalidated = by_mode.get("default"), by_mode.get("no-validate")
                if (default and unvalidated and default.rc == 1 and not default.broken and unvalidated.rc == 0
                        and unvalidated.checked and not unvalidated.broken):
                    totals.blamed.append(default)
                if progress and done % 100 == 0:
                    print(f"  {done}/{len(cases)} models, {len(totals.broken)} broken", file=sys.stderr, flush=True)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
            else:
                signal.signal(signal.SIGALRM, previous)
    return totals


def _add(t: Totals, r: Result) -> None:
    t.runs += 1
    t.rc[str(r.rc)] = t.rc.get(str(r.rc), 0) + 1
    t.checked += r.checked
    t.pruned += bool(r.pruned)
    t.identical += bool(r.checked and r.pruned is False and not r.broken)
    if r.broken:
        t.broken.append(r)
    elif r.failed and r.rc == 2:
        t.refused.append(r)
    elif r.failed:
        t.failed.append(r)


def _generic(message: str) -> str:
    """A message with its names and numbers blanked, so that like failures count together."""
    text = re.sub(r"'[^']*'", "'…'", message.removeprefix("onnxprune: "))
    return re.sub(r"\d+", "N", text)[:110]


def format_totals(t: Totals, verbose: bool = False) -> str:
    lines = [f"models {t.models}, CLI runs {t.runs} (default and --no-validate)",
             "exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(t.rc.items())),
             f"exit-0 outputs pruned: {t.pruned}; outputs run and checked on the test inputs: {t.checked} "
             f"(identical to the input with nothing pruned: {t.identical})",
             f"exit 1 (a check failed): {len(t.failed)}, of which {len(t.blamed)} with a --no-validate output "
             "that passes every check on the test inputs",
             f"broken: {len(t.broken)}"]
    for code, rows in (("2", t.refused), ("1", t.failed)):
        reasons = Counter(_generic(r.failed) for r in rows)
        for reason, count in reasons.most_common(8):
            lines.append(f"  exit {code} x{count}: {reason}")
    if verbose:
        for r in sorted(t.failed + t.refused, key=lambda r: (r.name, r.mode)):
            lines.append(f"  exit {r.rc}  {r.name} [{r.mode}]: {r.failed}")
    for r in sorted(t.broken, key=lambda r: (r.name, r.mode)):
        lines.append(f"  BROKEN  {r.name} [{r.mode}] rc {r.rc}: {r.broken}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="only models whose name contains one of these")
    p.add_argument("--sample", type=int, default=0, help="every k-th model only (a fixed sample)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--timeout", type=int, default=120, help="seconds per CLI run")
    p.add_argument("-v", "--verbose", action="store_true", help="list every exit 1 and 2 too")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnx-suite-") as work:
        cases = collect(Path(work), args.only)
        if args.sample:
            cases = cases[::args.sample]
        print(f"{len(cases)} models collected in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        totals = run_suite(cases, min(args.jobs, 2), args.timeout, progress=True)
    print(format_totals(totals, args.verbose))
    print(f"time {time.perf_counter() - t0:.0f}s")
    return 1 if totals.broken else 0


if __name__ == "__main__":
    sys.exit(main())
