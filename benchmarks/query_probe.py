"""Where does the compositional split lose an object's shape: in the Q-Former's query outputs or in the LM?

Issue 14's open problem: on held-out colour-shape pairs (explore.world.HELD_OUT_PAIRS, never in training) the
embedded model answers "what shape is the red object?" right about 55% of the time, while a linear probe reads the
shape of those objects from the frozen ViT at 87% (``benchmarks/vision_probe.py --held-out``). This probe asks the
same of the next two stages. For one-object scenes it asks the model "What shape is the <colour> object?" (the
question the VQA split asks) and reads

- ``qformer``: the Q-Former's query outputs (num_query_tokens × hidden, flattened), the instruction-aware summary
  the LM receives (the projection after it is linear, so it adds nothing a linear probe could not do);
- ``lm_encoder``: the T5 encoder's last hidden states at the query positions (flattened);

and fits a linear probe (``vision_probe.probe``) for the object's shape and colour on train-split objects, scoring it
on the held-out pairs' objects of compositional scenes, each drawn alone. The model's own answer to the question is
scored beside. If a stage reads the held-out shapes well and the answer does not, the loss is after that stage.

    python benchmarks/query_probe.py --model embedded --scenes 1500
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch
from tqdm.auto import tqdm
from vision_probe import probe  # benchmarks/ is the script's folder

from explore.data.example import Example
from explore.eval.world import normalize_answer
from explore.models.build import build_model
from explore.models.collate import generation_inputs, to_model
from explore.models.loading import load_model
from explore.world import COLOURS, HELD_OUT_PAIRS, SHAPES
from explore.world.render import render
from explore.world.splits import split_scene


def one_object_scenes(split: str, n: int, held_out_only: bool):
    """Every object of ``n`` scenes of ``split`` as a scene of its own (held-out pairs only, if asked)."""
    scenes = []
    for i in range(n):
        scene = split_scene(split, i)
        for obj in scene.objects:
            if held_out_only and (obj.colour, obj.shape) not in HELD_OUT_PAIRS:
                continue
            scenes.append(replace(scene, objects=(obj,)))
    return scenes


@torch.no_grad()
def features(model, processor, scenes, question, batch_size=64):
    """(query outputs (N, Q·H), LM encoder states at the query positions (N, Q·D), the model's answers), from one
    greedy ``generate`` per batch: a hook keeps the Q-Former's output as transformers' ``get_image_features`` makes it."""
    image_id, n_query = model.config.image_token_index, model.config.num_query_tokens
    captured = {}
    hook = model.qformer.register_forward_hook(lambda module, args, output: captured.update(q=output.last_hidden_state))
    queries, encoded, answers = [], [], []
    try:
        for start in tqdm(range(0, len(scenes), batch_size), desc="query features", leave=False):
            batch = scenes[start : start + batch_size]
            examples = [Example(id=str(start + i), task="vqa", image=render(s),
                                prompt=question.format(colour=s.objects[0].colour)) for i, s in enumerate(batch)]  # fmt: skip
            inputs = to_model(generation_inputs(examples, processor, max_length=512, decoder_only=False), model)
            generated = model.generate(**inputs, max_new_tokens=6, do_sample=False, return_dict_in_generate=True,
                                       output_hidden_states=True)  # fmt: skip
            queries.append(captured["q"][:, :n_query].flatten(1))
            states = generated.encoder_hidden_states[-1]
            encoded.append(states[inputs["input_ids"] == image_id].reshape(len(batch), -1))
            texts = processor.tokenizer.batch_decode(generated.sequences, skip_special_tokens=True)
            answers += [t.strip() for t in texts]
    finally:
        hook.remove()
    return torch.cat(queries), torch.cat(encoded), answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="'embedded' or a model folder")
    parser.add_argument("--scenes", type=int, default=1500, help="train scenes to fit on, compositional to score")
    parser.add_argument("--question", default="What shape is the {colour} object?",
                        help="the question asked of each one-object scene ({colour}: the object's colour); e.g. "
                             "'What shape is the object?' leaves the colour out of the Q-Former's text")  # fmt: skip
    parser.add_argument("--random-qformer", metavar="PRESET", default=None,
                        help="control: replace the Q-Former and its query tokens by a randomly initialised PRESET's "
                             "(e.g. shapes-small-judge); the ViT stays trained")  # fmt: skip
    args = parser.parse_args()
    torch.manual_seed(0)
    model, processor = load_model(args.model)
    model.eval()
    if args.random_qformer:
        fresh = build_model(args.random_qformer, processor.tokenizer, seed=0)
        model.qformer.load_state_dict(fresh.qformer.state_dict())
        model.query_tokens.data.copy_(fresh.query_tokens.data)
    fit = one_object_scenes("train", args.scenes, held_out_only=False)
    held = one_object_scenes("compositional", args.scenes, held_out_only=True)
    q, e, answers = features(model, processor, fit + held, args.question)
    labels = {
        "shape": torch.tensor([SHAPES.index(s.objects[0].shape) for s in fit + held]),
        "colour": torch.tensor([list(COLOURS).index(s.objects[0].colour) for s in fit + held]),
    }
    n = len(fit)
    print(f"{args.model}: linear probes fitted on {n} train-split objects, scored on {len(held)} held-out-pair objects "
          f"(each alone; question {args.question!r})")  # fmt: skip
    # The control: the same probe fitted on 80% of the train objects and scored on the other 20% (seen pairs).
    seen = int(0.8 * n)
    print(f"  {'stage':<11} {'held-out shape':>14} {'held-out colour':>15} {'seen shape':>11} {'seen colour':>12}")
    for name, x in (("qformer", q), ("lm_encoder", e)):
        accs = [probe(x, labels["shape"], len(SHAPES), n=n), probe(x, labels["colour"], len(COLOURS), n=n),
                probe(x[:n], labels["shape"][:n], len(SHAPES), n=seen),
                probe(x[:n], labels["colour"][:n], len(COLOURS), n=seen)]  # fmt: skip
        print(f"  {name:<11} {accs[0]:>14.1%} {accs[1]:>15.1%} {accs[2]:>11.1%} {accs[3]:>12.1%}")
    for name, part, scenes in (("train", answers[:n], fit), ("held-out", answers[n:], held)):
        right = sum(normalize_answer(a) == s.objects[0].shape for a, s in zip(part, scenes))
        print(f"  answer on {name:<9} {right / len(scenes):6.1%}  ({right} of {len(scenes)})")
    wrong = [(s.objects[0].colour, s.objects[0].shape, a) for a, s in zip(answers[n:], held)
             if normalize_answer(a) != s.objects[0].shape]  # fmt: skip
    print("  held-out mistakes (colour, shape, answer), first 12:", wrong[:12])


if __name__ == "__main__":
    main()
