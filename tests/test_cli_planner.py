"""CLI planner flags: exit codes, the plan they write, and the targets they reach."""
import json

import pytest
from helpers import save
from planner_models import conv_chain

from onnxprune.cli import main


@pytest.fixture
def model_path(tmp_path):
    return save(conv_chain((24, 40, 16), quiet={1: 10}), tmp_path)


def _run(tmp_path, model_path, *flags: str) -> tuple[int, dict]:
    plan = tmp_path / "plan.json"
    code = main([model_path, "-o", str(tmp_path / "out.onnx"), "--no-validate", "-q", "--plan-out", str(plan),
                 "--report-json", str(tmp_path / "report.json"), "--round-to", "1", *flags])
    return code, json.loads(plan.read_text()) if code == 0 else {}


@pytest.mark.parametrize("flags", [["--round-to", "0"], ["--round-to", "two"], ["--max-ratio", "1.5"],
                                   ["--ratio-for", "Conv_a0"], ["--ratio-for", "Conv_a0=1.2"],
                                   ["--target-params", "0"], ["--target-params", "0.5", "--ratio", "0.3"],
                                   ["--target-params", "0.5", "--target-macs", "0.5"],
                                   ["--group-reduction", "median"], ["--importance", "taylor"]])
def test_bad_planner_flags_exit_2(tmp_path, model_path, flags, capsys):
    assert main([model_path, "-o", str(tmp_path / "o.onnx"), "--no-validate", *flags]) == 2
    assert "onnxprune: error:" in capsys.readouterr().err


def test_plan_in_with_planner_flags_exits_2(tmp_path, model_path):
    code, _ = _run(tmp_path, model_path)
    assert code == 0
    assert main([model_path, "-o", str(tmp_path / "o.onnx"), "--plan-in", str(tmp_path / "plan.json"),
                 "--global"]) == 2


def test_global_round_to_writes_a_rounded_plan(tmp_path, model_path):
    code, plan = _run(tmp_path, model_path, "--global", "--ratio", "0.4", "--round-to", "4")
    assert code == 0 and plan["meta"]["global"] and plan["meta"]["round_to"] == 4
    assert plan["groups"] and all((g["size"] - len(g["pruned"])) % 4 == 0 for g in plan["groups"])


@pytest.mark.parametrize("flag, field", [("--target-params", "params"), ("--target-macs", "macs")])
def test_target_flags_reach_the_target(tmp_path, model_path, flag, field):
    code, _ = _run(tmp_path, model_path, flag, "0.5")
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0
    assert abs(report["after"][field] / report["before"][field] - 0.5) <= 0.01
    assert any(note.startswith(f"target {field} 0.5") for note in report["notes"])


def test_ignore_and_ratio_for_flags(tmp_path, model_path):
    code, plan = _run(tmp_path, model_path, "--ratio", "0.25", "--ignore", "Conv_a0", "--ratio-for", "b2=0.5")
    assert code == 0
    by_size = {g["size"]: len(g["pruned"]) for g in plan["groups"]}
    assert by_size == {40: 10, 16: 8}  # the 24-channel group is ignored; the b2 group takes 0.5


