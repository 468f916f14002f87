"""Planner controls: global ranking, max ratio, round_to, targets, ignore, per-group ratios."""
from pathlib import Path

import numpy as np
import pytest
from helpers import save
from planner_models import conv_chain, pruned_counts

from onnxprune import BadInputError, PruneConfig, analyze, planner
from onnxprune.group import Group, Space
from onnxprune.planner import RATIO_SLACK, Plan, PlanOptions, local_count, normalised, proportional_counts
from onnxprune.targets import CostModel
from onnxprune.testing import model_stats


def _plan(tmp_path: Path, model, **config):
    """Analyse and plan; round_to defaults to 1 here so that small test groups prune exactly."""
    config.setdefault("round_to", 1)
    analysis = analyze(save(model, tmp_path))
    return analysis, analysis.plan(PruneConfig(**config))


def _kept_fraction(analysis, plan, metric: str) -> float:
    pruned = analysis.apply(plan).proto
    before = model_stats(analysis)
    after = model_stats(pruned)
    return getattr(after, metric) / getattr(before, metric)


# -- local and global ranking ---------------------------------------------------

def test_local_ratio_removes_the_same_fraction_of_every_group(tmp_path):
    analysis, plan = _plan(tmp_path, conv_chain((16, 8), quiet={0: 8}), ratio=0.25)
    assert pruned_counts(analysis, plan) == {"Conv_a0": 4, "Conv_a1": 2}


def test_global_ranking_takes_the_quiet_group_first(tmp_path):
    analysis, plan = _plan(tmp_path, conv_chain((16, 16), quiet={0: 8}), ratio=0.25, global_ranking=True)
    counts = pruned_counts(analysis, plan)
    assert counts == {"Conv_a0": 8}, counts  # 8 of the 32 units, all from the group with quiet filters
    assert plan.meta["global"] is True and plan.meta["normalisation"] == "mean"
    assert analysis.verify(plan).passed


def test_global_ranking_respects_max_ratio(tmp_path):
    analysis, plan = _plan(tmp_path, conv_chain((16, 16), quiet={0: 14}), ratio=0.5, global_ranking=True,
                           max_ratio=0.5)
    counts = pruned_counts(analysis, plan)
    assert counts["Conv_a0"] == 8  # 14 quiet filters, but at most half of the group goes
    assert sum(counts.values()) == 16  # the rest of the budget moves to the other group


def test_mean_normalisation_is_scale_free():
    scores = np.array([1.0, 2.0, 5.0])
    assert np.allclose(normalised(scores * 1000), normalised(scores))
    assert np.allclose(normalised(np.zeros(3)), 1.0)


def test_a_ratio_that_means_a_whole_count_gives_that_count():
    """100 * 0.29 is 28.999999999999996 in floating point: the slack keeps the 29th unit."""
    assert int(100 * 0.29) == 28 and RATIO_SLACK < 1 / 100
    assert local_count(100, 0.29) == 29
    group = Group(0, ("t", 1), "n", 100, np.arange(100), (), (), (), (), None)
    assert proportional_counts([group], 0.29) == {0: 29}


# -- round_to -------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_round_to_keeps_a_multiple_of_n_channels(tmp_path, ratio):
    analysis, plan = _plan(tmp_path, conv_chain((20, 24)), ratio=ratio, round_to=8)
    sizes = {g.id: g.size for g in analysis.groups}
    assert plan.groups
    for pg in plan.groups:
        kept = sizes[pg.id] - len(pg.pruned)
        assert kept > 0 and kept % 8 == 0, (pg.id, kept)
    assert analysis.verify(plan).passed


def test_round_to_rounds_the_kept_count_to_the_nearest_multiple_ties_keeping_more(tmp_path):
    analysis, plan = _plan(tmp_path, conv_chain((20, 6)), ratio=0.3, round_to=8)
    # 20 channels at 0.3: 6 would go, 14 stay -> 16 stay; a group of 6 cannot keep a multiple of 8
    assert pruned_counts(analysis, plan) == {"Conv_a0": 4}
    analysis, plan = _plan(tmp_path, conv_chain((48, 40)), ratio=0.3, round_to=8)
    # 48 at 0.3: 14 would go, 34 stay -> 32 stay (nearest); 40: 12 go, 28 stay -> 32 (a tie keeps more)
    assert pruned_counts(analysis, plan) == {"Conv_a0": 16, "Conv_a1": 8}


