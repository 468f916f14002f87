"""Targets on real models from the shared zoo (skipped when the zoo is absent)."""
import pytest

import zoo
from onnxprune import PruneConfig, analyze
from onnxprune.testing import model_stats

pytestmark = [pytest.mark.zoo, pytest.mark.skipif(zoo.zoo_dir() is None, reason="shared zoo not present")]


@pytest.mark.parametrize("name", ["tv_resnet50", "tv_mobilenet_v2"])
@pytest.mark.parametrize("metric", ["params", "macs"])
def test_target_half_lands_within_one_percent(zoo_cache, name, metric):
    analysis = analyze(str(zoo.write_filled(name, zoo_cache)))
    plan = analysis.plan(PruneConfig(**{f"target_{metric}": 0.5}))
    pruned = analysis.apply(plan).proto  # counted on the applied model, not the estimate
    before, after = model_stats(analysis), model_stats(pruned)
    assert abs(getattr(after, metric) / getattr(before, metric) - 0.5) <= 0.01
