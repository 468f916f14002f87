"""The CI contract: .ci/run runs the README's test command, with pins that pyproject.toml allows."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEP = re.compile(r"step (\S+) (.+)")  # a `step NAME COMMAND...` line of .ci/run


def _readme_commands() -> list[str]:
    return [line.strip() for line in (ROOT / "README.md").read_text().splitlines()[:15]
            if line.startswith("    python3 -m venv")]


def _steps(script: str) -> list[tuple[str, str]]:
    """(name, command) of each `step` line of a .ci/run script, in order."""
    return [(m[1], m[2]) for m in (STEP.fullmatch(line.strip()) for line in script.splitlines()) if m]


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
    steps = _steps((ROOT / ".ci" / "run").read_text())
    assert " && ".join(command for _, command in steps) == commands[1]
    assert "-c .ci/constraints.txt" in commands[1]
    assert [name for name, _ in steps][-3:] == ["pytest", "ruff", "mypy"]
    assert "ruff check onnxprune tests tools" in commands[1] and commands[1].endswith("mypy onnxprune")


def test_constraints_pin_the_runtime_and_test_dependencies_within_pyproject():
    pins = _pins()
    assert {"onnx", "onnxruntime", "numpy", "protobuf", "pytest"} <= set(pins)
    assert "onnxprune" not in pins
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"] + project["optional-dependencies"]["test"]:
        name, floor, excluded = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)((?:,!=[0-9.]+)*)", dep).groups()
        pin = pins[name.lower().replace("-", "_")]  # constraints may spell onnx-ir onnx_ir
        assert _version(pin) >= _version(floor), f"{name}=={pin} is below pyproject's {dep}"
        assert pin not in excluded.split(",!=")[1:], f"{name}=={pin} is a release pyproject's {dep} excludes"


def _run_stubbed(tmp_path, exits: dict[str, int]) -> subprocess.CompletedProcess:
    """.ci/run with each step's command replaced by a stub that prints the step's name and exits
    with `exits[name]` (default 0)."""
    script = (ROOT / ".ci" / "run").read_text()
    for name, command in _steps(script):
        stub_command = f"bash -c 'echo ran {name}; exit {exits.get(name, 0)}'"
        script = script.replace(f"step {name} {command}", f"step {name} {stub_command}")
    stub = tmp_path / ".ci" / "run"
    stub.parent.mkdir()
    stub.write_text(script)
    return subprocess.run(["bash", str(stub)], capture_output=True, text=True)


@pytest.mark.parametrize("rc, expected", [(0, 0), (1, 1), (5, 1)])
def test_ci_run_treats_no_tests_as_a_failure(tmp_path, rc, expected):
    """pytest's exit 5 (nothing collected) fails CI; other exit codes pass through."""
    res = _run_stubbed(tmp_path, {"pytest": rc})
    assert res.returncode == expected
    assert ("collected no tests" in res.stderr) == (rc == 5)


@pytest.mark.parametrize("failing", ["install", "pytest", "ruff", "mypy"])
def test_ci_run_stops_at_the_first_failing_step_and_names_it(tmp_path, failing):
    res = _run_stubbed(tmp_path, {failing: 3})
    assert res.returncode == 3
    ran = [line.removeprefix("ran ") for line in res.stdout.splitlines()]
    names = [name for name, _ in _steps((ROOT / ".ci" / "run").read_text())]
    assert ran == names[:names.index(failing) + 1]  # as with the README's `&&`
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]  # one line
    assert res.stderr.startswith(f".ci/run: FAILED: {failing}")


def test_ci_run_passes_when_every_step_passes(tmp_path):
    res = _run_stubbed(tmp_path, {})
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout.split() == [w for name, _ in _steps((ROOT / ".ci" / "run").read_text()) for w in ("ran", name)]
