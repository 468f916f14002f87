import os
import sys
import zlib
from pathlib import Path

import pytest

# Rule bugs raise in the tests instead of freezing their group with a warning (see depgraph.py);
# set before anything is imported so that CLI subprocesses inherit it too.
os.environ.setdefault("ONNXPRUNE_STRICT", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))  # the checkout under test, before any installed copy


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    """Folder where filled copies of zoo models are written once per test session."""
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(autouse=True)
def _test_rng(request):
    """Every test draws its weights (helpers.weight, helpers.rng) from its own generator, seeded
    from its node id: the values do not depend on which tests ran before it."""
    import helpers

    helpers.reseed(zlib.crc32(request.node.nodeid.encode()))
