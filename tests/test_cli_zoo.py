"""What the user runs: `onnxprune MODEL` with its defaults (validation on) on every zoo model.

Each run must exit 0 and write a model that passes the full onnx.checker, runs in ONNX Runtime
with graph optimisations on and off, keeps the output shapes, and is smaller than its input
(or the report says in one line why nothing was pruned). Skipped when the zoo is absent.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import zoo
from onnxprune import cli
from onnxprune.testing import random_inputs, run_model

pytestmark = [pytest.mark.zoo, pytest.mark.skipif(zoo.zoo_dir() is None, reason="shared model zoo not found")]


@pytest.mark.parametrize("name", zoo.model_names())
def test_default_command_writes_a_valid_smaller_model(name, zoo_cache, tmp_path, capsys):
    source = zoo.write_filled(name, zoo_cache)
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    rc = cli.main([str(source), "-o", str(out), "--report-json", str(report)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "internal error" not in captured.err
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    original = onnx.load(str(source))
    feeds = random_inputs(original, {}, int_high=zoo.meta(name).get("int_high"))
    reference = run_model(original, feeds).outputs
    for optimize in (True, False):
        outputs = run_model(pruned, feeds, optimize=optimize).outputs
        assert [o.shape for o in outputs] == [r.shape for r in reference]
        assert all(np.all(np.isfinite(o)) for o in outputs if o.dtype.kind == "f")
    data = json.loads(report.read_text())
    assert data["after"]["params"] < data["before"]["params"], captured.out
