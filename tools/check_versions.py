"""Run the test suite against other dependency versions than the pinned ones (.ci/constraints.txt).

Each configuration gets a fresh venv under /tmp/onnxprune-versions/NAME, installs this checkout
with `pip install --only-binary :all: -c PINS -e '.[test]'` and runs the README's test command;
a table of configuration -> installed versions -> passed/failed counts is printed at the end.

    python tools/check_versions.py                 # newest releases, then pyproject's floors
    python tools/check_versions.py newest          # only the newest onnx / onnxruntime / numpy
    python tools/check_versions.py oldest          # only the oldest versions pyproject.toml allows
    python tools/check_versions.py --pin onnx==1.15.0 --pin numpy==1.24.4   # one custom set
    python tools/check_versions.py oldest --tests tests/test_zoo_seq.py        # a part of the suite

`newest` is unconstrained: drift in a new release shows the day it is out. `oldest` pins every
runtime dependency of pyproject.toml to its floor (`onnx>=1.14` -> `onnx==1.14`); when a floor has
no wheel for this Python, the oldest release at or above it that has one is taken (and said so).
Configurations run one after another (the suite uses every core). The suite runs on a copy of
the committed tree (`git archive HEAD`, or `--worktree` for the files as they are), so editing the
checkout meanwhile does not change what is measured; the zoo stays where it is (ONNXPRUNE_ZOO).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = Path("/tmp/onnxprune-versions")
WATCHED = ("onnx", "onnxruntime", "numpy", "protobuf", "ml_dtypes", "pytest")
SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def floors() -> dict[str, str]:
    """`name -> lowest version` of the runtime dependencies in pyproject.toml (`>=` bounds)."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib  # Python 3.11+
        deps = tomllib.loads(text)["project"]["dependencies"]
    except ImportError:
        deps = re.findall(r'"([^"]+)"', re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.M | re.S).group(1))
    out = {}
    for dep in deps:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)\s*(,.*)?", dep)
        if not m:
            raise SystemExit(f"cannot read a '>=' floor from dependency '{dep}' in pyproject.toml")
        out[m.group(1)] = m.group(2)
    return out


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def released(python: Path, name: str) -> list[str]:
    """Versions of `name` on the configured index, oldest first (one `pip index` look-up)."""
    res = subprocess.run([str(python), "-m", "pip", "index", "versions", name],
                         capture_output=True, text=True)
    m = re.search(r"Available versions: (.*)", res.stdout)
    if not m:
        return []
    versions = [v.strip() for v in m.group(1).split(",") if re.fullmatch(r"[0-9.]+", v.strip())]
    return sorted(versions, key=_key)


def has_wheel(python: Path, name: str, version: str) -> bool:
    res = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps",
                          "--only-binary", ":all:", f"{name}=={version}"], capture_output=True, text=True)
    return res.returncode == 0


def oldest_pins(python: Path, notes: list[str]) -> list[str]:
    """`name==version` for every floor; a floor without a wheel here moves to the next release that has one."""
    pins = []
    for name, floor in floors().items():
        if has_wheel(python, name, floor):
            pins.append(f"{name}=={floor}")
            continue
        later = [v for v in released(python, name) if _key(v) >= _key(floor)]
        chosen = next((v for v in later if has_wheel(python, name, v)), None)
        if chosen is None:
            raise SystemExit(f"no release of {name} >= {floor} has a wheel for this Python")
        notes.append(f"{name}=={floor} has no wheel for Python {sys.version_info.major}.{sys.version_info.minor}: "
                     f"took {chosen}, the oldest that has one")
        pins.append(f"{name}=={chosen}")
    return pins


def make_venv(name: str) -> Path:
    where = BASE / name
    if where.exists():
        shutil.rmtree(where)
    where.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where / "bin" / "python"


def snapshot(worktree: bool) -> Path:
    """A copy of the checkout to install and test: the committed HEAD, or the working tree as it is."""
    src = BASE / "src"
    if src.exists():
        shutil.rmtree(src)
    if worktree:
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__"))
    else:
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src


