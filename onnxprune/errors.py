"""The project's exception types. Messages name the node, tensor, expectation and finding."""
from __future__ import annotations


class OnnxPruneError(Exception):
    """Base class of every error raised on purpose by onnxprune."""


class BadInputError(OnnxPruneError):
    """The user's model, plan, shape or option cannot be used (CLI exit code 2)."""


class ModelLoadError(BadInputError):
    """The model file is missing, corrupt, or of an unsupported opset."""


class PlanError(BadInputError):
    """A plan file does not fit the model it is applied to."""


class OutputWriteError(BadInputError):
    """An output file could not be written (read-only or full disk); nothing partial is left."""


class CheckFailedError(OnnxPruneError):
    """Validation or the dead-channel oracle found the pruned model wrong (CLI exit code 1)."""
