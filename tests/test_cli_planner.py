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
