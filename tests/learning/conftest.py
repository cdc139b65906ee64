import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train fastest on one thread (and do not contend with parallel test runs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
