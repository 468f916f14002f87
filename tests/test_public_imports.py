"""tools/ and tests/ use onnxprune through its public names only, so the internals can move.

The public modules are:

* `onnxprune` (the pipeline: analyze, prune, verify, Analysis, Model, Plan, PruneConfig, the errors, ...),
* `onnxprune.testing` (helpers for tests and tools: random_inputs, run_model, compare, model_stats, ...),
* `onnxprune.report_html` (render a report as one HTML page: render, save_html),
* `onnxprune.rule_harness` (one node in, the rule's channel map out; prune_through a node with the oracle),
* `onnxprune.ir` (the IR package: Graph, Model, load, ...) and its submodules,
* `onnxprune.errors`, `onnxprune.config`, `onnxprune.options`,
* `onnxprune.cli` (for tests of the command line),
* `onnxprune.rules` and `onnxprune.rules.*` (a rule's unit test imports the rule it tests).

A name imported from `onnxprune`, `onnxprune.testing` or `onnxprune.ir` must be in that module's
`__all__` (or be a submodule of it). No name starting with `_` is imported from anywhere.

A unit test of one internal module may import that module (and the few it needs to set up its
input): UNIT_TESTS lists each such test file with the modules it may import. Nothing in tools/
imports an internal module.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "onnxprune"

PUBLIC = {"onnxprune", "onnxprune.testing", "onnxprune.rule_harness", "onnxprune.report_html", "onnxprune.ir",
          "onnxprune.errors", "onnxprune.config", "onnxprune.options", "onnxprune.cli", "onnxprune.rules"}
PUBLIC_PREFIXES = ("onnxprune.ir.", "onnxprune.rules.")
# imported names must be in __all__
WITH_ALL = ("onnxprune", "onnxprune.testing", "onnxprune.rule_harness", "onnxprune.ir")

UNIT_TESTS = {
    "test_activation.py": {"activation", "calib"},
    "test_calib.py": {"calib"},
    "test_compensate.py": {"calib", "compensate"},
    "test_importance.py": {"importance"},
    "test_saliency.py": {"saliency", "calib", "sensitivity"},  # compensated curves
    "test_indexmap.py": {"indexmap", "depgraph"},  # the group-growing kernels against plain references
    "test_invariants.py": {"api", "depgraph", "edit", "group", "kinds", "planner"},  # value types and strict mode
    "test_planner.py": {"planner", "group", "targets"},
    "test_validate.py": {"validate", "fold"},  # a folding bug must surface, not read as "not foldable"
    "test_postcondition.py": {"apply"},  # breaks apply's bookkeeping to see the postcondition fire
    "test_ir.py": {"api", "fold"},  # fault injection into the pipeline; the folder's frontier
    "test_rules_concat_split.py": {"indexmap"},  # breaks the index maps to see the checks fire
    "test_rule_harness.py": {"indexmap"},  # breaks the index maps to see the harness catch it
    "test_rules_quant.py": {"importance"},  # importance of dequantized weights
    "test_sensitivity.py": {"sensitivity", "calib"},  # measure() on loaded calibration data
    "test_prune_cache.py": {"cache_io"},  # breaks the cache slicing to see the oracle fail
}


def _is_submodule(module: str, name: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return (base / f"{name}.py").exists() or (base / name / "__init__.py").exists()


def _imports(source: str) -> list[tuple[int, str, str | None]]:
    """(line, module, name or None) for every onnxprune import; `from onnxprune import calib`
    counts as the module onnxprune.calib."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "onnxprune"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "onnxprune":
            for a in node.names:
                if _is_submodule(node.module, a.name):
                    found.append((node.lineno, f"{node.module}.{a.name}", None))
                else:
                    found.append((node.lineno, node.module, a.name))
    return found


def _public_all(module: str) -> set[str]:
    return set(importlib.import_module(module).__all__)


def problems(source: str, filename: str) -> list[str]:
    """What `source` (a file named `filename`) imports that is not public."""
    allowed_internal = {f"onnxprune.{m}" for m in UNIT_TESTS.get(filename, ())}
    out = []
    for line, module, name in _imports(source):
        where = f"{filename}:{line}"
        if module not in PUBLIC and not module.startswith(PUBLIC_PREFIXES) and module not in allowed_internal:
            out.append(f"{where}: imports internal module {module}")
        elif any(part.startswith("_") for part in module.split(".")):
            out.append(f"{where}: imports private module {module}")
        elif name is not None and name.startswith("_"):
            out.append(f"{where}: imports private name {module}.{name}")
        elif name is not None and module in WITH_ALL and name not in _public_all(module):
            out.append(f"{where}: {module}.{name} is not in {module}.__all__")
    return out


def _files() -> list[Path]:
    return sorted((ROOT / "tools").glob("*.py")) + sorted((ROOT / "tests").glob("*.py"))


@pytest.mark.parametrize("path", _files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_imports_only_public_names(path):
    assert problems(path.read_text(), path.name) == []


def test_internal_and_private_imports_are_caught():
    source = ("from onnxprune.planner import _UnitTable\nfrom onnxprune.apply import apply_plan\n"
              "import onnxprune.oracle\nfrom onnxprune import calib\nfrom onnxprune.testing import _raw\n"
              "from onnxprune import plan_for\nfrom onnxprune import analyze, testing\n"
              "from onnxprune.rules.conv import WHOLE\n")
    assert problems(source, "test_x.py") == [
        "test_x.py:1: imports internal module onnxprune.planner",
        "test_x.py:2: imports internal module onnxprune.apply",
        "test_x.py:3: imports internal module onnxprune.oracle",
        "test_x.py:4: imports internal module onnxprune.calib",
        "test_x.py:5: imports private name onnxprune.testing._raw",
        "test_x.py:6: onnxprune.plan_for is not in onnxprune.__all__",
    ]
    assert problems("from onnxprune import calib\n", "test_calib.py") == []  # a module's own unit test


@pytest.mark.parametrize("module", WITH_ALL)
def test_public_names_exist_and_say_what_they_do(module):
    mod = importlib.import_module(module)
    for name in mod.__all__:
        value = getattr(mod, name)  # raises when __all__ names something that is not there
        if callable(value) and module != "onnxprune.ir":  # ir re-exports helpers documented where they live
            assert (value.__doc__ or "").strip(), f"{module}.{name} has no docstring"
