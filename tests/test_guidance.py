"""The one CFG formula and its unconditional branch: zeros for the structured prompt, the empty caption's (or a
negative prompt's) embedding for captions."""

import pytest
import torch

from mirai.diffusion.guidance import combine, guidance_batch
from mirai.sampling.guided import guided_velocity
from tests.conftest import make_model


def test_guided_caption_velocity_is_the_formula_over_the_empty_or_a_negative_caption():
    model = make_model(text_dim=8)
    x, t = torch.randn(2, 4, 3, 16, 16), torch.rand(2, 4)
    captions, empty, negative = torch.randn(2, 5, 8), torch.randn(5, 8), torch.randn(1, 5, 8)
    with torch.no_grad():
        v_cond = model(x, t, captions)
        for uncond in (empty, negative):
            v_uncond = model(x, t, uncond.expand(2, -1, -1))
            guided = guided_velocity(model, x, t, captions, 3.0, uncond)
            assert torch.allclose(guided, combine(v_cond, v_uncond, 3.0), atol=1e-5)
        assert not torch.allclose(guided_velocity(model, x, t, captions, 3.0, empty),
                                  guided_velocity(model, x, t, captions, 3.0, negative), atol=1e-4)
    assert torch.equal(guided_velocity(model, x, t, captions, 1.0, empty), model(x, t, captions))  # s = 1: one forward


def test_unconditional_branch_of_each_kind_of_prompt():
    x, t = torch.randn(2, 4, 3, 16, 16), torch.rand(2, 4)
    _, _, structured = guidance_batch(x, t, torch.tensor([[1, 2], [3, 4]]), 2.0)
    assert torch.equal(structured[2:], torch.zeros(2, 2, dtype=torch.long))  # every field absent
    empty = torch.randn(5, 8)
    _, _, captions = guidance_batch(x, t, torch.randn(2, 5, 8), 2.0, empty)
    assert torch.equal(captions[2:], empty.expand(2, -1, -1))
    with pytest.raises(ValueError, match="unconditional prompt"):
        guidance_batch(x, t, torch.randn(2, 5, 8), 2.0)
