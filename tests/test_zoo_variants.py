"""Zoo models as deployment pipelines hold them (ORT_ENABLE_EXTENDED files, transformers-optimizer
output): the variant prunes >= 95 % of what the plain model loses, passes the oracle, runs, stays fused."""
import pytest

zoo = pytest.importorskip("zoo")
bench_variants = pytest.importorskip("bench_variants")

pytestmark = pytest.mark.zoo

MODELS = ["tv_mobilenet_v2", "hf_tiny_bert", "hf_tiny_gpt2__dynamo"]


@pytest.mark.parametrize("name", MODELS)
def test_variant_prunes_like_the_plain_model(name, zoo_cache):
    if not (zoo.ZOO / f"{name}.onnx").exists():
        pytest.skip(f"zoo model {name} is absent")
    if name in bench_variants.TRANSFORMERS:
        pytest.importorskip("sympy")  # onnxruntime.transformers' shape inference needs it
    src = zoo.write_filled(name, zoo_cache)
    path = bench_variants.variants_of(name, src, zoo_cache)[0][1]
    plain, variant = bench_variants.prune_one(src, 0.3), bench_variants.prune_one(path, 0.3)
    assert variant["ops"], "the optimizer fused nothing"
    assert variant["removed"] >= 0.95 * plain["removed"] > 0
    assert variant["oracle"] and variant["runs"] and variant["kept_ops"]
