"""Validation on the CUDA provider; skipped (with the reason) where onnxruntime-gpu or a GPU is absent."""
import onnx
import pytest

import build_example
from onnxprune import PruneConfig, available_providers, prune

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    "cuda" not in available_providers(),
    reason="ONNX Runtime CUDA provider not available (needs onnxruntime-gpu and an NVIDIA GPU)")]


def test_validation_runs_on_cuda_and_cpu(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(build_example.build(), str(path))
    report = prune(str(path), str(tmp_path / "out.onnx"), PruneConfig(ratio=0.5, providers=["cpu", "cuda"]))
    for provider in ("cpu", "cuda"):
        v = report.validation["providers"][provider]
        assert "skipped" not in v and v["latency_after_ms"] > 0
