"""Cross-check against pycocoevalcap (coco-caption on PyPI), the reference BLEU and CIDEr-D code.

pycocoevalcap is in the ``test`` extra (``pip install -e '.[test]'``, what ``make test`` installs), so
these run wherever the tests do. Its BLEU and CIDEr scorers need only numpy and are fed captions
pre-tokenised by our tokenizer; only the comparison with its PTBTokenizer needs Java (skipped without it).
"""

from __future__ import annotations

import shutil

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from explore.eval.metrics.caption_tokens import tokenize_caption
from explore.eval.metrics.captions import bleu4, cider_d_per_example


PREDICTIONS = {
    0: "A man riding a horse on a beach.",
    1: "Two dogs playing with a frisbee in the park.",
    2: "A plate of food with broccoli and rice.",
    3: "A red double-decker bus driving down the street.",
    4: "A cat sleeping on a laptop keyboard.",
    5: "A group of people standing around a kitchen.",
    6: "A train on the tracks.",
    7: "A woman holding an umbrella in the rain.",
    8: "A bathroom with a toilet and a sink.",
    9: "Kids flying kites.",
    10: "A giraffe standing next to a tree in a field.",
    11: "A man's skateboard (old) isn't moving, it's 1,000 years old!",
}
REFERENCES = {
    0: ["A man rides a brown horse along the beach.", "A person on horseback near the ocean.",
        "Someone riding a horse on the sand by the water."],
    1: ["Two dogs play with a frisbee on the grass.", "A pair of dogs chasing a frisbee in a park."],
    2: ["A plate with rice, broccoli and chicken.", "Food on a white plate including broccoli."],
    3: ["A red double decker bus on a city street.", "A double-decker bus drives down the road."],
    4: ["A cat is lying on a laptop.", "A sleepy cat on top of a computer keyboard."],
    5: ["People gathered in a kitchen.", "A group of friends standing in a kitchen talking."],
    6: ["A passenger train travelling on the tracks.", "A train is stopped at a station."],
    7: ["A woman with an umbrella walks in the rain.", "A lady holding a black umbrella."],
    8: ["A small bathroom with a toilet, sink and mirror.", "A white toilet next to a sink."],
    9: ["Children fly kites in a field.", "Several kids flying colorful kites on a windy day."],
    10: ["A giraffe stands beside a tree.", "A tall giraffe in a grassy field next to trees."],
    11: ["An old skateboard that isn't moving.", "A man's old skateboard (1,000 years)."],
}  # fmt: skip


def tokenized() -> tuple[dict, dict]:
    res = {key: [" ".join(tokenize_caption(text))] for key, text in PREDICTIONS.items()}
    gts = {key: [" ".join(tokenize_caption(text)) for text in refs] for key, refs in REFERENCES.items()}
    return gts, res


def test_bleu4_matches_pycocoevalcap() -> None:
    gts, res = tokenized()
    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert bleu4(PREDICTIONS, REFERENCES) == pytest.approx(scores[3], rel=1e-12)


def test_cider_d_matches_pycocoevalcap() -> None:
    gts, res = tokenized()
    corpus, per_image = Cider().compute_score(gts, res)
    ours = cider_d_per_example(PREDICTIONS, REFERENCES)
    assert [ours[key] for key in gts] == pytest.approx(list(per_image), rel=1e-12)
    assert sum(ours.values()) / len(ours) == pytest.approx(corpus, rel=1e-12)


@pytest.mark.skipif(shutil.which("java") is None, reason="coco-caption's PTBTokenizer needs Java")
def test_tokenize_caption_matches_ptb_tokenizer_on_these_captions() -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {f"{key}/{i}": [{"caption": text}]
                for key, texts in REFERENCES.items() for i, text in enumerate([PREDICTIONS[key], *texts])}  # fmt: skip
    expected = PTBTokenizer().tokenize(captions)
    assert {key: " ".join(tokenize_caption(value[0]["caption"])) for key, value in captions.items()} == {
        key: value[0] for key, value in expected.items()
    }
