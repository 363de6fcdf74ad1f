import pytest

from explore.errors import ConfigError
from explore.models.tokenizer import IMAGE_TOKEN, build_word_tokenizer, require_image_token_id


def test_encode_decode_round_trip_lowercases_and_splits_punctuation(words):
    tokenizer = build_word_tokenizer(words)
    ids = tokenizer("What colour is the square?")["input_ids"]
    assert len(ids) == 6 and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == "what colour is the square?"


def test_same_words_in_any_order_give_the_same_ids(words):
    first = build_word_tokenizer(words)
    second = build_word_tokenizer(list(reversed(words)) + ["Red", "red"])
    assert first.get_vocab() == second.get_vocab()
    assert first("is the circle red?")["input_ids"] == second("is the circle red?")["input_ids"]


def test_special_token_ids_follow_the_t5_convention_and_image_token_is_last(words):
    tokenizer = build_word_tokenizer(words)
    ids = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id)
    assert ids == (0, 1, 2, 3)
    assert require_image_token_id(tokenizer) == len(tokenizer) - 1
    assert tokenizer(f"{IMAGE_TOKEN}{IMAGE_TOKEN} red")["input_ids"][:2] == [len(tokenizer) - 1] * 2
    assert tokenizer.decode(tokenizer("<image> red </s>")["input_ids"], skip_special_tokens=True) == "red"


def test_qformer_tokenizer_has_no_image_token_and_shares_word_ids(words):
    lm = build_word_tokenizer(words)
    qformer = build_word_tokenizer(words, image_token=False)
    assert len(qformer) == len(lm) - 1
    assert qformer("what colour is the square?")["input_ids"] == lm("what colour is the square?")["input_ids"]
    with pytest.raises(ConfigError, match="<image>"):
        require_image_token_id(qformer)


def test_unknown_words_map_to_unk(words):
    tokenizer = build_word_tokenizer(words)
    square = tokenizer.convert_tokens_to_ids("square")
    assert tokenizer("purple square")["input_ids"] == [tokenizer.unk_token_id, square]


def test_left_padding_for_batched_generation(words):
    tokenizer = build_word_tokenizer(words)
    tokenizer.padding_side = "left"
    batch = tokenizer(["red", "is the square red"], padding=True)
    assert batch["input_ids"][0][:3] == [tokenizer.pad_token_id] * 3
    assert batch["attention_mask"][0] == [0, 0, 0, 1]


@pytest.mark.parametrize("bad", ["two words", "don't", "", "<pad>"])
def test_words_that_are_not_single_tokens_are_rejected(bad):
    with pytest.raises(ConfigError):
        build_word_tokenizer(["red", bad])


def test_extra_words_keep_every_old_id_and_come_after_the_image_token(words):
    old = build_word_tokenizer(words)
    grown = build_word_tokenizer(words, extra_words=["Judgment", "overall", "red"])  # "red" is already a word
    assert all(grown.get_vocab()[token] == index for token, index in old.get_vocab().items())
    assert len(grown) == len(old) + 2
    assert grown.convert_tokens_to_ids(["judgment", "overall"]) == [len(old), len(old) + 1]
    assert require_image_token_id(grown) == require_image_token_id(old)
    assert grown.unk_token_id not in grown("overall judgment: answer 1")["input_ids"][:2]


@pytest.mark.parametrize(("family", "expected"), [("t5", "P </s>"), ("llama", "<s> P")])
def test_special_tokens_post_processor_adds_what_collate_adds(words, family, expected):
    from explore.models.tokenizer import clear_call_state, set_special_tokens

    tokenizer = build_word_tokenizer(words)
    bare = tokenizer("is the circle red?")["input_ids"]
    set_special_tokens(tokenizer, family)
    with_specials = tokenizer("is the circle red?")["input_ids"]
    assert with_specials == (bare + [tokenizer.eos_token_id] if family == "t5" else [tokenizer.bos_token_id] + bare)
    assert tokenizer("is the circle red?", add_special_tokens=False)["input_ids"] == bare
    tokenizer(["a b c d e f"], truncation=True, max_length=3)
    assert tokenizer.backend_tokenizer.truncation is not None  # a call leaves its truncation behind ...
    clear_call_state(tokenizer)
    assert tokenizer.backend_tokenizer.truncation is None  # ... until it is cleared
    with pytest.raises(ConfigError, match="'gpt'"):
        set_special_tokens(tokenizer, "gpt")
