"""docs/ops.md is what tools/gen_ops_table.py writes from the rule registry now."""
import gen_ops_table
import pytest

from onnxprune.rules import Port, Rule, base


def test_docs_ops_md_matches_the_registry():
    current = gen_ops_table.OUT.read_text() if gen_ops_table.OUT.exists() else ""
    assert current == gen_ops_table.render(), (
        f"docs/ops.md is stale (a rule was added, removed or re-documented); run: {gen_ops_table.COMMAND}")


def test_every_registered_op_has_a_row():
    text = gen_ops_table.render()
    for key in base.registered_op_types():
        domain, _, op = key.rpartition("::")
        assert f"| {op} | {domain or 'ai.onnx'} |" in text, key


class _FakeRule(Rule):
    """Channels pass unchanged, as a test rule."""

    def propagate(self, node, graph, port: Port, axis, pairs, fx) -> None:
        fx.inexact("test")
        fx.to_output(0, axis, pairs)


def test_a_new_rule_changes_the_table_and_check_says_what_to_run(monkeypatch, tmp_path, capsys):
    stale = tmp_path / "ops.md"
    stale.write_text(gen_ops_table.render())
    monkeypatch.setattr(gen_ops_table, "OUT", stale)
    monkeypatch.setattr(gen_ops_table, "ROOT", tmp_path)
    assert gen_ops_table.main(["--check"]) == 0
    monkeypatch.setitem(base._REGISTRY, "test.domain::FakeOp", _FakeRule())
    text = gen_ops_table.render()
    row = "| FakeOp | test.domain | _FakeRule | follows, may be inexact | Channels pass unchanged, as a test rule. |"
    assert row in text
    assert gen_ops_table.main(["--check"]) == 1
    assert "run: python tools/gen_ops_table.py" in capsys.readouterr().err


@pytest.mark.parametrize("op, channels", [
    ("Conv", "starts, follows, cuts weights, edits sizes, may freeze"),
    ("RandomNormal", "freezes"),
    ("LayerNormalization", "follows, cuts weights, may freeze, may be inexact"),
])
def test_channels_column_comes_from_the_rule(op, channels):
    assert gen_ops_table.behaviour(gen_ops_table.rule_of(op)) == channels
