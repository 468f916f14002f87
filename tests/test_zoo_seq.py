"""Transformer and recurrent zoo models at ratio 0.3: oracle passes, pruned model runs, outputs keep their shapes."""
import json

import onnx
import pytest

zoo = pytest.importorskip("zoo")
pytestmark = pytest.mark.zoo

from onnxprune import PruneConfig, analyze  # noqa: E402
from onnxprune.testing import random_inputs, run_model  # noqa: E402

# model -> kinds of groups that must be pruned ("" : plain channels, e.g. FFN hidden)
MODELS = {
    "hf_tiny_bert": {"attention heads", ""},
    "hf_tiny_vit": {"attention heads", ""},
    "hf_tiny_gpt2__dynamo": {"attention heads", ""},
    "hf_tiny_llama__dynamo": {"attention heads", ""},
    "tv_vit_b_16": {"attention heads", ""},
    "tv_swin_t": {"attention heads", ""},
    "rnn_lstm2_classifier": {"LSTM hidden units", "embedding"},
    "rnn_bilstm2_classifier": {"LSTM hidden units", "embedding"},
    "rnn_gru2_classifier": {"GRU hidden units", "embedding"},
    "rnn_bigru1_classifier": {"GRU hidden units", "embedding"},
}


# tiny Llama has 2 kv heads (units of its heads groups): 30% of 2 rounds down to none
RATIO = {"hf_tiny_llama__dynamo": 0.5}


def _zoo_model(name: str, cache) -> str:
    path = zoo.ZOO / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"zoo model {path} is absent")
    model = onnx.load(str(path), load_external_data=False)
    if any(t.doc_string == zoo.STRIPPED for t in model.graph.initializer):
        return str(zoo.write_filled(name, cache))
    return str(path)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_model_prunes_and_passes_the_oracle(name, zoo_cache):
    path = _zoo_model(name, zoo_cache)
    analysis = analyze(path)
    plan = analysis.plan(PruneConfig(ratio=RATIO.get(name, 0.3)))
    by_id = {g.id: g for g in analysis.groups}
    pruned_kinds = {", ".join(by_id[pg.id].kinds) for pg in plan.groups}
    assert MODELS[name] <= pruned_kinds, f"pruned kinds {pruned_kinds}"
    result = analysis.verify(plan)
    assert result.passed, result.detail
    pruned = analysis.apply(plan).proto
    feeds = random_inputs(analysis.model, {}, int_high=_int_high(name))
    before = run_model(analysis.model, feeds, optimize=False).outputs
    after = run_model(pruned, feeds, optimize=True).outputs
    assert [o.shape for o in before] == [o.shape for o in after]


def _int_high(name: str) -> dict:
    meta = zoo.ZOO / f"{name}.onnx.json"
    return json.loads(meta.read_text()).get("int_high", {}) if meta.exists() else {}


@pytest.mark.parametrize("name", ["hf_tiny_bert", "hf_tiny_gpt2__dynamo", "hf_tiny_llama__dynamo", "hf_tiny_vit"])
def test_inexact_hidden_size_prunes_and_runs(name, zoo_cache):
    """With inexact groups allowed the hidden size (through LayerNorm/RMSNorm, tied embeddings) goes
    too: the oracle still holds for the exact groups and the pruned model keeps its output shapes."""
    path = _zoo_model(name, zoo_cache)
    analysis = analyze(path)
    plan = analysis.plan(PruneConfig(ratio=0.5, inexact=True))
    by_id = {g.id: g for g in analysis.groups}
    assert any(not by_id[pg.id].exact for pg in plan.groups)
    assert analysis.verify(plan).passed
    pruned = analysis.apply(plan).proto
    feeds = random_inputs(analysis.model, {}, int_high=_int_high(name))
    before = run_model(analysis.model, feeds, optimize=False).outputs
    after = run_model(pruned, feeds, optimize=True).outputs
    assert [o.shape for o in before] == [o.shape for o in after]
