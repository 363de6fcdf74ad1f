"""Where does a VLM lose the spatial relation between two objects? Behaviour tables and linear probes.

Issue 14: the embedded model reads one object's position ("Where is the red circle?") at ~98% but answers
relation questions ("Is the red circle left of the blue square?", "Where is the A relative to the B?") near
chance. This benchmark measures, on one model, side by side:

1. behaviour on relation questions (the seed-unseen test split by default): accuracy by form (yes/no vs where),
   by axis (a row relation left/right vs a column relation above/below; aligned pairs vs diagonal ones),
   the answer distribution against the truth, the kind of wrong "where" answer (the opposite direction, i.e.
   A and B swapped, or the other axis), and a counterfactual: the same image and template with the two
   objects' names swapped (the truth flips), to tell random errors from systematic ones (an answer that
   ignores the order, always "yes", ...). With ``--last-word`` (a model trained to state both positions
   before the relation), also how often each stated position is right;
2. probes, fitted on the val split and scored on the test split, on features of each stage of the model:
   the ViT tokens, the Q-Former's query outputs after its first layer and after the projection (the 16
   tokens the LM sees, flattened), and the T5 encoder's states at the 16 image positions (flattened) and at
   the token of A's and of B's name (input embeddings, after layer 1, final).
   a. linear probes (multinomial logistic regression on standardised features) of the grid cell of object A
      and of object B of a relation question, and of the object of a position question as the control.
      For the ViT, which never sees the question, per-patch colour / shape heads locate the named object
      (the patch that best matches its name). "compare" derives the answer from the two probed cells: what
      a model that compared the cells it holds would answer;
   b. the scene map: per grid cell, linear heads for the colour and shape of its object (or none), and A / B
      located by name from them: is the whole scene there, whichever object the question names?
   c. the answer of "where" questions read directly (linear and a one-hidden-layer MLP).

A cell readable from the projected queries but not answered says the LM cannot compare; a cell that is not
readable there (while the ViT has it) says the Q-Former drops the object.

    OMP_NUM_THREADS=1 python benchmarks/relation_probe.py --model embedded          # ~12 min on one thread
    OMP_NUM_THREADS=1 python benchmarks/relation_probe.py --model runs/relation-probe/run/model --skip-probes
    OMP_NUM_THREADS=1 python benchmarks/relation_probe.py --model runs/relation-probe/stepwise/model \
        --max-new-tokens 24 --last-word --skip-probes
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from explore.data.example import Example
from explore.eval.world import normalize_answer
from explore.models.collate import collate
from explore.models.generate import generate_answers
from explore.models.loading import load_model
from explore.world.examples import world_examples
from explore.world.scene import CELL_NAMES, COLOURS, GRID, SHAPES, Obj, Scene
from explore.world.text import DIRECTIONS, direction, holds

OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
NAME_RE = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")
REL_RE = re.compile(r"\b(left of|right of|above|below)\b")


@dataclass
class RelationItem:
    """A relation (or, as the control, position) question with the objects it names."""

    example: Example
    scene: Scene
    form: str  # "yesno", "where" or "position"
    a: Obj  # the subject (the object of a position question)
    b: Obj | None  # the reference object
    rel: str | None  # the relation word of a yes/no question

    @property
    def axis(self) -> str:
        """The grid line the relation runs along: "row" for left / right, "column" for above / below."""
        word = self.rel if self.form == "yesno" else direction(self.a, self.b)
        return "row" if word in ("left", "right") else "column"

    @property
    def aligned(self) -> bool:
        """The two objects share a row or a column (always, for "where" questions)."""
        return direction(self.a, self.b) is not None


def _find(scene: Scene, colour: str, shape: str) -> Obj:
    obj = scene.find(colour, shape)
    if obj is None:
        raise ValueError(f"scene {scene.seed} has no {colour} {shape}")
    return obj


def parse_relation(example: Example) -> RelationItem:
    """A world relation question with its subject A, reference B and relation word parsed back from the
    question (``ask`` does not store them)."""
    scene, question = Scene.from_dict(example.meta["scene"]), example.meta["question"]
    names = NAME_RE.findall(question.lower())
    if question.lower().startswith("in which direction from the"):  # the only template naming b first
        names = names[::-1]
    a, b = (_find(scene, *name) for name in names)
    rel = REL_RE.search(question).group(1).removesuffix(" of") if example.meta["form"] == "yesno" else None
    return RelationItem(example, scene, example.meta["form"], a, b, rel)


def relation_items(split: str, n: int, seed: int, resolution: int) -> list[RelationItem]:
    """Relation questions of the first ``n`` scenes of ``split`` (one-object scenes give none)."""
    examples = world_examples(split, n, "vqa", seed=seed, qtypes=("relation",), resolution=resolution)
    return [parse_relation(example) for example in examples]


def position_items(split: str, n: int, seed: int, resolution: int) -> list[RelationItem]:
    """Position questions ("Where is the red circle?"): the control, answered at ~98%."""
    items = []
    for example in world_examples(split, n, "vqa", seed=seed, qtypes=("position",), resolution=resolution):
        scene = Scene.from_dict(example.meta["scene"])
        (name,) = NAME_RE.findall(example.meta["question"].lower())
        items.append(RelationItem(example, scene, "position", _find(scene, *name), None, None))
    return items


def swapped(item: RelationItem) -> RelationItem:
    """The same image and template with A's and B's names exchanged (the truth flips)."""

    def swap(text: str) -> str:
        return text.replace(item.a.name, "\0").replace(item.b.name, item.a.name).replace("\0", item.b.name)

    question = swap(item.example.meta["question"])
    answer = direction(item.b, item.a) if item.form == "where" else ("yes" if holds(item.b, item.rel, item.a) else "no")
    example = replace(item.example, prompt=swap(item.example.prompt), answers=[answer],
                      meta={**item.example.meta, "question": question})  # fmt: skip
    return replace(item, example=example, a=item.b, b=item.a)


# ----------------------------------------------------------------------------------------------------------
# 1. Behaviour


# Answer decoding: (new tokens, keep only the last word). The defaults are `explore eval`'s; a model trained to
# state both positions before the relation (a stepwise target) is read with more tokens and its last word.
DECODING = {"max_new_tokens": 6, "last_word": False}


def answer_all(model, processor, items: list[RelationItem], batch_size: int) -> tuple[list[str], list[str]]:
    """(the normalised answers as scored, the generated texts) of ``items``."""
    answers, texts = [], []
    for start in tqdm(range(0, len(items), batch_size), desc="answers", leave=False):
        batch = [item.example for item in items[start : start + batch_size]]
        texts += [normalize_answer(t) for t in generate_answers(model, processor, batch,
                                                                  max_new_tokens=DECODING["max_new_tokens"])]  # fmt: skip
    for text in texts:
        answers.append(text.split()[-1] if DECODING["last_word"] and text.split() else text)
    return answers, texts


_POSITION_ALT = "|".join(sorted((name for row in CELL_NAMES for name in row), key=len, reverse=True))
STEPWISE_RE = re.compile(rf"the (\w+ \w+) is at the ({_POSITION_ALT}) and the (\w+ \w+) is at the ({_POSITION_ALT})")


def stepwise_table(items: list[RelationItem], texts: list[str], hits: list[bool]) -> None:
    """For answers that first state both positions ("the red circle is at the top left and the blue square is at
    the right . left"): how often each stated position is right, and the final word given both are."""
    rows: dict[str, list[list[bool]]] = defaultdict(lambda: [[], [], [], []])
    for item, text, hit in zip(items, texts, hits):
        match = STEPWISE_RE.search(text)
        for group in (item.form, f"{item.form} / {item.axis} relation"):
            stated = rows[group]
            stated[0].append(match is not None)
            if match is None:
                continue
            a_right = match.group(1) == item.a.name and match.group(2) == item.a.position
            b_right = match.group(3) == item.b.name and match.group(4) == item.b.position
            stated[1].append(a_right)
            stated[2].append(b_right)
            if a_right and b_right:
                stated[3].append(hit)
    print("\n1e. Stepwise answers: A's and B's stated positions, and the final word when both are right")
    print(f"  {'':<28} {'parsed':>7} {'A right':>8} {'B right':>8} {'final | both':>13}")
    for group in sorted(rows):
        cells = [sum(v) / max(1, len(v)) for v in rows[group]]
        print(f"  {group:<28} " + " ".join(f"{c:>{w}.1%}" for c, w in zip(cells, (7, 8, 8, 13)))
              + f"  (n={len(rows[group][0])}, both right {len(rows[group][3])})")  # fmt: skip


def _row(label: str, hits: list[bool], width: int = 34) -> str:
    return f"  {label:<{width}} {sum(hits) / max(1, len(hits)):>7.1%}  (n={len(hits)})"


def behaviour(model, processor, items: list[RelationItem], batch_size: int) -> None:
    answers, texts = answer_all(model, processor, items, batch_size)
    truths = [item.example.answers[0] for item in items]
    hits = [a == t for a, t in zip(answers, truths)]
    groups: dict[str, list[bool]] = defaultdict(list)
    for item, hit in zip(items, hits):
        groups[f"{item.form}"].append(hit)
        groups[f"{item.form} / {item.axis} relation"].append(hit)
        if item.form == "yesno":
            groups[f"yesno / {'aligned' if item.aligned else 'diagonal'} pair"].append(hit)
            groups[f"yesno / truth {item.example.answers[0]}"].append(hit)
        else:
            groups[f"where / truth {item.example.answers[0]}"].append(hit)
    print(f"\n1a. Accuracy on relation questions ({len(items)})")
    print(_row("all", hits))
    for name in sorted(groups):
        print(_row(name, groups[name]))

    for form, labels in (("yesno", ("yes", "no")), ("where", DIRECTIONS)):
        rows = [(t, a) for item, t, a in zip(items, truths, answers) if item.form == form]
        counts = Counter(rows)
        others = sorted({a for _, a in rows} - set(labels))
        columns = list(labels) + others
        print(f"\n1b. {form}: answer (columns) against truth (rows)")
        print("  " + f"{'truth':<8}" + "".join(f"{c:>8}" for c in columns))
        for truth in labels:
            print("  " + f"{truth:<8}" + "".join(f"{counts[(truth, c)]:>8}" for c in columns))

    where = [(item, a) for item, a in zip(items, answers) if item.form == "where"]
    kinds = Counter()
    for item, a in where:
        truth = direction(item.a, item.b)
        kinds["right" if a == truth else "swapped (opposite)" if a == OPPOSITE[truth]
              else "other axis" if a in DIRECTIONS else "not a direction"] += 1  # fmt: skip
    print("\n1c. where: kind of answer  " + ", ".join(f"{k} {v / max(1, len(where)):.1%}" for k, v in kinds.items()))

    flipped = [swapped(item) for item in items]
    flipped_answers, _ = answer_all(model, processor, flipped, batch_size)
    print("\n1d. Counterfactual: A and B swapped in the question (same image; the truth flips)")
    for form in ("yesno", "where", None):
        pick = [i for i, item in enumerate(items) if form is None or item.form == form]
        same = [answers[i] == flipped_answers[i] for i in pick]
        both = [hits[i] and flipped_answers[i] == flipped[i].example.answers[0] for i in pick]
        print(f"  {form or 'all':<6} answer unchanged {sum(same) / max(1, len(same)):>6.1%}   "
              f"both right {sum(both) / max(1, len(both)):>6.1%}   (n={len(pick)})")  # fmt: skip
    if DECODING["last_word"]:
        stepwise_table(items, texts, hits)


# ----------------------------------------------------------------------------------------------------------
# 2. Probes


def cell_index(obj: Obj) -> int:
    row, col = obj.cell
    return row * GRID + col


def _token_index(ids: list[int], tokenizer, obj: Obj, offset: int) -> int:
    """Position in the LM input of the shape word of ``obj``'s name (its first occurrence)."""
    tokens = tokenizer.convert_ids_to_tokens(ids)
    for i in range(len(tokens) - 1):
        if tokens[i] == obj.colour and tokens[i + 1] == obj.shape:
            return offset + i + 1
    raise ValueError(f"{obj.name!r} not in the prompt tokens {tokens}")


def _keep(captured: dict[str, torch.Tensor], name: str):
    """A forward hook that stores its module's output (the hidden states) in ``captured[name]``."""

    def hook(module, args, output):
        if hasattr(output, "last_hidden_state"):
            output = output.last_hidden_state
        elif isinstance(output, tuple):
            output = output[0]
        captured[name] = output

    return hook


@torch.no_grad()
def features(model, processor, items: list[RelationItem], batch_size: int) -> dict[str, torch.Tensor]:
    """Per item: ViT tokens (N, 65, C); Q-Former queries after layer 1 and projected (N, 16·C); the T5
    encoder at the image positions (N, 16·C) and at A's / B's name (N, C) for its input, layer 1, output."""
    captured: dict[str, torch.Tensor] = {}
    lm_encoder = model.language_model.get_encoder()

    def keep_encoder_input(module, args, kwargs, output):  # the embeddings: projected queries + word vectors
        captured["lm_in"] = kwargs["inputs_embeds"]

    hooks = [
        model.vision_model.register_forward_hook(_keep(captured, "vit")),
        model.qformer.encoder.layer[0].register_forward_hook(_keep(captured, "q1")),
        model.language_projection.register_forward_hook(_keep(captured, "proj")),
        lm_encoder.register_forward_hook(keep_encoder_input, with_kwargs=True),
        lm_encoder.block[0].register_forward_hook(_keep(captured, "lm1")),
        lm_encoder.register_forward_hook(_keep(captured, "lm_out")),
    ]
    n_query = processor.num_query_tokens
    out: dict[str, list[torch.Tensor]] = defaultdict(list)
    try:
        for start in tqdm(range(0, len(items), batch_size), desc="features", leave=False):
            batch = items[start : start + batch_size]
            inputs = collate([it.example for it in batch], processor, with_labels=True, max_length=48,
                             decoder_only=False)  # fmt: skip
            model(**inputs)
            rows = torch.arange(len(batch))
            out["vit"].append(captured["vit"])
            out["qformer layer 1"].append(captured["q1"][:, :n_query].flatten(1))
            out["qformer out (projected)"].append(captured["proj"].flatten(1))
            out["T5 enc @ image (out)"].append(captured["lm_out"][:, :n_query].flatten(1))
            ids = [processor.tokenizer(it.example.prompt, add_special_tokens=False)["input_ids"] for it in batch]
            for who in ("a", "b"):
                objs = [getattr(it, who) or it.a for it in batch]  # a position question names one object
                where = torch.tensor([_token_index(i, processor.tokenizer, o, n_query) for i, o in zip(ids, objs)])
                for key, name in (("lm_in", "in"), ("lm1", "layer 1"), ("lm_out", "out")):
                    out[f"T5 enc @ {who} name ({name})"].append(captured[key][rows, where])
    finally:
        for hook in hooks:
            hook.remove()
    return {k: torch.cat(v) for k, v in out.items()}


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int, *, hidden: int = 0, steps: int = 300,
              weight_decay: float = 1e-2) -> torch.nn.Module:  # fmt: skip
    """A classifier (linear, or one hidden layer of ``hidden`` units) on standardised ``x``; full-batch AdamW."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(0)
    net = torch.nn.Linear(x.shape[1], classes) if not hidden else torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, classes))  # fmt: skip
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.02 if not hidden else 3e-3, weight_decay=weight_decay)
    z = (x - mean) / std
    for _ in range(steps if not hidden else 3 * steps):
        loss = F.cross_entropy(net(z), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    return torch.nn.Sequential(_Standardise(mean, std), net)


class _Standardise(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _patch_labels(items: list[RelationItem], grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, grid²) colour and shape label of each patch: the object whose centre lies in it, else "none"."""
    colour = torch.full((len(items), grid * grid), len(COLOURS))
    shape = torch.full((len(items), grid * grid), len(SHAPES))
    for i, item in enumerate(items):
        for obj in item.scene.objects:
            p = min(int(obj.y * grid), grid - 1) * grid + min(int(obj.x * grid), grid - 1)
            colour[i, p], shape[i, p] = list(COLOURS).index(obj.colour), SHAPES.index(obj.shape)
    return colour, shape


