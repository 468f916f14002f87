"""onnxprune: structural pruning of ONNX models with DepGraph.

    from onnxprune import prune, PruneConfig
    report = prune("model.onnx", config=PruneConfig(ratio=0.3))
"""
from .api import Analysis, PruneConfig, analyze, prune, verify
from .errors import BadInputError, CheckFailedError, ModelLoadError, OnnxPruneError, PlanError
from .planner import Plan
from .report import PruneReport

__version__ = "0.1.0"

__all__ = ["Analysis", "BadInputError", "CheckFailedError", "ModelLoadError", "OnnxPruneError", "Plan",
           "PlanError", "PruneConfig", "PruneReport", "analyze", "prune", "verify", "__version__"]
