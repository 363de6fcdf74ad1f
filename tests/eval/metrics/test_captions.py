"""explore.eval.metrics.captions: corpus BLEU-4 and CIDEr-D as coco-caption computes them."""

from __future__ import annotations

import math

import pytest

from explore.eval.metrics.caption_tokens import tokenize_caption
from explore.eval.metrics.captions import bleu4, cider_d, cider_d_per_example

TINY, SMALL = 1e-15, 1e-9  # coco-caption's smoothing constants


def test_bleu4_identical_caption_is_one() -> None:
    # precisions (c + 1e-15) / (c + 1e-9) for c = 5, 4, 3, 2: 1 - O(1e-10)
    assert bleu4({1: "a dog runs on the grass."}, {1: ["A dog runs on the grass"]}) == pytest.approx(1.0, abs=1e-8)


def test_bleu4_worked_example_with_brevity_penalty() -> None:
    predictions = {
        "img1": "A man rides a horse.",  # 5 tokens
        "img2": "two cats sleeping",  # 3 tokens
    }
    references = {
        "img1": ["a man rides a brown horse", "a person is riding a horse on a beach"],  # 6, 9 tokens
        "img2": ["two cats are sleeping on a sofa"],  # 7 tokens
    }
    # img1, closest reference length to 5 is 6.
    #   1-grams a,a,man,rides,horse: all within the per-reference maxima (a: 3)  -> 5/5
    #   2-grams "a man","man rides","rides a" (ref 1), "a horse" (ref 2)          -> 4/4
    #   3-grams "a man rides","man rides a" yes, "rides a horse" no               -> 2/3
    #   4-grams "a man rides a" yes, "man rides a horse" no                       -> 1/2
    # img2, reference length 7.
    #   1-grams two,cats,sleeping -> 3/3; 2-grams "two cats" yes, "cats sleeping" no -> 1/2
    #   3-grams "two cats sleeping" no -> 0/1; 4-grams none -> 0/0
    # corpus: correct (8, 5, 2, 1) / guessed (8, 6, 4, 2); lengths c = 8, r = 6 + 7 = 13
    precision = (8 / 8) * (5 / 6) * (2 / 4) * (1 / 2)  # = 5/24
    expected = precision**0.25 * math.exp(1 - 13 / 8)  # brevity penalty exp(1 - r/c) ~ 0.3616
    assert bleu4(predictions, references) == pytest.approx(expected, rel=1e-8)


def test_bleu4_closest_reference_length_breaks_ties_to_the_shorter() -> None:
    # 5 tokens; references of 4 and 6 tokens are equally close: coco-caption takes 4, so there is
    # no brevity penalty (taking 6 would multiply by exp(1 - 6/5) = 0.82). All n-grams match ref 2.
    score = bleu4({1: "dogs run in the park"}, {1: ["dogs run in parks", "two dogs run in the park"]})
    assert score == pytest.approx(1.0, abs=1e-8)


def test_bleu4_without_a_matching_4gram_is_tiny_but_positive() -> None:
    # "the cat sat on the mat" vs "the cat is on the mat": 1-grams 5/6 (the x2, cat, on, mat),
    # 2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4 (on the mat), 4-grams 0/3;
    # equal lengths, no brevity penalty. coco-caption smooths 0/3 to 1e-15 / (3 + 1e-9).
    expected = ((5 / 6) * (3 / 5) * (1 / 4) * (TINY / (3 + SMALL))) ** 0.25  # ~ 8.0e-5
    score = bleu4({1: "the cat sat on the mat"}, {1: ["the cat is on the mat"]})
    assert score == pytest.approx(expected, rel=1e-6)
    assert 0 < score < 1e-3


def test_cider_d_identical_and_disjoint() -> None:
    # 2 images, so idf = log 2 - log(df); every n-gram below has df <= 1.
    # img1: candidate == reference "a cat": cosine 1 for n = 1, 2; no 3-/4-grams (0); equal
    #   bigram counts, so no length penalty: 10 * mean(1, 1, 0, 0) = 5.0.
    # img2: "a bird" shares no n-gram with "the dog": 0.
    scores = cider_d_per_example({1: "a cat", 2: "a bird"}, {1: ["a cat"], 2: ["the dog"]})
    assert scores == pytest.approx({1: 5.0, 2: 0.0}, abs=1e-12)
    assert cider_d({1: "a cat", 2: "a bird"}, {1: ["a cat"], 2: ["the dog"]}) == pytest.approx(2.5, abs=1e-12)