def _paired_group(size: int = 12) -> Group:
    roots = np.arange(size)
    return Group(0, ("t", 1), "n", size, roots // 2, (Space("t", 1, size, roots, roots),), (), (), (), None)


@pytest.mark.parametrize("round_to, n_units, kept_roots", [(4, 3, 8), (3, 3, 6), (5, 3, 10), (1, 3, 6)])
def test_round_to_counts_roots_of_coupled_units(round_to, n_units, kept_roots):
    group = _paired_group()  # 6 units of 2 coupled roots each
    ratio = n_units / group.unit_count
    plan = planner.make_plan([group], {group.id: np.arange(6.0)}, ratio, PlanOptions(ratio=ratio, round_to=round_to))
    (pruned,) = [pg.pruned for pg in plan.groups]
    assert group.size - len(pruned) == kept_roots
    assert list(pruned) == list(range(len(pruned)))  # the lowest-scoring units: roots 2u and 2u + 1


# -- targets --------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["params", "macs"])
@pytest.mark.parametrize("global_ranking", [False, True])
def test_target_lands_within_one_percent(tmp_path, metric, global_ranking):
    model = conv_chain((64, 48, 32), quiet={1: 10})
    analysis, plan = _plan(tmp_path, model, global_ranking=global_ranking, **{f"target_{metric}": 0.5})
    assert abs(_kept_fraction(analysis, plan, metric) - 0.5) <= 0.01
    assert plan.meta["target"]["metric"] == metric


def test_unreachable_target_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="out of reach"):
        _plan(tmp_path, conv_chain((16, 16)), target_params=0.2, ignore=["Conv_a0"])


def test_cost_model_matches_the_applied_model(tmp_path):
    analysis = analyze(save(conv_chain((20, 24, 12)), tmp_path))
    cost = CostModel(analysis.graph, analysis.groups)
    for config in (PruneConfig(ratio=0.4, round_to=1), PruneConfig(ratio=0.6, round_to=4, global_ranking=True)):
        plan = analysis.plan(config)
        pruned = analysis.apply(plan).proto
        after = model_stats(pruned)
        counts = cost.counts(plan)
        assert (counts.params, counts.macs) == (after.params, after.macs)


def test_cost_model_counts_a_shared_constant_once(tmp_path):
    """A constant two layers share is cloned at load; the cost model must not count the clone
    (the report does not), or --target-params aims at the wrong total."""
    from helpers import make_model, node, weight
    c = 128
    inits = {"w1": weight(c, 3, 3, 3), "w2": weight(c, c, 3, 3), "zero": np.zeros(c, np.float32),
             "w3": weight(4, c, 1, 1)}
    model = make_model([node("Conv", ["x", "w1", "zero"], "a", pads=[1, 1, 1, 1]), node("Relu", ["a"], "r"),
                        node("Conv", ["r", "w2", "zero"], "b", pads=[1, 1, 1, 1]), node("Relu", ["b"], "r2"),
                        node("Conv", ["r2", "w3"], "y")], {"x": [1, 3, 8, 8]}, {"y": [1, 4, 8, 8]}, inits)
    analysis = analyze(save(model, tmp_path))
    cost = CostModel(analysis.graph, analysis.groups)
    assert cost.before.params == model_stats(analysis).params == sum(
        int(np.prod(t.dims)) for t in model.graph.initializer)
    plan = analysis.plan(PruneConfig(ratio=0.5, round_to=1))
    pruned = analysis.apply(plan).proto
    assert cost.counts(plan).params == model_stats(pruned).params


# -- patterns -------------------------------------------------------------------

@pytest.mark.parametrize("pattern, left", [("Conv_a0", {"Conv_a1", "Conv_a2"}), ("w1", {"Conv_a2"}),
                                            ("Relu", set()), ("b*", set()),
                                            ("nothing", {"Conv_a0", "Conv_a1", "Conv_a2"})])
def test_ignore_skips_groups_touching_a_match(tmp_path, pattern, left):
    analysis, plan = _plan(tmp_path, conv_chain((8, 8, 8)), ratio=0.5, ignore=[pattern])
    assert set(pruned_counts(analysis, plan)) == left
    assert plan.meta.get("ignored", []) == sorted(
        {g.id for g in analysis.prunable} - {g.id for g in analysis.groups if g.root_node in left})


def test_ratio_for_sets_the_ratio_of_matching_groups(tmp_path):
    rules = [("Conv_a0", 0.75), ("Conv_*", 0.5), ("w1", 0.0)]  # the first match wins
    analysis, plan = _plan(tmp_path, conv_chain((8, 8, 8)), ratio=0.25, ratio_for=rules)
    assert pruned_counts(analysis, plan) == {"Conv_a0": 6, "Conv_a1": 4, "Conv_a2": 4}


def test_ratio_for_group_stays_out_of_the_global_ranking(tmp_path):
    analysis, plan = _plan(tmp_path, conv_chain((16, 16), quiet={0: 8}), ratio=0.25, global_ranking=True,
                           ratio_for=[("Conv_a0", 0.0)])
    assert pruned_counts(analysis, plan) == {"Conv_a1": 4}


# -- plans ----------------------------------------------------------------------

def test_plan_in_applies_the_saved_plan_exactly(tmp_path):
    model = conv_chain((16, 16), quiet={0: 8})
    analysis, plan = _plan(tmp_path, model, ratio=0.25, global_ranking=True, round_to=4)
    path = str(tmp_path / "plan.json")
    plan.save(path, analysis.groups)
    again = analysis.plan(PruneConfig(plan_in=path, ratio=0.7))
    assert again.groups == plan.groups
    with pytest.raises(BadInputError, match="plan_in"):
        PruneConfig(plan_in=path, round_to=16).check()


