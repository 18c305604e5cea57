import pytest
import torch

# Test tensors are tiny: one thread is as fast, and immune to the oversubscription that makes OpenMP spin
# (orders of magnitude slower) when another process shares the two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
