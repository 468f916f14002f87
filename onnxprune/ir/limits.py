"""Size limits of the IR, read at call time (tests lower them)."""

MIN_OPSET = 9
# Protobuf cannot serialise a message of 2 GiB; stay clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Initializers at most this big are cloned per consumer, so that editing one
# consumer's shape constant never changes another's, and a constant an
# exporter shares between layers (one all-zero folded bias for 26 convs) does
# not couple their channels. Larger shared weights (tied embeddings) stay
# shared; the dependency graph cuts them only when every user agrees.
PRIVATE_CONSTANT_MAX = 1 << 16
# Initializers larger than this become plain inputs of the shape-inference
# skeleton: their values are never needed to infer shapes.
SKELETON_CONSTANT_MAX = 4096
# Declared sizes are checked against these caps before anything is allocated from them.
MAX_TENSOR_ELEMENTS = 1 << 40  # an initializer's dims (its payload must match them too)
MAX_INPUT_ELEMENTS = 1 << 28  # one random validation input (1 GiB of float32)
MAX_DIM = 1 << 40  # one dimension given with --input-shape
# Opsets 7 and 8 are upgraded to MIN_OPSET with onnx.version_converter; older ones are refused.
MIN_UPGRADABLE_OPSET = 7
