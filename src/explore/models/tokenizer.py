"""A word-level tokenizer for from-scratch models, built with ``tokenizers`` from a word list.

The shapes world has a closed vocabulary of a few hundred lowercase words, so one id per word
(plus punctuation) is both the smallest and the most readable choice: ``decode`` gives the words
back. The same builder makes the language-model tokenizer (with the image placeholder token) and
the Q-Former tokenizer (without it); the word ids are identical in both.

Ids: 0 ``<pad>``, 1 ``</s>`` (eos), 2 ``<unk>``, 3 ``<s>`` (bos), then the punctuation marks, then
the words in sorted order, then ``<image>`` last when asked for. The T5 convention pad=0 / eos=1
makes T5's ``decoder_start_token_id = pad_token_id`` work unchanged.

The tokenizer adds no special tokens by itself (no post-processor): :mod:`explore.models.collate`
adds bos / eos explicitly where each language-model family needs them.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from explore.errors import ConfigError

PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
# The placeholder that InstructBlipProcessor repeats num_query_tokens times in front of the prompt
# and that the model replaces by the projected queries (config.image_token_index). It is the
# processor's own default name (processing_instructblip.py: AddedToken("<image>", special=True)).
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, BOS_TOKEN)
PUNCTUATION: tuple[str, ...] = tuple(string.punctuation)  # the pre-tokenizer splits each one off


def build_word_tokenizer(words: Iterable[str], *, image_token: bool = True) -> PreTrainedTokenizerFast:
    """Build a deterministic word-level tokenizer over ``words`` (lowercased, deduplicated, sorted).

    Args:
        words: the vocabulary, e.g. ``explore.world.text.vocabulary()``. Words must be single
            tokens after lowercasing and splitting on whitespace and punctuation.
        image_token: add the ``<image>`` placeholder (last id). True for the language-model
            tokenizer, False for the Q-Former tokenizer.

    Returns:
        A ``PreTrainedTokenizerFast`` with pad / eos / unk / bos set, padding on the right (set
        ``padding_side = "left"`` for batched generation with a decoder-only LM). Unknown words
        map to ``<unk>``; ``decode`` joins words with spaces and attaches punctuation.

    Raises:
        ConfigError: a word that is empty, special, or would be split by the pre-tokenizer.
    """
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    clean: set[str] = set()
    for word in words:
        lowered = word.lower()
        pieces = [piece for piece, _ in pre_tokenizer.pre_tokenize_str(lowered)]
        if pieces != [lowered] or lowered in SPECIAL_TOKENS or lowered == IMAGE_TOKEN:
            raise ConfigError(
                f"tokenizer vocabulary: {word!r} is not a single word (it splits into {pieces}); "
                "pass words without spaces or punctuation"
            )
        clean.add(lowered)
    vocab_list = list(SPECIAL_TOKENS) + list(PUNCTUATION) + sorted(clean - set(PUNCTUATION))
    vocab = {token: index for index, token in enumerate(vocab_list)}

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizer
    # WordPiece's decoder joins tokens with spaces and its cleanup removes the space before
    # punctuation ("is it red ?" → "is it red?"); no token starts with "##", so nothing else merges.
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    specials = list(SPECIAL_TOKENS) + ([IMAGE_TOKEN] if image_token else [])
    # Special added tokens are matched before normalisation, so "<image>" is never lowercased or split.
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])

    # Note: do NOT register "<image>" as extra_special_tokens={"image_token": ...}: transformers 5.24's
    # InstructBlipProcessor then reads tokenizer.image_token as a str and fails on `.content`.
    # Without that attribute the processor adds AddedToken("<image>"), which already exists here,
    # so no id changes.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        bos_token=BOS_TOKEN,
        padding_side="right",
    )


def require_image_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """Id of the ``<image>`` placeholder; raise :class:`ConfigError` if the tokenizer has none."""
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ConfigError(
            f"the language-model tokenizer has no {IMAGE_TOKEN!r} token; build it with build_word_tokenizer(words)"
        )
    return token_id
