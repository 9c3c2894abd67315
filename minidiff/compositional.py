"""The compositional benchmark: GenEval's six categories of prompts (Ghosh et al. 2023), on shapes.

``compositional_prompts`` is the fixed prompt set: single objects, two objects, counts, colours,
relative positions and attribute binding. An image counts only when the judge finds everything its
prompt names right, the object count included (``judge.shows_prompt``). ``realise`` draws a scene
that shows exactly a prompt, so ``real_renders`` is the perfect model: the judge's ceiling.
``evaluate_compositional_cli`` is what ``python -m minidiff eval --suite compositional`` prints.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from minidiff.judge import Judge, load_judge, predict_scenes, shows_prompt
from minidiff.metrics import PROMPT_STRIDE, check_images, format_table, generate
from minidiff.shapes import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    FIELDS,
    MAX_TRIES,
    NUMBERS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    Object,
    Scene,
    breaks_rules,
    caption,
    parse_caption,
    relation_holds,
    render,
)

CATEGORIES = ("single_object", "two_objects", "counting", "colours", "position", "attribute_binding")
COMPOSITIONAL_SEEDS = 4  # images per prompt; CATEGORIES and this as GenEval (Ghosh et al. 2023) has them
COMPOSITIONAL_PROMPT_SEED = 2_000_029  # fixes the position and binding prompts
PAIRED_PROMPTS = 24  # prompts of the position and attribute_binding categories
JUDGE_IMAGES_PER_CATEGORY = 500  # real renders per category for the judge's ceiling


def compositional_prompts() -> dict[str, list[str]]:
    """The fixed prompt set of the compositional benchmark, per GenEval category, in caption template 0:
    "a circle", "a small circle" / "a circle and a square" / "three squares" / "a red circle" /
    "a red circle to the left of a blue square" / "a red circle and a blue square" (colours must not swap)."""
    def say(*objects: Object, relation: str | None = None) -> str:
        return caption(Scene(None, objects, relation), 0)

    rng, pairs = random.Random(COMPOSITIONAL_PROMPT_SEED), []
    while len(pairs) < 2 * PAIRED_PROMPTS:  # distinct (shapes, colours) pairs
        pair = (tuple(rng.sample(SHAPES, 2)), tuple(rng.sample(COLOURS, 2)))
        pairs += [pair] if pair not in pairs else []
    return {
        "single_object": [say(Object(s, size=z)) for z in (None, *SIZES) for s in SHAPES],
        "two_objects": [say(Object(a), Object(b)) for a, b in itertools.permutations(SHAPES, 2)],
        "counting": [say(*[Object(s)] * n) for n in range(2, len(NUMBERS) + 1) for s in SHAPES],
        "colours": [say(Object(s, c)) for c in COLOURS for s in SHAPES],
        "position": [say(Object(a, x), Object(b, y), relation=RELATIONS[i % len(RELATIONS)])
                     for i, ((a, b), (x, y)) in enumerate(pairs[:PAIRED_PROMPTS])],
        "attribute_binding": [say(Object(a, x), Object(b, y)) for (a, b), (x, y) in pairs[PAIRED_PROMPTS:]],
    }


def realise(want: Scene, generator: torch.Generator) -> Scene:
    """A complete valid scene that shows exactly what ``want`` (a parsed prompt) names; what it leaves out
    is drawn uniformly, once for identical objects. Its renders are the benchmark's perfect "model"."""
    rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
    colours = {o.colour for o in want.objects}
    for _ in range(MAX_TRIES):
        background = want.background or rng.choice([b for b in BACKGROUNDS if b not in colours])
        taken = {o.position for o in want.objects}
        free = rng.sample([p for p in POSITIONS if p not in taken], len(want.objects))
        fill = {o: [getattr(o, f) or rng.choice(ATTRIBUTES[f]) for f in FIELDS[:3]] for o in want.objects}
        objects = [Object(*fill[o], o.position or free.pop()) for o in want.objects]  # identical stay alike
        related = want.relation is None or relation_holds(want.relation, *(o.position for o in objects))
        if related and not breaks_rules(objects, background):
            return Scene(background, tuple(objects))
    raise ValueError(f"no valid scene shows {want}; objects may not fit in the image together")


