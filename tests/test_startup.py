"""Start-up stays light: --help, --version and argument errors load neither onnx, ONNX Runtime
nor numpy (structural checks in a fresh interpreter; the timings live in docs/benchmarks.md)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("onnx", "onnxruntime", "numpy")

_PROBE = """
import json, sys
import onnxprune.cli
code = None
try:
    code = onnxprune.cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def _probe(*argv: str) -> dict:
    """Run the CLI in a fresh interpreter; the exit code and which heavy modules it loaded."""
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0),
    (["verify", "--help"], 0),
    (["analyze", "--help"], 0),
    (["--version"], 0),
    (["model.onnx", "--ratio", "2"], 2),
    (["model.onnx", "--importance", "nope"], 2),
    (["model.onnx", "--ratio-for", "Conv*=x"], 2),
])
def test_parsing_alone_loads_no_heavy_module(argv, code):
    result = _probe(*argv)
    assert result["code"] == code
    assert result["loaded"] == [], f"{' '.join(argv)} imported {result['loaded']}"


def test_running_a_command_does_load_them(tmp_path):
    # The probe can see a heavy import: a missing model reaches the loader, which imports onnx.
    result = _probe(str(tmp_path / "missing.onnx"), "--no-validate")
    assert result["code"] == 2
    assert "onnx" in result["loaded"]


def test_package_names_load_on_first_use():
    probe = ("import sys, onnxprune; before = 'onnx' in sys.modules; "
             "from onnxprune import PruneConfig, Plan, PruneReport, prune; "
             "print(before, 'onnx' in sys.modules, PruneConfig.__module__, Plan.__module__)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True", "onnxprune.config", "onnxprune.planner"], done.stderr


def test_unknown_package_name_is_an_attribute_error():
    import onnxprune

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        onnxprune.nope  # noqa: B018
