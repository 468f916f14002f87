"""Targets on real models from the shared zoo (skipped when the zoo is absent)."""
import pytest

import zoo
from onnxprune import PruneConfig, analyze
from onnxprune.api import plan_for
from onnxprune.apply import apply_plan
from onnxprune.ir import Graph, infer_shapes
from onnxprune.report import model_stats

pytestmark = [pytest.mark.zoo, pytest.mark.skipif(zoo.zoo_dir() is None, reason="shared zoo not present")]


@pytest.mark.parametrize("name", ["tv_resnet50", "tv_mobilenet_v2"])
@pytest.mark.parametrize("metric", ["params", "macs"])
def test_target_half_lands_within_one_percent(zoo_cache, name, metric):
    analysis = analyze(str(zoo.write_filled(name, zoo_cache)))
    plan = plan_for(analysis, PruneConfig(**{f"target_{metric}": 0.5}))
    pruned = apply_plan(analysis.graph, analysis.groups, plan)  # counted on the applied model, not the estimate
    before, after = model_stats(analysis.graph), model_stats(Graph(pruned, infer_shapes(pruned, {})))
    assert abs(getattr(after, metric) / getattr(before, metric) - 0.5) <= 0.01