def real_renders(prompts: Sequence[str], seeds: Sequence[int], resolution: int = 32) -> Tensor:
    """The perfect model: images (N, 3, H, W) of ``realise``d scenes, one per (prompt, seed)."""
    gens = (torch.Generator().manual_seed(seed * PROMPT_STRIDE + i) for i, seed in enumerate(seeds))
    return render([realise(parse_caption(p), g) for p, g in zip(prompts, gens)], resolution)


def compositional_benchmark(make_images: Callable[[list[str], list[int]], Tensor],
                            judge: Judge | None = None, seeds: int = COMPOSITIONAL_SEEDS) -> dict[str, Any]:
    """GenEval's protocol on shapes (Ghosh et al. 2023): ``seeds`` images per prompt of
    ``compositional_prompts``; an image counts only when the judge finds everything its prompt names right,
    the object count included. ``make_images(prompts, seeds)`` -> (N, 3, H, W) is the model under test.
    Returns {"categories": {category: share of images right}, "overall": mean over the six}."""
    judge = judge if judge is not None else load_judge()
    scores = {}
    for category, prompts in compositional_prompts().items():
        asked = [p for p in prompts for _ in range(seeds)]
        images = make_images(asked, [k for _ in prompts for k in range(seeds)])  # (N, 3, H, W)
        check_images(images, "make_images(...)")
        got = predict_scenes(judge, images.float().cpu())
        right = [shows_prompt(g, p) for p, g in zip(asked, got)]
        scores[category] = sum(right) / len(right)
    return {"categories": scores, "overall": sum(scores.values()) / len(scores)}


def evaluate_compositional_cli(weights: str | Path | None = None, steps: int = 20,
                               guidance_scale: float = 3.0, sampler: str = "dpmpp_2m", device: str = "auto",
                               json_path: str | None = None) -> dict[str, Any]:
    """``eval --suite compositional``: the judge on real renders (>= 500 per category: the ceiling), then
    the pipeline on the benchmark; prints both as a table, writes the pipeline's result to ``json_path``."""
    from minidiff.pipeline import load_pipeline

    judge = load_judge()
    n_prompts = {c: len(p) for c, p in compositional_prompts().items()}
    seeds = math.ceil(JUDGE_IMAGES_PER_CATEGORY / min(n_prompts.values()))
    ceiling = compositional_benchmark(real_renders, judge, seeds=seeds)
    pipe = load_pipeline(weights, device=device)
    start = time.perf_counter()
    result = compositional_benchmark(lambda p, s: generate(pipe, p, s, steps=steps, sampler=sampler,
                                                           guidance_scale=guidance_scale), judge)
    seconds = time.perf_counter() - start
    rows = [{"category": c, "prompts": n_prompts[c], "images": n_prompts[c] * COMPOSITIONAL_SEEDS,
             "model": result["categories"][c], "real renders": ceiling["categories"][c]} for c in CATEGORIES]
    rows.append({"category": "overall", "model": result["overall"], "real renders": ceiling["overall"]})
    print(f"\ncompositional benchmark of {weights or 'shipped'} ({steps} {sampler} steps, guidance "
          f"{guidance_scale}, {seconds:.1f} s on {pipe.device})\nan image counts only when everything its "
          "prompt names is right, the object count included")
    print(format_table(rows, ["category", "prompts", "images", "model", "real renders"]))
    result["settings"] = {"weights": str(weights or "shipped"), "steps": steps, "sampler": sampler,
                          "guidance_scale": guidance_scale, "seconds": round(seconds, 2)}
    result["judge_real_renders"] = ceiling
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
    return result
