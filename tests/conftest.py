import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))  # the checkout under test, before any installed copy


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    """Folder where filled copies of zoo models are written once per test session."""
    return tmp_path_factory.mktemp("zoo")
