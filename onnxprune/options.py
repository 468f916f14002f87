"""The names the command line offers as choices, kept free of heavy imports.

`onnxprune --help` builds its parser from these without loading onnx, ONNX Runtime
or numpy; the modules that implement each choice re-export their list from here.
"""
from __future__ import annotations

WEIGHT_CRITERIA = ("l1", "l2", "bn", "lamp", "fpgm", "random")  # importance.py
ACTIVATION_CRITERIA = ("act",)  # activation.py (needs --calib)
REDUCTIONS = ("sum", "mean", "max")  # how a group's slice scores combine
COMPENSATIONS = ("none", "bias", "lsq")  # compensate.py
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}  # validate.py
