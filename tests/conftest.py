import os

import pytest
import torch

# Every test run gets its own dense-model cache, shared by the tests of that run.
os.environ.setdefault("PRUNING_CACHE_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pruning-test-cache-{os.getpid()}"))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty dense-model cache for tests that look at caching itself."""
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: tiny models train faster and steadier on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
