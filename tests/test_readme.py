"""The README's "Python API" examples run as written, one after the other, on models/tiny_cnn.onnx."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Python API"


def python_blocks(text: str, heading: str = SECTION) -> list[str]:
    """The ```python blocks of the README section under `heading` (up to the next `## ` heading)."""
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    end = re.search(r"^## ", rest, re.MULTILINE)
    body = rest[:end.start()] if end else rest
    return re.findall(r"^```python\n(.*?)^```$", body, re.MULTILINE | re.DOTALL)


def test_the_section_has_examples():
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3
    joined = "\n".join(blocks)
    for call in ("analyze(", ".plan(", ".apply(", ".save(", ".verify(", "prune("):
        assert call in joined, f"the Python API section shows no {call}"


def test_the_extractor_stops_at_the_next_section():
    text = "## Python API\n```python\nx = 1\n```\n## Next\n```python\nraise SystemExit\n```\n"
    assert python_blocks(text) == ["x = 1\n"]


def test_the_examples_run(tmp_path, monkeypatch, capsys):
    shutil.copy(ROOT / "models" / "tiny_cnn.onnx", tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(python_blocks((ROOT / "README.md").read_text())):
        try:
            exec(compile(block, f"README.md Python API block {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the block that broke
            pytest.fail(f"block {i + 1} of the Python API section fails: {type(exc).__name__}: {exc}\n{block}")
    assert (tmp_path / "model.pruned.onnx").exists() and (tmp_path / "model.small.onnx").exists()
    assert (tmp_path / "model.onnx").read_bytes() == (ROOT / "models" / "tiny_cnn.onnx").read_bytes()
    assert "parameters" in capsys.readouterr().out
