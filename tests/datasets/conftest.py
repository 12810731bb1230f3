import pytest

from tinygpt.datasets import skips


@pytest.fixture(autouse=True)
def _empty_skip_buffer():
    """Each test starts with an empty process-local skip buffer (skips.py), so records another test
    left unshipped never land in this test's batches or counts."""
    skips.drain()
    yield
    skips.drain()