@torch.no_grad()
def vit_locate(fit_vit, fit_items, test_vit, test_items, who: str) -> float:
    """Cell accuracy of locating object ``who`` from ViT patch tokens: per-patch colour and shape probes
    (linear, with a "none" class), then the patch whose log-probabilities best match the named object."""
    grid = int((fit_vit.shape[1] - 1) ** 0.5)
    colour, shape = _patch_labels(fit_items, grid)
    tokens = fit_vit[:, 1:].reshape(-1, fit_vit.shape[-1])
    keep = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))[:40000]
    with torch.enable_grad():
        colour_head = fit_probe(tokens[keep], colour.flatten()[keep], len(COLOURS) + 1)
        shape_head = fit_probe(tokens[keep], shape.flatten()[keep], len(SHAPES) + 1)
    hits = []
    for item, vit in zip(test_items, test_vit):
        obj = getattr(item, who)
        score = (colour_head(vit[1:]).log_softmax(-1)[:, list(COLOURS).index(obj.colour)]
                 + shape_head(vit[1:]).log_softmax(-1)[:, SHAPES.index(obj.shape)])  # fmt: skip
        p = int(score.argmax())
        row, col = divmod(p, grid)
        cell = min(int((row + 0.5) / grid * GRID), GRID - 1) * GRID + min(int((col + 0.5) / grid * GRID), GRID - 1)
        hits.append(cell == cell_index(obj))
    return sum(hits) / len(hits)


