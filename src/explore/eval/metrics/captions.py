"""Corpus BLEU-4 and CIDEr-D as coco-caption (pycocoevalcap) computes them, in pure Python.

Sources (github.com/tylin/coco-caption; pycocoevalcap 1.2 on PyPI is the same code in Python 3):
- pycocoevalcap/bleu/bleu.py and bleu_scorer.py: ``Bleu(4)`` scores with
  ``compute_score(option="closest")``.
- pycocoevalcap/cider/cider.py and cider_scorer.py: the scorer coco-caption reports as "CIDEr" is
  CIDEr-D (clipped n-gram weights, Gaussian length penalty with sigma 6, x10).

Differences from coco-caption: captions are tokenised by
:func:`explore.eval.metrics.caption_tokens.tokenize_caption` (a pure-Python imitation of its Java
PTBTokenizer) instead of Java. Given the same tokens, the numbers are coco-caption's (a test
compares them with pycocoevalcap when it is installed).

Inputs: ``predictions`` maps an example id to one predicted caption; ``references`` maps the same
ids to a non-empty list of reference captions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from explore.eval.metrics.caption_tokens import tokenize_caption

__all__ = ["bleu4", "cider_d", "cider_d_per_example"]

MAX_N = 4  # n-gram orders 1..4, for both metrics
CIDER_SIGMA = 6.0  # CiderScorer(sigma=6.0)
_TINY, _SMALL = 1e-15, 1e-9  # bleu_scorer.compute_score: "so that if guess is 0 still return 0"

Ngram = tuple[str, ...]


def bleu4(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> float:
    """Corpus BLEU-4 in [0, 1], as ``Bleu(4).compute_score`` reports its 4th value.

    Clipped n-gram matches and candidate n-grams are summed over the corpus; each candidate's
    reference length is the *closest* reference length (ties: the shorter); the brevity penalty
    ``exp(1 - r/c)`` applies when the summed candidate length c is below the summed reference
    length r. Like coco-caption, each precision is ``(matches + 1e-15) / (candidates + 1e-9)``,
    so a corpus without a matching 4-gram scores a tiny positive number, not 0.

    Raises:
        ValueError: the two mappings have different ids, or an id has no references.
    """
    ids = _check(predictions, references)
    test_len = ref_len = 0
    guess, correct = [0] * MAX_N, [0] * MAX_N
    for key in ids:
        candidate = tokenize_caption(predictions[key])
        refs = [tokenize_caption(text) for text in references[key]]
        max_counts: Counter[Ngram] = Counter()
        for ref in refs:
            max_counts |= _ngrams(ref)  # Counter union keeps the per-n-gram maximum
        test_len += len(candidate)
        # cook_test with eff="closest": min over (|len - test_len|, len)
        ref_len += min((abs(len(ref) - len(candidate)), len(ref)) for ref in refs)[1]
        for ngram, count in _ngrams(candidate).items():
            correct[len(ngram) - 1] += min(max_counts[ngram], count)
        for k in range(MAX_N):
            guess[k] += max(0, len(candidate) - k)
    score = 1.0
    for k in range(MAX_N):
        score *= (correct[k] + _TINY) / (guess[k] + _SMALL)
    score **= 1.0 / MAX_N
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        score *= math.exp(1 - 1 / ratio)
    return score


def cider_d(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> float:
    """Corpus CIDEr-D (the mean of :func:`cider_d_per_example`), as coco-caption's "CIDEr".

    On the usual scale (a caption equal to all its references scores up to 10). Document
    frequencies come from the references of the evaluated corpus, so scores depend on which
    examples are scored together, and a corpus of one image scores 0 (every idf is log(1) = 0).

    Raises:
        ValueError: the two mappings have different ids, or an id has no references.
    """
    scores = cider_d_per_example(predictions, references)
    return sum(scores.values()) / len(scores)


def cider_d_per_example(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> dict[Hashable, float]:
    """CIDEr-D of each example, scored within the whole corpus (``CiderScorer.compute_cider``).

    For n = 1..4 each caption becomes a tf-idf vector, ``tf * (log(#images) - log(max(1, df)))``
    with ``df`` = the number of images whose references contain the n-gram. Against each
    reference: ``sum(min(cand, ref) * ref) / (|cand| |ref|)`` (clipped cosine; 0 when a norm is 0,
    as in pycocoevalcap 1.2), times ``exp(-delta^2 / (2 * 6^2))`` where delta is the length
    difference (coco-caption counts bigrams, words - 1, which gives the same difference whenever
    both captions have a word). The score is the mean over n, averaged over references, times 10.

    Raises:
        ValueError: the two mappings have different ids, or an id has no references.
    """
    ids = _check(predictions, references)
    candidates = {key: _ngrams(tokenize_caption(predictions[key])) for key in ids}
    refs = {key: [_ngrams(tokenize_caption(text)) for text in references[key]] for key in ids}
    document_frequency: Counter[Ngram] = Counter()
    for key in ids:
        document_frequency.update({ngram for ref in refs[key] for ngram in ref})
    log_images = math.log(float(len(ids)))

    def vector(counts: Counter[Ngram]) -> tuple[list[dict[Ngram, float]], list[float], int]:
        weights: list[dict[Ngram, float]] = [{} for _ in range(MAX_N)]
        norms = [0.0] * MAX_N
        for ngram, term_frequency in counts.items():
            n = len(ngram) - 1
            idf = log_images - math.log(max(1.0, document_frequency[ngram]))
            weights[n][ngram] = term_frequency * idf
            norms[n] += weights[n][ngram] ** 2
        bigrams = sum(count for ngram, count in counts.items() if len(ngram) == 2)
        return weights, [math.sqrt(norm) for norm in norms], bigrams

    scores = {}
    for key in ids:
        cand_vec, cand_norm, cand_len = vector(candidates[key])
        total = [0.0] * MAX_N
        for ref_counts in refs[key]:
            ref_vec, ref_norm, ref_len = vector(ref_counts)
            penalty = math.exp(-((cand_len - ref_len) ** 2) / (2 * CIDER_SIGMA**2))
            for n in range(MAX_N):
                value = sum(min(w, ref_vec[n].get(g, 0.0)) * ref_vec[n].get(g, 0.0) for g, w in cand_vec[n].items())
                if cand_norm[n] != 0 and ref_norm[n] != 0:
                    value /= cand_norm[n] * ref_norm[n]
                total[n] += value * penalty
        scores[key] = sum(total) / MAX_N / len(refs[key]) * 10.0
    return scores


def _ngrams(tokens: list[str]) -> Counter[Ngram]:
    """Counts of all n-grams, n = 1..4 (``precook``)."""
    counts: Counter[Ngram] = Counter()
    for n in range(1, MAX_N + 1):
        for start in range(len(tokens) - n + 1):
            counts[tuple(tokens[start : start + n])] += 1
    return counts


def _check(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> list[Hashable]:
    """The shared ids, in prediction order; coco-caption asserts ``gts.keys() == res.keys()``."""
    missing = [key for key in predictions if key not in references]
    extra = [key for key in references if key not in predictions]
    if missing or extra:
        raise ValueError(
            f"caption metrics: predictions and references must have the same ids; without references: "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, without a prediction: "
            f"{extra[:5]}{' ...' if len(extra) > 5 else ''}"
        )
    if not predictions:
        raise ValueError("caption metrics: no predictions to score")
    for key, refs in references.items():
        if isinstance(refs, str) or not refs:
            raise ValueError(f"caption metrics: id {key!r} needs a non-empty list of reference captions, got {refs!r}")
        if not isinstance(predictions[key], str):
            raise ValueError(
                f"caption metrics: the prediction for id {key!r} must be a string, got {predictions[key]!r}"
            )
    return list(predictions)
