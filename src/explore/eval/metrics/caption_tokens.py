"""Caption tokenisation that imitates coco-caption's PTBTokenizer in pure Python.

coco-caption (github.com/tylin/coco-caption, and pycocoevalcap on PyPI) tokenises every caption
with Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` (a Java program) and
then drops the tokens in ``PUNCTUATIONS`` (pycocoevalcap/tokenizer/ptbtokenizer.py). Java is not
a dependency of explore, so :func:`tokenize_caption` reproduces the rules that matter for
captions; the tests compare it with the real tokenizer where Java is installed.

Rules reproduced (checked against the Java tokenizer): lower-casing; "n't" and the clitics
's 're 've 'll 'd 'm split off ("don't" → "do n't", "man's" → "man 's"); quote marks, sentence
periods, commas, colons, semicolons, "!", "?", "-", "--" and "..." removed; commas and colons
inside numbers ("1,000", "12:30"), internal periods ("3.5", "u.s.") and hyphens ("black-and-white")
and slashes ("3/4") kept; % $ # + = & @ < > split into tokens of their own; brackets become
"-lrb-" "-rrb-" "-lsb-" "-rsb-" "-lcb-" "-rcb-" and are *kept*, because coco-caption compares
the lower-cased output with the upper-case "-LRB-" entries of ``PUNCTUATIONS``.

Known differences: CoreNLP knows hundreds of abbreviations that keep their final period; here only
single letters joined by periods ("u.s.", "p.m.") and ``ABBREVIATIONS`` do. Rarer rewrites
("rock'n'roll" → "rock 'n' roll", British/American quote forms, Unicode normalisation beyond
curly quotes) are not imitated. Such cases are rare in captions.
"""

from __future__ import annotations

import re

__all__ = ["ABBREVIATIONS", "PTB_PUNCTUATIONS", "tokenize_caption"]

# pycocoevalcap/tokenizer/ptbtokenizer.py, PUNCTUATIONS (verbatim)
PTB_PUNCTUATIONS = (
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";",
)  # fmt: skip
ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "etc.", "inc.", "co.", "ltd.", "mt."}
)

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_UNICODE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": "..."})
_SPLIT_WORDS = {"cannot": "can not", "gonna": "gon na", "gotta": "got ta", "wanna": "wan na"}
_SPLIT_WORD = re.compile(r"\b(" + "|".join(_SPLIT_WORDS) + r")\b")
_STRAY_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")  # quote marks and plural possessives
_NOT = re.compile(r"(\w)n't\b")
_CLITIC = re.compile(r"(\w)'(s|re|ve|ll|d|m)\b")
_COMMA_COLON = re.compile(r"(?<!\d)[,:]|[,:](?!\d)")  # not inside "1,000" / "12:30"
_ALWAYS_SPLIT = re.compile(r"(\.\.\.+|--+|[;!?%$#+=&@<>])")
_DOTTED_LETTERS = re.compile(r"^(?:[a-z]\.){2,}$")
_DROPPED = frozenset(PTB_PUNCTUATIONS)


def tokenize_caption(text: str) -> list[str]:
    """Tokens of one caption as coco-caption's PTB tokenisation would give them (see module doc).

    >>> tokenize_caption("A man's hat (red) is on the table.")
    ['a', 'man', "'s", 'hat', '-lrb-', 'red', '-rrb-', 'is', 'on', 'the', 'table']
    """
    text = text.translate(_UNICODE).lower().replace("\n", " ")
    for bracket, token in _BRACKETS.items():
        text = text.replace(bracket, f" {token} ")
    text = text.replace('"', " ").replace("`", " ")  # PTB turns these into `` '' ` tokens: dropped
    text = _SPLIT_WORD.sub(lambda match: _SPLIT_WORDS[match.group(1)], text)
    text = _STRAY_APOSTROPHE.sub(" ", text)
    text = _NOT.sub(r"\1 n't", text)
    text = _CLITIC.sub(r"\1 '\2", text)
    text = _COMMA_COLON.sub(lambda match: f" {match.group(0)} ", text)
    text = _ALWAYS_SPLIT.sub(r" \1 ", text)
    tokens = []
    for token in text.split():
        if token.endswith(".") and token not in ABBREVIATIONS and not _DOTTED_LETTERS.match(token):
            token = token.rstrip(".")  # a sentence period: its own token in PTB, then dropped
        if token and token not in _DROPPED and set(token) != {"-"}:
            tokens.append(token)
    return tokens