def _cell_labels(items: list[RelationItem]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 9) colour and shape label of each grid cell's object, "none" for an empty cell."""
    colour = torch.full((len(items), GRID * GRID), len(COLOURS))
    shape = torch.full((len(items), GRID * GRID), len(SHAPES))
    for i, item in enumerate(items):
        for obj in item.scene.objects:
            colour[i, cell_index(obj)], shape[i, cell_index(obj)] = (
                list(COLOURS).index(obj.colour),
                SHAPES.index(obj.shape),
            )
    return colour, shape


def map_probe(fit_x, fit_items, test_x, test_items) -> tuple[float, dict[str, float]]:
    """Is the whole scene in ``x`` (N, D), whatever the question? Per grid cell, linear heads read the colour
    and the shape of the object there (or "none"). Returns the mean per-cell accuracy of (colour, shape)
    both right, and the cell accuracy of locating A and B as the cell whose heads best match the name."""
    colour, shape = _cell_labels(fit_items)
    test_colour, test_shape = _cell_labels(test_items)
    logp_colour, logp_shape, both = [], [], []
    for cell in range(GRID * GRID):
        colour_head = fit_probe(fit_x, colour[:, cell], len(COLOURS) + 1)
        shape_head = fit_probe(fit_x, shape[:, cell], len(SHAPES) + 1)
        with torch.no_grad():
            logp_colour.append(colour_head(test_x).log_softmax(-1))
            logp_shape.append(shape_head(test_x).log_softmax(-1))
        both.append(
            (logp_colour[-1].argmax(-1) == test_colour[:, cell]) & (logp_shape[-1].argmax(-1) == test_shape[:, cell])
        )
    logp_colour, logp_shape = torch.stack(logp_colour, 1), torch.stack(logp_shape, 1)  # (N, 9, classes)
    located = {}
    for who in ("a", "b") if test_items[0].b is not None else ("a",):
        hits = []
        for i, item in enumerate(test_items):
            obj = getattr(item, who)
            score = logp_colour[i, :, list(COLOURS).index(obj.colour)] + logp_shape[i, :, SHAPES.index(obj.shape)]
            hits.append(int(score.argmax()) == cell_index(obj))
        located[who] = sum(hits) / len(hits)
    located["empty cells"] = float(((test_colour == len(COLOURS)) & (test_shape == len(SHAPES))).float().mean())
    return float(torch.stack(both).float().mean()), located


