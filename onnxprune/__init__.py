"""onnxprune: structural pruning of ONNX models with DepGraph.

    from onnxprune import prune, PruneConfig
    report = prune("model.onnx", config=PruneConfig(ratio=0.3))

The public names load on first use, so that `onnxprune --help` and `--version`
need neither onnx, ONNX Runtime nor numpy.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import BadInputError, CheckFailedError, ModelLoadError, OnnxPruneError, PlanError

__version__ = "0.1.0"

_LAZY = {"Analysis": "api", "PruneConfig": "api", "analyze": "api", "prune": "api", "verify": "api",
         "Plan": "planner", "PruneReport": "report"}

__all__ = ["Analysis", "BadInputError", "CheckFailedError", "ModelLoadError", "OnnxPruneError", "Plan",
           "PlanError", "PruneConfig", "PruneReport", "analyze", "prune", "verify", "__version__"]

if TYPE_CHECKING:
    from .api import Analysis, PruneConfig, analyze, prune, verify
    from .planner import Plan
    from .report import PruneReport


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