def test_plan_json_keeps_its_schema_and_records_the_options(tmp_path):
    analysis, plan = _plan(tmp_path, conv_chain((16, 16)), ratio=0.5, round_to=4, importance="fpgm")
    data = plan.to_json(analysis.groups)
    group = data["groups"][0]
    assert {"id", "root", "exact", "size", "pruned", "slices"} <= set(group)
    assert {"tensor", "axis", "indices", "role"} <= set(group["slices"][0])
    assert data["meta"]["round_to"] == 4 and data["meta"]["importance"] == "fpgm"
    assert Plan.from_json(data).groups == plan.groups


@pytest.mark.parametrize("config", [dict(round_to=0), dict(max_ratio=1.0), dict(target_params=0.0),
                                    dict(target_params=0.5, target_macs=0.5), dict(ratio_for=[("x", 1.0)]),
                                    dict(group_reduction="median")])
def test_bad_planner_options_are_refused(config):
    with pytest.raises(BadInputError):
        PruneConfig(**config).check()


def test_defaults_are_local_and_round_to_8():
    assert PlanOptions().global_ranking is False and PlanOptions().round_to == 1
    assert PruneConfig().round_to == 8 and PruneConfig().global_ranking is False


def test_plan_json_names_a_shared_constants_copy_by_its_consumer(tmp_path):
    """Slices of load-time copies (`b__1`...) are written as the input's tensor plus node and input."""
    from helpers import make_model, node, save, weight

    from onnxprune import analyze
    from onnxprune.testing import make_plan

    inits = {"w1": weight(8, 3, 1, 1), "w2": weight(8, 8, 1, 1), "b": np.zeros(8, np.float32),
             "w3": weight(2, 8, 1, 1)}
    model = make_model([node("Conv", ["x", "w1", "b"], "a"), node("Relu", ["a"], "r"),
                        node("Conv", ["r", "w2", "b"], "c"), node("Relu", ["c"], "s"),
                        node("Conv", ["s", "w3"], "y")], {"x": [1, 3, 4, 4]}, {"y": [1, 2, 4, 4]}, inits)
    analysis = analyze(save(model, tmp_path))
    plan = make_plan(analysis, {g.id: np.arange(g.unit_count, dtype=float) for g in analysis.prunable}, 0.5)
    names = analysis.graph.input_coordinates()
    assert names == {"b": ("b", "Conv_a", 2), "b__1": ("b", "Conv_c", 2)}
    internal = {s["tensor"] for g in plan.to_json(analysis.groups)["groups"] for s in g["slices"]}
    assert internal == {"w1", "b", "w2", "b__1", "w3"}  # without names: the analysis' own copies
    slices = [s for g in plan.to_json(analysis.groups, names)["groups"] for s in g["slices"]]
    assert {s["tensor"] for s in slices} == {"w1", "b", "w2", "w3"}
    assert sorted((s["node"], s["input"]) for s in slices if s["tensor"] == "b") == [("Conv_a", 2), ("Conv_c", 2)]
    assert all("node" not in s for s in slices if s["tensor"] != "b")


def _reference_take(table, order, n_units=None, n_roots=None):
    """The greedy as specified: in score order, take a unit when it leaves every space a position and
    fits the root budget; stop at n_units units or when the budget is spent."""
    kept, chosen, budget = dict(table.space_size), [], n_roots
    for u in order:
        if (n_units is not None and len(chosen) >= n_units) or budget == 0:
            break
        cost = int(table.roots_per_unit[u])
        if budget is not None and cost > budget:
            continue
        if all(kept[k] - int(c[u]) >= 1 for k, c in table.positions_of.items()):
            for k, c in table.positions_of.items():
                kept[k] -= int(c[u])
            chosen.append(int(u))
            budget = None if budget is None else budget - cost
    return [] if budget else sorted(chosen)


def test_unit_table_take_matches_the_greedy_on_random_tables():
    """The vectorised prefix of UnitTable._take picks exactly what the unit-by-unit greedy picks,
    including zero-cost units, exhausted spaces and unreachable root budgets."""
    from types import SimpleNamespace

    from onnxprune.planner import UnitTable

    rng = np.random.default_rng(0)
    for _ in range(3000):
        n = int(rng.integers(1, 12))
        table = UnitTable.__new__(UnitTable)
        table.group = SimpleNamespace(unit_count=n)
        table.roots_per_unit = rng.integers(0, 3, n)
        table.positions_of, table.space_size, table.per_unit = {}, {}, []
        for k in range(int(rng.integers(1, 4))):
            counts = rng.integers(0, 3, n)
            table.positions_of[("t", k)] = counts
            table.space_size[("t", k)] = int(max(1, counts.sum() - rng.integers(0, 3)))
        order = rng.permutation(n)
        for kw in ({"n_units": int(rng.integers(0, n + 1))},
                   {"n_roots": int(rng.integers(0, table.roots_per_unit.sum() + 1))}):
            assert table._take(order, **kw).tolist() == _reference_take(table, order, **kw), kw
