"""onnxprune: structural pruning of ONNX models with DepGraph.

    from onnxprune import prune, PruneConfig
    report = prune("model.onnx", config=PruneConfig(ratio=0.3))

    from onnxprune import analyze
    analysis = analyze("model.onnx")              # or an onnx.ModelProto, or a Model
    plan = analysis.plan(PruneConfig(ratio=0.3))
    analysis.apply(plan).save("model.pruned.onnx")

`onnxprune.testing` holds the helpers that tests and tools need beyond the pipeline.

The public names load on first use, so that `onnxprune --help` and `--version`
need neither onnx, ONNX Runtime nor numpy.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import BadInputError, CheckFailedError, ModelLoadError, OnnxPruneError, PlanError

__version__ = "0.1.0"

_LAZY = {"Analysis": "api", "PruneConfig": "api", "analyze": "api", "prune": "api", "verify": "api",
         "available_providers": "testing", "Model": "ir.model", "TensorSpec": "ir.model",
         "OracleResult": "oracle", "Plan": "planner", "PlanGroup": "planner", "ModelStats": "report",
         "PruneReport": "report"}

__all__ = ["Analysis", "BadInputError", "CheckFailedError", "Model", "ModelLoadError", "ModelStats", "OnnxPruneError",
           "OracleResult", "Plan", "PlanError", "PlanGroup", "PruneConfig", "PruneReport", "TensorSpec", "analyze",
           "available_providers", "prune", "verify", "__version__"]

if TYPE_CHECKING:
    from .api import Analysis, PruneConfig, analyze, prune, verify
    from .ir.model import Model, TensorSpec
    from .oracle import OracleResult
    from .planner import Plan, PlanGroup
    from .report import ModelStats, PruneReport
    from .testing import available_providers


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxprune' has no attribute '{name}'")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