def run_config(name: str, pins: list[str] | None, log_dir: Path, src: Path, tests: list[str]) -> dict:
    """Install with `pins` as constraints (None: unconstrained newest), run the suite, count the outcomes."""
    python = make_venv(name)
    notes: list[str] = []
    if pins is not None and not pins:
        pins = oldest_pins(python, notes)
    cmd = [str(python), "-m", "pip", "install", "--only-binary", ":all:", "-e", ".[test]"]
    if pins:
        constraints = python.parent.parent / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        cmd += ["-c", str(constraints)]
    else:
        cmd += ["--upgrade", "--upgrade-strategy", "eager"]
    row = {"name": name, "pins": pins or [], "notes": notes}
    t0 = time.time()
    inst = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
    (log_dir / f"{name}.install.log").write_text(inst.stdout + inst.stderr)
    if inst.returncode != 0:
        row.update(status="install failed", counts={}, versions={}, seconds=time.time() - t0,
                   detail=_conflict(inst.stdout + inst.stderr))
        return row
    row["versions"] = installed(python)
    row["import_onnx_s"] = import_seconds(python, "onnx")
    t0 = time.time()
    env = dict(os.environ)
    env.setdefault("ONNXPRUNE_ZOO", str(ROOT.parent / "shared" / "zoo"))
    test = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=src,
                          capture_output=True, text=True, env=env)
    (log_dir / f"{name}.pytest.log").write_text(test.stdout + test.stderr)
    counts = {}
    tail = _last_lines(test.stdout, 1)
    for n, what in SUMMARY.findall(tail):
        counts["errors" if what.startswith("error") else what] = int(n)
    row.update(counts=counts, seconds=time.time() - t0,
               status="passed" if test.returncode == 0 else f"pytest exit {test.returncode}",
               detail=_failures(test.stdout))
    return row


def installed(python: Path) -> dict[str, str]:
    res = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True)
    versions = {}
    for line in res.stdout.splitlines():
        name, sep, version = line.partition("==")
        if sep and name.lower().replace("-", "_") in WATCHED:
            versions[name.lower().replace("-", "_")] = version
    return versions


def import_seconds(python: Path, module: str, runs: int = 3) -> float:
    """Best wall time of `python -c "import module"` (with .pyc caches): start-up drift, e.g. a slow
    ml_dtypes release, shows here before users feel it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    best = float("inf")
    for _ in range(runs + 1):  # the first run writes the .pyc files
        t0 = time.perf_counter()
        subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, env=env)
        best = min(best, time.perf_counter() - t0)
    return best


def _last_lines(text: str, n: int) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def _conflict(text: str) -> str:
    """pip's explanation of a failed install: the 'conflict is caused by' lines, else its last error."""
    lines = [ln for ln in text.splitlines() if "is ignored" not in ln]
    for i, line in enumerate(lines):
        if "conflict is caused by" in line:
            cause = []
            for ln in lines[i + 1:]:
                if not ln.strip():
                    break
                cause.append(ln.strip())
            return "conflict: " + "; ".join(cause)
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return errors[-1] if errors else _last_lines(text, 2)


def _failures(stdout: str, top: int = 8) -> str:
    failed = [ln for ln in stdout.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    return "\n".join(failed[:top]) + (f"\n... {len(failed) - top} more" if len(failed) > top else "")


def table(rows: list[dict]) -> str:
    head = ("| config | " + " | ".join(WATCHED)
            + " | import onnx | passed | failed | errors | skipped | result | suite time |")
    lines = [head, "|" + "---|" * (len(WATCHED) + 8)]
    for r in rows:
        v, c = r.get("versions", {}), r.get("counts", {})
        startup = f"{r['import_onnx_s']:.2f} s" if "import_onnx_s" in r else "-"
        lines.append(f"| {r['name']} | " + " | ".join(v.get(k, "-") for k in WATCHED) + f" | {startup}"
                     + f" | {c.get('passed', 0)} | {c.get('failed', 0)} | {c.get('errors', 0)} | "
                     f"{c.get('skipped', 0)} | {r['status']} | {r['seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*", metavar="{newest,oldest}",
                    help="which configurations (default: both)")
    ap.add_argument("--pin", action="append", default=[], metavar="PKG==VERSION",
                    help="run one configuration 'custom' with these pins instead")
    ap.add_argument("--worktree", action="store_true", help="test the working tree as it is, not HEAD")
    ap.add_argument("--tests", nargs="+", default=[], metavar="TEST",
                    help="run only these tests (pytest node ids or paths), e.g. the ones a run failed")
    ap.add_argument("--logs", default=str(BASE / "logs"), help="where install and pytest logs go")
    args = ap.parse_args(argv)
    unknown = [c for c in args.configs if c not in ("newest", "oldest")]
    if unknown:
        ap.error(f"unknown configuration {unknown[0]!r}: choose newest or oldest")
    log_dir = Path(args.logs)
    log_dir.mkdir(parents=True, exist_ok=True)
    if args.pin:
        plan = [("custom", list(args.pin))]
    else:
        plan = [(c, None if c == "newest" else []) for c in (args.configs or ["newest", "oldest"])]
    src = snapshot(args.worktree)
    rows = []
    for name, pins in plan:
        print(f"== {name}: installing and running the suite ...", flush=True)
        row = run_config(name, pins, log_dir, src, args.tests)
        rows.append(row)
        print(f"   {row['status']}: {row.get('counts')} {row.get('versions')}", flush=True)
        for note in row["notes"]:
            print(f"   note: {note}", flush=True)
        if row.get("detail"):
            print("   " + row["detail"].replace("\n", "\n   "), flush=True)
    print()
    print(table(rows))
    print(f"\nlogs: {log_dir}")
    return 0 if all(r["status"] == "passed" for r in rows) else 1


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
