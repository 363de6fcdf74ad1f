"""A tiny T5-backed model folder that the sweep tests compress, recover and evaluate."""

from dataclasses import replace

import pytest

from explore.models.build import build_model, build_processor
from explore.models.loading import save_model
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.world.vocabulary import vocabulary


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    preset = replace(get_preset("tiny-t5"), name="tiny-t5-sweep", vision_layers=2, qformer_layers=2, lm_layers=2,
                     lm_decoder_layers=2, num_query_tokens=6)  # fmt: skip
    words = vocabulary()
    tokenizer, qtok = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    model, processor = build_model(preset, tokenizer, seed=0), build_processor(preset, tokenizer, qtok)
    return save_model(model, processor, tmp_path_factory.mktemp("tiny") / "model")
