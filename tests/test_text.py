"""The local text encoder wrapper against transformers itself (a tiny random UMT5 with a ByT5 tokenizer)."""

import pytest
import torch

from mirai.models.text import TextEncoder
from tests.conftest import tiny_text_encoder_folder

transformers = pytest.importorskip("transformers")


def test_embeddings_equal_transformers_and_zero_past_the_caption(tmp_path):
    model, tokenizer = tiny_text_encoder_folder(tmp_path)
    enc = TextEncoder(tmp_path, max_len=48)
    captions = ["a red striped square moves left", ""]
    emb, mask = enc.encode(captions)
    assert emb.shape == (2, 48, 32) and enc.dim == 32
    for i, caption in enumerate(captions):
        ids = tokenizer(caption, return_tensors="pt").input_ids  # the caption alone, no padding
        with torch.no_grad():
            ref = model(input_ids=ids).last_hidden_state[0]
        n = ids.shape[1]
        assert int(mask[i].sum()) == n
        assert (emb[i, :n] - ref).abs().max() < 1e-5
        assert emb[i, n:].abs().max() == 0
    assert emb[1].abs().sum() > 0  # the empty prompt is its end token, not nothing


def test_not_a_text_encoder_folder_is_named(tmp_path):
    from mirai.data.datasets import DataError

    with pytest.raises(DataError, match=str(tmp_path)):
        TextEncoder(tmp_path, max_len=8)
