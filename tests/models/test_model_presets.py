import pytest

from explore.errors import ConfigError
from explore.models.build import build_model, count_parameters
from explore.models.presets import PRESETS, Preset, get_preset, list_presets
from explore.models.tokenizer import build_word_tokenizer


def test_list_presets_names_the_five_presets():
    assert list_presets() == ["shapes-small", "shapes-small-judge", "shapes-small-judge-lm4", "tiny-llama", "tiny-t5"]


def test_unknown_preset_is_a_one_line_config_error_listing_the_presets():
    with pytest.raises(ConfigError) as error:
        get_preset("shapes-smal")
    message = str(error.value)
    assert "\n" not in message and "'shapes-smal'" in message
    assert all(name in message for name in list_presets())


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("tiny-t5", 10_000, 60_000), ("tiny-llama", 10_000, 60_000), ("shapes-small", 2_000_000, 5_000_000),
     ("shapes-small-judge", 2_000_000, 5_000_000), ("shapes-small-judge-lm4", 2_000_000, 5_000_000)],
)
def test_preset_parameter_counts_are_in_their_target_range(name, low, high, words):
    counts = count_parameters(build_model(name, build_word_tokenizer(words), seed=0))
    assert low <= counts["total"] <= high
    parts = counts["vision"] + counts["qformer"] + counts["projection"] + counts["lm"]
    assert parts == counts["total"]


def test_preset_families_and_query_counts():
    assert get_preset("tiny-t5").lm_family == "t5" and get_preset("tiny-llama").lm_family == "llama"
    small = get_preset("shapes-small")
    assert (small.lm_family, small.image_size, small.num_query_tokens, small.num_patches) == ("t5", 64, 16, 64)


def test_preset_rejects_inconsistent_sizes():
    fields = {**PRESETS["tiny-t5"].__dict__, "name": "bad", "image_size": 20}
    with pytest.raises(ConfigError, match="patch_size"):
        Preset(**fields)
    with pytest.raises(ConfigError, match="heads"):
        Preset(**{**PRESETS["tiny-t5"].__dict__, "name": "bad", "vision_heads": 3})
