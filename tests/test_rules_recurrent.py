"""LSTM / GRU / RNN hidden units and embedding tables, pruned and checked by the dead-channel oracle."""
import numpy as np
import onnx
import pytest
from helpers import make_model, node, param_count, prune_with_oracle, weight
from onnx import TensorProto

from onnxprune.rule_harness import pairs, roots, visit

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
VOCAB, EMB, HID, SEQ, BATCH = 50, 12, 10, 7, 2


def _layer(op: str, x: str, y: str, inp: int, dirs: int, inits: dict, nodes: list, layout: int = 0,
           peepholes: bool = False, init_state: bool = True) -> None:
    """One recurrent layer reading `x`; writes `y` = its Y output, [seq, batch, dirs*H] (or batch-major)."""
    g = GATES[op]
    inits.update({f"{y}_W": weight(dirs, g * HID, inp), f"{y}_R": weight(dirs, g * HID, HID),
                  f"{y}_B": weight(dirs, 2 * g * HID)})
    ins = [x, f"{y}_W", f"{y}_R", f"{y}_B", ""]
    if init_state:
        # the older exporter's initial state: Expand(zeros [1,1,H], Concat([dirs], [batch], [H]))
        inits[f"{y}_h0"] = weight(1, 1, HID)
        inits[f"{y}_shape"] = np.array([dirs, BATCH, HID] if not layout else [BATCH, dirs, HID], np.int64)
        nodes.append(node("Expand", [f"{y}_h0", f"{y}_shape"], f"{y}_init_h"))
        ins.append(f"{y}_init_h")
        if op == "LSTM":
            inits[f"{y}_c0"] = weight(dirs, BATCH, HID) if not layout else weight(BATCH, dirs, HID)
            ins.append(f"{y}_c0")
    if peepholes and op == "LSTM":
        ins += [""] * (7 - len(ins)) + [f"{y}_P"]
        inits[f"{y}_P"] = weight(dirs, 3 * HID)
    attrs = {"hidden_size": HID, "direction": "bidirectional" if dirs == 2 else "forward"}
    if layout:
        attrs["layout"] = 1
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    nodes.append(node(op, ins, [f"{y}_Y", f"{y}_Yh"], **attrs))
    if layout:  # [batch, seq, dirs, H] -> [batch, seq, dirs*H]
        inits[f"{y}_flat"] = np.array([BATCH, SEQ, dirs * HID], np.int64)
        nodes.append(node("Reshape", [f"{y}_Y", f"{y}_flat"], y))
    else:  # [seq, dirs, batch, H] -> [seq, batch, dirs, H] -> [seq, batch, dirs*H]
        nodes.append(node("Transpose", [f"{y}_Y"], f"{y}_T", perm=[0, 2, 1, 3]))
        inits[f"{y}_flat"] = np.array([SEQ, BATCH, dirs * HID], np.int64)
        nodes.append(node("Reshape", [f"{y}_T", f"{y}_flat"], y))


def _classifier(op: str, dirs: int = 1, layers: int = 1, layout: int = 0, **kw) -> onnx.ModelProto:
    """Embedding -> stacked recurrent layers -> last step -> Gemm (the older exporter's layout)."""
    inits = {"emb": weight(VOCAB, EMB, scale=1.0), "last": np.array(-1, np.int64),
             "fc_w": weight(5, dirs * HID), "fc_b": weight(5)}
    nodes = [node("Gather", ["emb", "tokens"], "e")]  # tokens [batch, seq]
    x = "e"
    if not layout:
        nodes.append(node("Transpose", ["e"], "e_t", perm=[1, 0, 2]))
        x = "e_t"
    inp = EMB
    for i in range(layers):
        _layer(op, x, f"l{i}", inp, dirs, inits, nodes, layout, **kw)
        x, inp = f"l{i}", dirs * HID
    nodes.append(node("Gather", [x, "last"], "h_last", axis=0 if layout == 0 else 1))
    nodes.append(node("Gemm", ["h_last", "fc_w", "fc_b"], "logits", transB=1))
    return make_model(nodes, {"tokens": [BATCH, SEQ]}, {"logits": None}, inits,
                      input_types={"tokens": TensorProto.INT64})


