"""Enforced boundaries: imports point down the layers, protobuf stays in ir/, ONNX Runtime in runtime.py.

Every module of onnxprune/ sits in one layer of LAYERS (by its first name under onnxprune:
`ir.graph` is in the layer of `ir`, `rules.conv` in that of `rules`). A module may import
modules of its own layer and of the layers below, never above; module-level and
function-level imports count alike (a lazy import is still a dependency). A new module
must be given a layer here: an unknown one fails with a message saying so.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "onnxprune"

# Bottom to top. "" is the package itself (onnxprune/__init__.py). Add a new module to the
# layer of the modules it imports or is imported by; split a layer rather than allow an upward import.
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"errors", "paths", "kinds", "formats", "progress", "readahead"}),
    ("ir", {"ir"}),  # the only place that touches protobuf
    ("options", {"options"}),  # the CLI's choice lists; reads ir.limits
    ("indexmap", {"indexmap", "edit", "cache_io"}),
    ("rules", {"rules"}),  # per-op knowledge
    ("groups", {"group"}),
    ("depgraph", {"depgraph"}),
    ("planning", {"importance", "planner", "selection"}),
    ("removal", {"removal", "targets", "allocation"}),
    ("runtime", {"runtime"}),  # the only place that loads ONNX Runtime (besides ir.integrity's load check)
    ("checks", {"validate", "calib"}),
    ("passes", {"apply", "fold", "fold_bodies", "oracle", "compensate", "activation", "saliency", "latency", "report",
                 "sensitivity", "report_html_text", "report_html_calib", "genai_config"}),
    ("config", {"config"}),
    ("api", {"api", "testing", "rule_harness", "report_html"}),
    ("cli", {"cli", "__main__", ""}),
]

# Third-party modules only some of onnxprune may import: name -> the onnxprune modules allowed
# (prefix match on the dotted name under onnxprune).
FENCED = {
    "onnx": ("ir",),
    "google.protobuf": ("ir",),
    "onnxruntime": ("runtime", "ir.integrity"),
}


def layer_of(module: str) -> int | None:
    """Index in LAYERS of a module named under onnxprune ('ir.graph', '' for the package), None if unknown."""
    top = module.split(".")[0]
    return next((i for i, (_, names) in enumerate(LAYERS) if top in names), None)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(module: str) -> bool:
    return (PACKAGE.joinpath(*module.split(".")) / "__init__.py").exists() if module else True


def _exists(module: str) -> bool:
    parts = module.split(".")
    return _is_package(module) or PACKAGE.joinpath(*parts).with_suffix(".py").exists()


def imports(module: str, source: str) -> list[tuple[int, str, str]]:
    """(line, imported name, how it was written) for every import in `source`, at any depth.

    Names inside onnxprune come back as 'onnxprune.X' (relative imports resolved; `from . import X`
    gives the submodule X where there is one); others as written ('onnx.helper').
    """
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name, f"import {a.name}") for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            written = f"from {'.' * node.level}{node.module or ''} import {', '.join(a.name for a in node.names)}"
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module == "onnxprune" or (node.module or "").startswith("onnxprune."):
                target = (node.module or "")[len("onnxprune."):]
            else:
                found.append((node.lineno, node.module or "", written))
                continue
            subs = [f"{target}.{a.name}" if target else a.name for a in node.names]
            if target or not all(_exists(sub) for sub in subs):  # `from . import __version__`: the package
                found.append((node.lineno, f"onnxprune.{target}".rstrip("."), written))
            # `from . import paths`, `from .ir import limits`: the submodules themselves
            found.extend((node.lineno, f"onnxprune.{sub}", written) for sub in subs if _exists(sub))
    return found


def problems(module: str, source: str) -> list[str]:
    """Every import of `module` (dotted under onnxprune) that breaks the layering or a fence."""
    where = f"onnxprune/{module.replace('.', '/') or '__init__'}.py"
    own = layer_of(module)
    if own is None:
        return [f"{where}: module '{module}' is in no layer; add it to LAYERS in tests/test_layers.py"]
    out = []
    for line, name, written in sorted(imports(module, source)):
        if name == "onnxprune" or name.startswith("onnxprune."):
            target = name[len("onnxprune."):] if name != "onnxprune" else ""
            theirs = layer_of(target)
            if theirs is None:
                out.append(f"{where}:{line}: `{written}` imports '{name}', which is in no layer of LAYERS")
            elif theirs > own and target.split(".")[0] != module.split(".")[0]:
                out.append(f"{where}:{line}: `{written}` points up: {module or 'onnxprune'} (layer "
                           f"{LAYERS[own][0]}) imports {target or 'onnxprune'} (layer {LAYERS[theirs][0]})")
            continue
        for fenced, allowed in FENCED.items():
            if name == fenced or name.startswith(fenced + "."):
                if not any(module == a or module.startswith(a + ".") for a in allowed):
                    out.append(f"{where}:{line}: `{written}`: only {', '.join(allowed)} may import {fenced}")
    return list(dict.fromkeys(out))  # in line order, each once


def _modules() -> list[tuple[str, Path]]:
    return [(_module_name(p), p) for p in sorted(PACKAGE.rglob("*.py"))]


@pytest.mark.parametrize("module, path", _modules(), ids=[m or "onnxprune" for m, _ in _modules()])
def test_imports_point_down_the_layers(module, path):
    found = problems(module, path.read_text(encoding="utf-8"))
    assert not found, "\n".join(found)


def test_every_layer_names_a_module_that_exists_or_is_expected():
    """A typo in LAYERS would let its module through unchecked."""
    expected: set[str] = set()  # modules the table names before they exist (none now)
    names = {n for _, layer in LAYERS for n in layer}
    missing = sorted(n for n in names - expected if n and not _exists(n) and n != "__main__")
    assert not missing, f"LAYERS names modules that do not exist: {missing}"


# -- the checker itself must be able to fail ---------------------------------

def test_an_upward_import_is_reported_with_the_module_and_the_import():
    found = problems("planner", "def f():\n    from .api import prune\n")
    assert found == ["onnxprune/planner.py:2: `from .api import prune` points up: planner (layer planning) "
                     "imports api (layer api)"]


def test_an_upward_import_from_a_subpackage_is_reported():
    found = problems("rules.conv", "from ..planner import Plan\nfrom .base import Rule\nfrom ..ir import Graph\n")
    assert found == ["onnxprune/rules/conv.py:1: `from ..planner import Plan` points up: rules.conv "
                     "(layer rules) imports planner (layer planning)"]


def test_absolute_imports_of_onnxprune_count_too():
    assert problems("group", "import onnxprune.api\nfrom onnxprune import planner\n") == [
        "onnxprune/group.py:1: `import onnxprune.api` points up: group (layer groups) imports api (layer api)",
        "onnxprune/group.py:2: `from onnxprune import planner` points up: group (layer groups) imports planner "
        "(layer planning)"]


def test_a_submodule_named_in_from_dot_import_counts():
    assert problems("ir.edit", "from .. import api\n") == [
        "onnxprune/ir/edit.py:1: `from .. import api` points up: ir.edit (layer ir) imports api (layer api)"]


def test_protobuf_outside_ir_is_reported():
    source = "import onnx\nfrom onnx import numpy_helper\nfrom google.protobuf import message\nimport onnxruntime\n"
    found = problems("apply", source)
    assert found == [
        "onnxprune/apply.py:1: `import onnx`: only ir may import onnx",
        "onnxprune/apply.py:2: `from onnx import numpy_helper`: only ir may import onnx",
        "onnxprune/apply.py:3: `from google.protobuf import message`: only ir may import google.protobuf",
        "onnxprune/apply.py:4: `import onnxruntime`: only runtime, ir.integrity may import onnxruntime",
    ]
    assert problems("ir.values", source) == [
        "onnxprune/ir/values.py:4: `import onnxruntime`: only runtime, ir.integrity may import onnxruntime"]


def test_an_unknown_module_is_a_failure_that_says_what_to_do():
    assert problems("newthing", "import os\n") == [
        "onnxprune/newthing.py: module 'newthing' is in no layer; add it to LAYERS in tests/test_layers.py"]
    assert problems("apply", "from .newthing import x\n") == [
        "onnxprune/apply.py:1: `from .newthing import x` imports 'onnxprune.newthing', which is in no layer of LAYERS"]
