"""VQAv2 accuracy, exactly as the official VQA evaluation code computes it.

Source: github.com/GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py at commit
c4e6a0e4e84b9702d99800d3393652d92b5df224 (the Python 3 version; salesforce/LAVIS, the InstructBLIP
code base, copies it unchanged as lavis/common/vqa_tools/vqa_eval.py). The tables below are copied
from it verbatim. Behaviour kept on purpose, because official numbers depend on it:

- the prediction is normalised (whitespace, ``processPunctuation``, ``processDigitArticle``); the
  human answers only get ``processPunctuation``, and only when they are not all identical. The
  official annotation files store answers already normalised; for raw answers from elsewhere pass
  ``normalize_references=True``.
- ``periodStrip`` is written ``(?!<=\\d)`` (a typo for the look-behind ``(?<!\\d)``): it removes
  every "." not followed by a digit. ``periodStrip.sub("", text, re.UNICODE)`` passes re.UNICODE
  (= 32) as *count*, so at most 32 periods are removed.
- the contraction keys "Id've", "I'dve", "Im", "Ive" are capitalised and never match (the text is
  lower-cased first).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["exact_match", "normalize_vqa_answer", "process_digit_article", "process_punctuation", "vqa_accuracy"]

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic, see the module docstring
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_OFFICIAL_PERIOD_COUNT = int(re.UNICODE)  # 32: re.UNICODE lands in sub()'s count argument


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: drop or space out punctuation, strip periods.

    A mark is deleted when it touches a space anywhere in the text or when the text contains a
    digit-comma-digit group ("1,000"); otherwise it becomes a space ("t-shirt" → "t shirt").
    """
    out = text
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words → digits, drop articles,
    restore contractions ("dont" → "don't"), single spaces."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_vqa_answer(text: str) -> str:
    """Normalise a predicted answer as the official evaluator does.

    Newlines and tabs become spaces, the text is stripped, then :func:`process_punctuation` and
    :func:`process_digit_article` are applied: ``"Two dogs."`` → ``"2 dogs"``.
    """
    return process_digit_article(process_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def vqa_accuracy(prediction: str, human_answers: Sequence[str], *, normalize_references: bool = False) -> float:
    """VQAv2 accuracy of one prediction against the human answers (10 in VQAv2), in [0, 1].

    The average, over the leave-one-out subsets of the human answers, of
    ``min(#answers in the subset equal to the normalised prediction / 3, 1)``. With 10 answers of
    which ``m`` match: 1.0 for m >= 4, 0.9 for m = 3, 0.6 for m = 2, 0.3 for m = 1.

    Args:
        prediction: the model's answer, raw.
        human_answers: the human answers. As in the official code they only go through
            :func:`process_punctuation`, and only when they are not all identical.
        normalize_references: apply the full :func:`normalize_vqa_answer` to the human answers
            instead (for answers that were not normalised when the data set was built).

    Raises:
        ValueError: no human answers.
    """
    if not human_answers:
        raise ValueError("vqa_accuracy: human_answers is empty; pass the question's human answers (10 in VQAv2)")
    answer = normalize_vqa_answer(prediction)
    if normalize_references:
        references = [normalize_vqa_answer(text) for text in human_answers]
    elif len(set(human_answers)) > 1:
        references = [process_punctuation(text) for text in human_answers]
    else:
        references = list(human_answers)
    matches = [reference == answer for reference in references]
    total = sum(matches)
    # leaving answer i out removes it from the count of matches among the other answers
    per_subset = [min(1.0, (total - left_out) / 3) for left_out in matches]
    return sum(per_subset) / len(per_subset)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer, else 0.0.

    Both sides go through :func:`normalize_vqa_answer`. Not an official VQAv2 metric: it is the
    usual score for data sets with one reference answer (GQA-style questions, the shapes world).

    Raises:
        ValueError: no answers.
    """
    if not answers:
        raise ValueError("exact_match: answers is empty; pass at least one reference answer")
    answer = normalize_vqa_answer(prediction)
    return float(any(normalize_vqa_answer(text) == answer for text in answers))
