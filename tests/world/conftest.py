import re

import pytest

from explore.world.scene import COLOURS, SHAPES, SIZES, Obj, Scene
from explore.world.text import PLURAL, POSITIONS

SINGULAR = {plural: singular for singular, plural in PLURAL.items()}
_REF = re.compile(
    rf"^(?:(?P<size>{'|'.join(SIZES)}) )?(?:(?P<colour>{'|'.join(COLOURS)}) )?(?P<noun>{'|'.join(SHAPES)}|object)"
    rf"(?: at the (?P<pos>{'|'.join(sorted(POSITIONS, key=len, reverse=True))}))?$"
)


def resolve(scene: Scene, ref: str) -> list[Obj]:
    """Independent oracle: the objects of `scene` that a referring expression describes."""
    m = _REF.match(ref)
    assert m, f"unparseable reference {ref!r}"
    found = []
    for o in scene.objects:
        if m["size"] and o.size != m["size"]:
            continue
        if m["colour"] and o.colour != m["colour"]:
            continue
        if m["noun"] != "object" and o.shape != m["noun"]:
            continue
        if m["pos"] and o.position != m["pos"]:
            continue
        found.append(o)
    return found


def count_noun(scene: Scene, noun: str) -> int:
    """Independent oracle for counting ("objects", "circles", "red objects", "red object", "star")."""
    words = noun.split()
    colour = words[0] if len(words) == 2 else None
    head = words[-1]
    shape = SINGULAR.get(head, head)
    return sum(
        (colour is None or o.colour == colour) and (shape in (None, "object") or o.shape == shape)
        for o in scene.objects
    )


@pytest.fixture
def many_scenes():
    from explore.world.splits import split_scenes

    return split_scenes("train", 300, seed=7)


@pytest.fixture
def oracle():
    """Independent answer oracles (they parse the text themselves, not via explore.world.text)."""
    from types import SimpleNamespace

    return SimpleNamespace(resolve=resolve, count_noun=count_noun)
