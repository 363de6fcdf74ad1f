"""A word-level tokenizer for from-scratch models, built with ``tokenizers`` from a word list.

The shapes world has a closed vocabulary of a few hundred lowercase words, so one id per word
(plus punctuation) is both the smallest and the most readable choice: ``decode`` gives the words
back. The same builder makes the language-model tokenizer (with the image placeholder token) and
the Q-Former tokenizer (without it); the word ids are identical in both.

Ids: 0 ``<pad>``, 1 ``</s>`` (eos), 2 ``<unk>``, 3 ``<s>`` (bos), then the punctuation marks, then
the words in sorted order, then ``<image>`` last when asked for. The T5 convention pad=0 / eos=1
makes T5's ``decoder_start_token_id = pad_token_id`` work unchanged.

Special tokens: :mod:`explore.models.collate` adds bos / eos explicitly where each language-model
family needs them (it tokenizes with ``add_special_tokens=False``). The language-model tokenizer
*also* gets a post-processor that adds them the same way (:func:`set_special_tokens`: T5 ``P </s>``,
LLaMA ``<s> P``), so that ``InstructBlipProcessor`` — what lmms-eval, VLMEvalKit and every user
call — feeds the model exactly the sequence explore trained and evaluates it on. And a saved
tokenizer carries no truncation or padding state (:func:`clear_call_state`): a fast tokenizer
remembers the last call's ``truncation=True, max_length=48`` in its backend, and transformers 5
then cuts the processor's text at that length silently.

Words added to a vocabulary later (``extra_words``) take ids after every existing id, so a model
trained on the smaller vocabulary keeps its ids and only grows its embedding tables.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
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


def build_word_tokenizer(words: Iterable[str], *, image_token: bool = True,
                         extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:  # fmt: skip
    """Build a deterministic word-level tokenizer over ``words`` (lowercased, deduplicated, sorted).

    Args:
        words: the vocabulary, e.g. ``explore.world.vocabulary.vocabulary()``. Words must be single
            tokens after lowercasing and splitting on whitespace and punctuation.
        image_token: add the ``<image>`` placeholder (after the words). True for the language-model
            tokenizer, False for the Q-Former tokenizer.
        extra_words: words appended after every id above (sorted; those already in ``words`` are
            skipped), so the ids of ``words`` are those of a tokenizer built without them.

    Returns:
        A ``PreTrainedTokenizerFast`` with pad / eos / unk / bos set, padding on the right (set
        ``padding_side = "left"`` for batched generation with a decoder-only LM). Unknown words
        map to ``<unk>``; ``decode`` joins words with spaces and attaches punctuation.

    Raises:
        ConfigError: a word that is empty, special, or would be split by the pre-tokenizer.
    """
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])

    def clean(word_list: Iterable[str]) -> set[str]:
        kept: set[str] = set()
        for word in word_list:
            lowered = word.lower()
            pieces = [piece for piece, _ in pre_tokenizer.pre_tokenize_str(lowered)]
            if pieces != [lowered] or lowered in SPECIAL_TOKENS or lowered == IMAGE_TOKEN:
                raise ConfigError(
                    f"tokenizer vocabulary: {word!r} is not a single word (it splits into {pieces}); "
                    "pass words without spaces or punctuation"
                )
            kept.add(lowered)
        return kept

    base = clean(words) - set(PUNCTUATION)
    vocab_list = list(SPECIAL_TOKENS) + list(PUNCTUATION) + sorted(base)
    vocab = {token: index for index, token in enumerate(vocab_list)}
    if image_token:  # <image> takes the next id, as in a tokenizer built without extra words
        vocab[IMAGE_TOKEN] = len(vocab)
    for word in sorted(clean(extra_words) - base - set(PUNCTUATION)):
        vocab[word] = len(vocab)

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizer
    # WordPiece's decoder joins tokens with spaces and its cleanup removes the space before
    # punctuation ("is it red ?" → "is it red?"); no token starts with "##", so nothing else merges.
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    # Special added tokens are matched before normalisation, so "<image>" is never lowercased or split.
    # <image> is already in the vocab, so registering it keeps its id.
    specials = list(SPECIAL_TOKENS) + ([IMAGE_TOKEN] if image_token else [])
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


def set_special_tokens(tokenizer: PreTrainedTokenizerFast, lm_family: str) -> None:
    """Give a word tokenizer the post-processor that adds what :mod:`explore.models.collate` adds:
    ``P </s>`` for a T5 LM (the encoder input ends with eos, as Flan-T5's tokenizer does) or
    ``<s> P`` for a LLaMA LM (as Vicuna's does). The Q-Former tokenizer keeps the bare words.

    Raises:
        ConfigError: an unknown ``lm_family``.
    """
    if lm_family == "t5":
        template = processors.TemplateProcessing(single=f"$A {EOS_TOKEN}", pair=f"$A $B {EOS_TOKEN}",
                                                 special_tokens=[(EOS_TOKEN, tokenizer.eos_token_id)])  # fmt: skip
    elif lm_family == "llama":
        template = processors.TemplateProcessing(single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B",
                                                 special_tokens=[(BOS_TOKEN, tokenizer.bos_token_id)])  # fmt: skip
    else:
        raise ConfigError(f"unknown language-model family {lm_family!r}; expected 't5' or 'llama'")
    tokenizer.backend_tokenizer.post_processor = template


def clear_call_state(tokenizer: PreTrainedTokenizerFast) -> None:
    """Forget the truncation / padding that the last call left in the fast tokenizer's backend, so a
    saved ``tokenizer.json`` does not silently truncate or pad every later call (transformers 5 applies
    a stored ``truncation`` block even when the caller asks for none)."""
    tokenizer.backend_tokenizer.no_truncation()
    tokenizer.backend_tokenizer.no_padding()
    # transformers 5 also copies a loaded tokenizer.json's truncation block into init_kwargs, which it
    # writes to tokenizer_config.json ("max_length": 48, ...) and InstructBlipProcessor passes to every
    # call; and it records how the files were found (is_local, local_files_only), which is not a
    # property of the tokenizer.
    for key in ("max_length", "stride", "truncation_strategy", "padding_strategy", "is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(key, None)


def require_image_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """Id of the ``<image>`` placeholder; raise :class:`ConfigError` if the tokenizer has none."""
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ConfigError(
            f"the language-model tokenizer has no {IMAGE_TOKEN!r} token; build it with build_word_tokenizer(words)"
        )
    return token_id