@pytest.mark.parametrize("criterion", ["lamp", "fpgm"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_new_criteria_and_reductions_run(tmp_path, model_path, criterion, reduction):
    code, plan = _run(tmp_path, model_path, "--importance", criterion, "--group-reduction", reduction)
    assert code == 0 and plan["meta"]["importance"] == criterion and plan["meta"]["group_reduction"] == reduction
    assert len(plan["groups"]) == 3


def test_round_to_defaults_to_8(tmp_path, model_path):
    plan_path = tmp_path / "default.json"
    assert main([model_path, "-o", str(tmp_path / "o.onnx"), "--no-validate", "-q", "--ratio", "0.5",
                 "--plan-out", str(plan_path)]) == 0
    plan = json.loads(plan_path.read_text())
    assert plan["meta"]["round_to"] == 8
    assert plan["groups"] and all((g["size"] - len(g["pruned"])) % 8 == 0 for g in plan["groups"])


# -- plans in the input model's coordinates -----------------------------------------------------

def _shared_weight_model():
    """Two Convs read one small shared weight `w` (the loader gives the second a private copy
    `w__1`); both are roots of their own group, and the shared bias `z` is sliced by both."""
    import numpy as np
    from helpers import make_model, node, weight

    inits = {"w": weight(8, 8, 3, 3), "z": np.zeros(8, np.float32), "w3": weight(4, 8, 1, 1)}
    nodes = [node("Conv", ["x", "w", "z"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "ra"),
             node("Conv", ["ra", "w", "z"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "rc"),
             node("Conv", ["rc", "w3"], "y")]
    return make_model(nodes, {"x": [1, 8, 8, 8]}, {"y": [1, 4, 8, 8]}, inits)


def _model_names(path) -> set[str]:
    import onnx

    g = onnx.load(str(path)).graph
    return ({t.name for t in g.initializer} | {i.name for i in g.input}
            | {o for n in g.node for o in n.output})


def _plan_tensors(plan: dict) -> list[dict]:
    refs = []
    for g in plan["groups"]:
        refs.append(g["root"])
        refs.extend(g.get("slices", []))
    return refs


def test_plan_names_only_the_input_models_tensors(tmp_path):
    path = save(_shared_weight_model(), tmp_path)
    code, plan = _run(tmp_path, path, "--ratio", "0.5")
    assert code == 0 and len(plan["groups"]) == 2
    names = _model_names(path)
    refs = _plan_tensors(plan)
    assert {r["tensor"] for r in refs} <= names, "the plan names tensors the tool made"
    assert sorted(g["root"]["tensor"] for g in plan["groups"]) == ["a", "c"]  # roots are node outputs
    # every slice of a shared constant says whose copy it is: the node and input reading it
    shared = [r for r in refs if r["tensor"] in ("w", "z")]
    assert shared and all("node" in r and "input" in r for r in shared)
    assert {(r["node"], r["input"], r["axis"], r["role"]) for r in shared} == {
        ("Conv_a", 1, 0, "out"), ("Conv_a", 2, 0, "out"), ("Conv_c", 1, 1, "in"),  # group of a
        ("Conv_c", 1, 0, "out"), ("Conv_c", 2, 0, "out")}  # group of c
    assert all(set(r) == {"tensor", "axis", "indices", "role"} for r in refs if r["tensor"] == "w3")


def test_plan_out_then_plan_in_reproduces_the_pruned_model(tmp_path):
    path = save(_shared_weight_model(), tmp_path)
    first, second, plan = tmp_path / "first.onnx", tmp_path / "second.onnx", tmp_path / "plan.json"
    assert main([path, "-o", str(first), "-q", "--providers", "cpu", "--round-to", "1", "--ratio", "0.5",
                 "--plan-out", str(plan)]) == 0
    assert main([path, "-o", str(second), "-q", "--providers", "cpu", "--plan-in", str(plan),
                 "--plan-out", str(tmp_path / "again.json")]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert json.loads(plan.read_text())["groups"] == json.loads((tmp_path / "again.json").read_text())["groups"]


def test_analyze_json_names_only_the_input_models_tensors(tmp_path):
    path = save(_shared_weight_model(), tmp_path)
    out = tmp_path / "groups.json"
    assert main(["analyze", path, "--json", str(out)]) == 0
    slices = [s for g in json.loads(out.read_text())["groups"] for s in g["slices"]]
    assert {s["tensor"] for s in slices} <= _model_names(path)
    assert {(s["node"], s["input"]) for s in slices if s["tensor"] == "w"} == {("Conv_a", 1), ("Conv_c", 1)}


def test_target_latency_plans_from_a_table_timed_per_group(tmp_path):
    """--target-latency: every prunable group is timed alone at half its units, the plan is bisected on
    that table's estimate and corrected by what the planned model measures (at most 3 rounds, the first
    aiming at the target itself), and the report says so (whether the speed meets the target is the
    benchmarks' business, not a test's)."""
    path = save(conv_chain((96, 96), spatial=48), tmp_path)  # compute-bound: ~0.1 GMAC per conv
    code, plan = _run(tmp_path, path, "--target-latency", "0.7")
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0, report
    table, target = plan["meta"]["latency_table"], plan["meta"]["target"]
    assert table["provider"] == "cpu" and table["original_ms"] > 0 and len(table["saved_ms_per_unit"]) == 2
    assert target["metric"] == "latency" and 1 <= len(table["rounds"]) <= 3 and table["rounds"][0]["goal"] == 0.7
    assert table["measured_kept"] in [r["measured"] for r in table["rounds"]]
    assert target["kept"] == pytest.approx(table["measured_kept"], abs=1e-4)
    assert any(n.startswith("latency target: 0.7 of the original's") and "measured" in n for n in report["notes"])


def test_target_latency_excludes_the_other_targets(tmp_path, model_path, capsys):
    assert main([model_path, "-o", str(tmp_path / "o.onnx"), "--target-latency", "0.5", "--target-macs", "0.5"]) == 2
    assert "--target-latency" in capsys.readouterr().err
