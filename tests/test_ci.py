"""The CI contract: .ci/run runs the README's test command, with pins that pyproject.toml allows."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return [line.strip() for line in (ROOT / "README.md").read_text().splitlines()[:15]
            if line.startswith("    python3 -m venv")]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.strip().partition("==")
            assert sep, f"constraint '{line}' is not an exact pin"
            pins[name.lower().replace("-", "_")] = version
    return pins


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", v))


def test_ci_runs_exactly_the_readmes_test_command():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in [line.strip() for line in ci]
    assert "-c .ci/constraints.txt" in commands[1]


def test_constraints_pin_the_runtime_and_test_dependencies_within_pyproject():
    pins = _pins()
    assert {"onnx", "onnxruntime", "numpy", "protobuf", "pytest"} <= set(pins)
    assert "onnxprune" not in pins
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"] + project["optional-dependencies"]["test"]:
        name, floor = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep).groups()
        assert _version(pins[name.lower()]) >= _version(floor), f"{name}=={pins[name]} is below pyproject's {dep}"


@pytest.mark.parametrize("rc, expected", [(0, 0), (1, 1), (5, 1)])
def test_ci_run_treats_no_tests_as_a_failure(tmp_path, rc, expected):
    """.ci/run with its commands replaced by a stub exiting `rc` (pytest's 5: nothing collected)."""
    script = (ROOT / ".ci" / "run").read_text()
    command = _readme_commands()[1]
    stub = tmp_path / ".ci" / "run"
    stub.parent.mkdir()
    stub.write_text(script.replace(command, f"(exit {rc})"))
    res = subprocess.run(["bash", str(stub)], capture_output=True, text=True)
    assert res.returncode == expected
    assert ("collected no tests" in res.stderr) == (rc == 5)