def test_cider_d_clipping_and_length_penalty() -> None:
    # L = log 2. img1 candidate "a a a a": a x4, "a a" x3, "a a a" x2, "a a a a" x1 -> weights
    # 4L, 3L, 2L (df 0 counts as 1), 1L; reference "a a": a x2 -> 2L, "a a" x1 -> L.
    #   n=1: min(4L, 2L) * 2L / (4L * 2L) = 1/2 (clipped; unclipped it would be 1)
    #   n=2: min(3L, L) * L / (3L * L) = 1/3;  n=3, 4: the reference has none -> 0
    #   bigram counts 3 vs 1: delta 2, penalty exp(-2^2 / (2 * 6^2)) = exp(-1/18)
    #   score = 10 * (1/2 + 1/3) / 4 * exp(-1/18) = 25/12 * exp(-1/18)
    # img2 "b c" == reference: 5.0 (as in the test above)
    scores = cider_d_per_example({1: "a a a a", 2: "b c"}, {1: ["a a"], 2: ["b c"]})
    assert scores[1] == pytest.approx(25 / 12 * math.exp(-1 / 18), rel=1e-12)
    assert scores[2] == pytest.approx(5.0, rel=1e-12)


def test_cider_d_document_frequency_comes_from_the_corpus_references() -> None:
    # "a" is in the references of both images: idf log 2 - log 2 = 0, so it carries no weight.
    # img1 "a dog" vs "a cat": unigram dot = 0*0 (a) + 0 (dog not in ref) = 0; bigram 0 -> 0.
    # img2 "a dog" == reference: n=1 vector (0, L) against (0, L) -> 1; n=2 -> 1; 5.0.
    scores = cider_d_per_example({1: "a dog", 2: "a dog"}, {1: ["a cat"], 2: ["a dog"]})
    assert scores == pytest.approx({1: 0.0, 2: 5.0}, abs=1e-12)


def test_cider_d_averages_over_references() -> None:
    # Every n-gram has df 1 (idf log 2). img1: against "a cat" the cosines are (1, 1, 0, 0),
    # against "the dog" (0, 0, 0, 0); equal bigram counts, no penalty.
    # 10 * mean over n of the sum over references / 2 references = 10 * (2 / 4) / 2 = 2.5
    scores = cider_d_per_example({1: "a cat", 2: "x y"}, {1: ["a cat", "the dog"], 2: ["x y"]})
    assert scores[1] == pytest.approx(2.5, abs=1e-12)


def test_cider_d_of_a_single_image_is_zero() -> None:
    # idf = log(1) - log(df) = 0 for every n-gram
    assert cider_d({1: "a cat"}, {1: ["a cat"]}) == 0.0


@pytest.mark.parametrize("metric", [bleu4, cider_d])
def test_ids_must_match(metric) -> None:
    with pytest.raises(ValueError, match=r"without references: \[2\]"):
        metric({1: "a", 2: "b"}, {1: ["a"]})
    with pytest.raises(ValueError, match="non-empty list"):
        metric({1: "a"}, {1: []})
    with pytest.raises(ValueError, match="non-empty list"):
        metric({1: "a"}, {1: "a"})
    with pytest.raises(ValueError, match="no predictions"):
        metric({}, {})


@pytest.mark.parametrize(
    ("caption", "tokens"),
    [  # outputs of CoreNLP 3.4.1 PTBTokenizer -preserveLines -lowerCase, minus PUNCTUATIONS
        ("A man's hat (red) is on the table.", "a man 's hat -lrb- red -rrb- is on the table"),
        ('Two dogs don\'t play "fetch" -- they\'re sleeping...', "two dogs do n't play fetch they 're sleeping"),
        ("A black-and-white photo of a 3.5 inch cat; it's [cute]!", "a black-and-white photo of a 3.5 inch cat it 's -lsb- cute -rsb-"),
        ("The U.S. flag, at 12:30 p.m., waves & low @ home / away.", "the u.s. flag at 12:30 p.m. waves & low @ home / away"),
        ("I can't believe it's 1,000 dollars' worth", "i ca n't believe it 's 1,000 dollars worth"),
        ("5% $20 #1 a+b", "5 % $ 20 # 1 a + b"),
        ("It\u2019s a dog\u2019s \u201ctoy\u201d on 3/4 of a bed.", "it 's a dog 's toy on 3/4 of a bed"),
        ("I cannot go", "i can not go"),
    ],
)  # fmt: skip
def test_tokenize_caption_matches_ptb_tokenizer(caption: str, tokens: str) -> None:
    assert tokenize_caption(caption) == tokens.split()
