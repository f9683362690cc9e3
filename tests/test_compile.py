"""torch.compile is optional; when used, cached sampling must give what eager sampling gives.

(An earlier trial of `torch.compile(dynamic=True)` silently reused a graph that ignored the cached
chunks. Each chunk of a rollout changes the cache length, so this is exactly the case to check.)
"""

import pytest
import torch

from mirai.config import SampleConfig
from mirai.sampling.rollout import rollout
from mirai.diffusion.schedule import FlowSchedule
from tests.conftest import make_model


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, None])
def test_compiled_cached_rollout_equals_eager(dynamic):
    torch._dynamo.reset()
    model = make_model()
    noise = torch.randn(1, 8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sample = SampleConfig(steps=2)
    eager = rollout(model, FlowSchedule(), noise, sample=sample)
    compiled = rollout(torch.compile(model, dynamic=dynamic), FlowSchedule(), noise, sample=sample)
    assert (eager - compiled).abs().max() < 1e-4