def _attr(model: onnx.ModelProto, op: str, name: str) -> list:
    return [onnx.helper.get_attribute_value(a) for n in model.graph.node if n.op_type == op
            for a in n.attribute if a.name == name]


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("dirs", [1, 2])
def test_stacked_layers_prune_hidden_units_and_embedding(tmp_path, op, dirs):
    model = _classifier(op, dirs=dirs, layers=2)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.5, min_groups=3)
    assert _attr(pruned, op, "hidden_size") == [HID // 2, HID // 2]
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    g = GATES[op]
    assert dims["l0_W"] == [dirs, g * HID // 2, EMB // 2]  # hidden rows and embedding columns
    assert dims["l1_W"] == [dirs, g * HID // 2, dirs * HID // 2]
    assert dims["l0_R"] == [dirs, g * HID // 2, HID // 2]
    assert dims["l1_B"] == [dirs, 2 * g * HID // 2]
    assert dims["emb"] == [VOCAB, EMB // 2]
    assert dims["fc_w"] == [5, dirs * HID // 2]
    assert list(onnx.numpy_helper.to_array(
        {t.name: t for t in pruned.graph.initializer}["l0_shape"])) == [dirs, BATCH, HID // 2]
    assert param_count(pruned) < param_count(model)


def test_lstm_gate_rows_are_cut_per_gate_block(tmp_path):
    """Unit k owns rows k, H+k, 2H+k, 3H+k: the kept rows of W must be those of the kept units."""
    model = _classifier("LSTM", peepholes=True)
    analysis, plan, pruned = prune_with_oracle(model, tmp_path, ratio=0.3, min_groups=1)
    hidden_group = next(g for g in analysis.groups if g.root[0] == "l0_Y")
    pg = next(p for p in plan.groups if p.id == hidden_group.id)
    kept = [k for k in range(HID) if k not in pg.pruned]
    rows = [g * HID + k for g in range(4) for k in kept]
    before = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    emb_group = next(g for g in analysis.groups if g.root[0] == "e")
    emb_pruned = next((p.pruned for p in plan.groups if p.id == emb_group.id), ())
    cols = [c for c in range(EMB) if c not in emb_pruned]
    np.testing.assert_array_equal(after["l0_W"], before["l0_W"][:, rows][:, :, cols])
    np.testing.assert_array_equal(after["l0_R"], before["l0_R"][:, rows][:, :, kept])
    np.testing.assert_array_equal(after["l0_P"], before["l0_P"][:, [g * HID + k for g in range(3) for k in kept]])


def test_batch_major_layout_groups():
    """layout=1 (ORT cannot run it): Y is [batch, seq, dirs, H]; the hidden units are still Y's axis 3."""
    ins = [(BATCH, SEQ, EMB), weight(2, 3 * HID, EMB), weight(2, 3 * HID, HID), weight(2, 6 * HID)]
    attrs = {"hidden_size": HID, "direction": "bidirectional", "layout": 1, "linear_before_reset": 1}
    assert roots("GRU", ins, attrs, outputs=2) == (("out0", 3),)
    v = visit("GRU", ins, attrs, outputs=2, at=("out0", 3))
    gates = pairs(range(3 * HID), roots=list(range(HID)) * 3)
    assert v.cuts == {("in1", 1): ("out", gates), ("in2", 1): ("out", gates), ("in2", 2): ("in", pairs(range(HID))),
                      ("in3", 1): ("out", pairs(range(6 * HID), roots=list(range(HID)) * 6))}
    assert v.moves == {("out1", 2): pairs(range(HID))} and v.frozen is None and not v.inexact
    assert v.edits == ((("attr", 0, "hidden_size", -1), ("out0", 3), 1, 1, None),)


def test_hidden_state_output_is_frozen(tmp_path):
    """Y_h as a graph output: the hidden units must stay."""
    inits = {"W": weight(1, 4 * HID, EMB), "R": weight(1, 4 * HID, HID)}
    model = make_model([node("LSTM", ["x", "W", "R"], ["Y", "Yh"], hidden_size=HID)],
                       {"x": [SEQ, BATCH, EMB]}, {"Yh": None}, inits)
    from onnxprune import analyze
    from helpers import save
    analysis = analyze(save(model, tmp_path))
    assert not analysis.prunable
    assert "graph output 'Yh'" in analysis.groups[0].frozen_reason


def test_oracle_sees_the_recurrence(tmp_path, monkeypatch):
    """If R's columns were not marked as consumers, zeroing would leave removed units feeding kept ones."""
    from onnxprune.rules import base

    original = base.Effects.cut

    def no_in_role_for_r(self, tensor, axis, pairs, role, scale=False, **kw):
        if tensor.endswith("_R") and role == "in":
            role = "out"
        original(self, tensor, axis, pairs, role, scale, **kw)

    monkeypatch.setattr(base.Effects, "cut", no_in_role_for_r)
    with pytest.raises(AssertionError):
        prune_with_oracle(_classifier("LSTM"), tmp_path, ratio=0.5)