def _accuracy(head, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head(x).argmax(-1) == y).float().mean())


def _predict(head, x):
    with torch.no_grad():
        return head(x).argmax(-1)


def _majority(y: torch.Tensor) -> float:
    return float(torch.bincount(y).max() / len(y))


def _answer_from_cells(cell_a: int, cell_b: int, item: RelationItem) -> str:
    """The answer a model would give that compared the two cells (None-safe for impossible pairs)."""
    (ra, ca), (rb, cb) = divmod(cell_a, GRID), divmod(cell_b, GRID)
    if item.form == "where":
        if ra == rb and ca != cb:
            return "left" if ca < cb else "right"
        if ca == cb and ra != rb:
            return "above" if ra < rb else "below"
        return "?"
    if item.rel in ("left", "right"):
        return "?" if ca == cb else "yes" if (ca < cb) == (item.rel == "left") else "no"
    return "?" if ra == rb else "yes" if (ra < rb) == (item.rel == "above") else "no"


def probes(model, processor, fit_items, test_items, fit_pos, test_pos, batch_size: int) -> None:
    fit, test = features(model, processor, fit_items, batch_size), features(model, processor, test_items, batch_size)
    fit_p, test_p = features(model, processor, fit_pos, batch_size), features(model, processor, test_pos, batch_size)
    ya = (torch.tensor([cell_index(i.a) for i in fit_items]), torch.tensor([cell_index(i.a) for i in test_items]))
    yb = (torch.tensor([cell_index(i.b) for i in fit_items]), torch.tensor([cell_index(i.b) for i in test_items]))
    yp = (torch.tensor([cell_index(i.a) for i in fit_pos]), torch.tensor([cell_index(i.a) for i in test_pos]))
    print(f"\n2a. Linear probes of grid cells (9 classes), fitted on val ({len(fit_items)} relation, {len(fit_pos)} "
          f"position questions), scored on test ({len(test_items)}, {len(test_pos)})")  # fmt: skip
    print(f"  {'features':<30} {'dims':>6} {'cell A':>8} {'cell B':>8} {'compare':>8} {'position Q':>11}")
    print(f"  {'majority class':<30} {'':>6} {_majority(ya[1]):>8.1%} {_majority(yb[1]):>8.1%} {'':>8} "
          f"{_majority(yp[1]):>11.1%}")  # fmt: skip
    print(f"  {'ViT tokens (locate by name)':<30} {test['vit'].shape[-1]:>6} "
          f"{vit_locate(fit['vit'], fit_items, test['vit'], test_items, 'a'):>8.1%} "
          f"{vit_locate(fit['vit'], fit_items, test['vit'], test_items, 'b'):>8.1%} {'':>8} "
          f"{vit_locate(fit_p['vit'], fit_pos, test_p['vit'], test_pos, 'a'):>11.1%}")  # fmt: skip
    truths = [item.example.answers[0] for item in test_items]
    for key in [k for k in fit if k != "vit" and " @ b " not in k]:
        key_b = key.replace(" @ a ", " @ b ")
        head_a = fit_probe(fit[key], ya[0], GRID * GRID)
        head_b = fit_probe(fit[key_b], yb[0], GRID * GRID)
        head_p = fit_probe(fit_p[key], yp[0], GRID * GRID)
        pred_a, pred_b = _predict(head_a, test[key]), _predict(head_b, test[key_b])
        compare = [_answer_from_cells(int(pa), int(pb), it) == t
                   for pa, pb, it, t in zip(pred_a, pred_b, test_items, truths)]  # fmt: skip
        label = key.replace(" @ a ", " @ A/B ")
        print(f"  {label:<30} {test[key].shape[-1]:>6} {_accuracy(head_a, test[key], ya[1]):>8.1%} "
              f"{_accuracy(head_b, test[key_b], yb[1]):>8.1%} {sum(compare) / len(compare):>8.1%} "
              f"{_accuracy(head_p, test_p[key], yp[1]):>11.1%}")  # fmt: skip

    print(
        "\n2b. The whole scene map in the features? Per grid cell, linear heads for the colour and the shape of its "
        "object (or none); then A and B located as the cell whose heads best match their names"
    )
    print(f"  {'features':<30} {'questions':<10} {'cell id':>10} {'(all none)':>10} {'locate A':>9} {'locate B':>9}")
    for key in ("qformer out (projected)", "T5 enc @ image (out)"):
        for kind, (fx, fi, tx, ti) in (("relation", (fit[key], fit_items, test[key], test_items)),
                                       ("position", (fit_p[key], fit_pos, test_p[key], test_pos))):  # fmt: skip
            cells, located = map_probe(fx, fi, tx, ti)
            b = f"{located['b']:>9.1%}" if kind == "relation" else f"{'':>9}"
            print(f"  {key:<30} {kind:<10} {cells:>10.1%} {located['empty cells']:>10.1%} {located['a']:>9.1%} {b}")

    where_fit = [i for i, it in enumerate(fit_items) if it.form == "where"]
    where_test = [i for i, it in enumerate(test_items) if it.form == "where"]
    yd = (torch.tensor([DIRECTIONS.index(fit_items[i].example.answers[0]) for i in where_fit]),
          torch.tensor([DIRECTIONS.index(test_items[i].example.answers[0]) for i in where_test]))  # fmt: skip
    print(f"\n2c. The answer of 'where' questions (4 directions) read directly, fitted on {len(where_fit)}, "
          f"scored on {len(where_test)}; majority {_majority(yd[1]):.1%}")  # fmt: skip
    print(f"  {'features':<40} {'linear':>8} {'MLP-256':>8}")
    sets = {
        "qformer out (projected)": lambda f: f["qformer out (projected)"],
        "T5 enc @ image (out)": lambda f: f["T5 enc @ image (out)"],
        "T5 enc @ A name + B name (out)": lambda f: torch.cat([f["T5 enc @ a name (out)"], f["T5 enc @ b name (out)"]], 1),
    }  # fmt: skip
    for name, get in sets.items():
        x_fit, x_test = get(fit)[where_fit], get(test)[where_test]
        linear = _accuracy(fit_probe(x_fit, yd[0], 4), x_test, yd[1])
        mlp = _accuracy(fit_probe(x_fit, yd[0], 4, hidden=256), x_test, yd[1])
        print(f"  {name:<40} {linear:>8.1%} {mlp:>8.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="'embedded' or a model folder")
    parser.add_argument("--split", default="test", help="split of the behaviour tables and of the probes' scoring")
    parser.add_argument("--seed", type=int, default=31337, help="world seed of --split (31337: seed-unseen)")
    parser.add_argument("--scenes", type=int, default=800, help="scenes of --split (behaviour, probe scoring)")
    parser.add_argument("--fit-scenes", type=int, default=3000, help="val scenes (world seed 0) the probes fit on")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-probes", action="store_true", help="behaviour tables only")
    parser.add_argument("--max-new-tokens", type=int, default=6, help="answer tokens generated (explore eval: 6)")
    parser.add_argument(
        "--last-word",
        action="store_true",
        help="score the answer's last word (a model trained with stepwise relation targets)",
    )
    args = parser.parse_args()
    DECODING.update(max_new_tokens=args.max_new_tokens, last_word=args.last_word)
    torch.manual_seed(0)
    model, processor = load_model(args.model)
    resolution = processor.image_processor.size["height"]
    test_items = relation_items(args.split, args.scenes, args.seed, resolution)
    print(f"{args.model}: relation questions of {args.split} (world seed {args.seed}), {len(test_items)} "
          f"from {args.scenes} scenes")  # fmt: skip
    behaviour(model, processor, test_items, args.batch_size)
    if args.skip_probes:
        return
    fit_items = relation_items("val", args.fit_scenes, 0, resolution)
    fit_pos = position_items("val", args.fit_scenes // 2, 0, resolution)
    test_pos = position_items(args.split, args.scenes // 2, args.seed, resolution)
    probes(model, processor, fit_items, test_items, fit_pos, test_pos, args.batch_size)


if __name__ == "__main__":
    main()
