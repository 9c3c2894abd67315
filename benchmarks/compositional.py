"""Experiments around the compositional model (the shipped weights: ``train --preset shapes-compositional``).

    python benchmarks/compositional.py train OUT_DIR --holdout triangle+purple three+square [--steps N]
    python benchmarks/compositional.py train OUT_DIR --p-omit 0.6 --shipped-stages --steps 8000
    python benchmarks/compositional.py train OUT_DIR --p-omit colour=0.3,size=0.6,background=0.6
    python benchmarks/compositional.py train OUT_DIR --shipped-stages --text-layers 1  # a text refiner
    python benchmarks/compositional.py train OUT_DIR --init shipped --text-layers 1 --steps 6000 --lr 3e-4
    python benchmarks/compositional.py phrase-encoder OUT_DIR [--steps 600 --lr 1e-3]  # tokens that bind
    python benchmarks/compositional.py heldout RUN_DIR|shipped JSON   # held-out combinations vs seen ones
    python benchmarks/compositional.py padding RUN_DIR|shipped [--unmasked]  # attention share on <pad> keys
    python benchmarks/compositional.py failures RUN_DIR|shipped JSON  # what the benchmark's misses get wrong
    python benchmarks/compositional.py wording RUN_DIR|shipped JSON  # object count against prompt length
    python benchmarks/compositional.py binding RUN_DIR|shipped JSON  # does a noun's token know its colour?
    python benchmarks/compositional.py attention RUN_DIR|shipped JSON  # where each object's pixels attend

``train``: the shipped preset with some combinations never drawn by any stage (text, VAE, U-Net).
``phrase-encoder``: the shipped tiny CLIP fine-tuned with ``text.phrase_loss`` beside its contrastive
loss (``CLIPConfig.phrase_weight`` 1), into OUT_DIR with the shipped judge, VAE and U-Net beside it, so
that ``train --init OUT_DIR`` fine-tunes the U-Net on its tokens; prints retrieval and ``binding_probe``.
``heldout``: 16 seeds per prompt; an image counts when the judge finds everything the prompt names.
``padding``: ``metrics.padding_attention_share`` over 4 seeds; with ``--unmasked`` the model sees pad
rows as the encoder outputs them and no mask (the behaviour before masking).
``failures``: per category, the share of the benchmark's images (4 seeds per prompt) that get each
attribute the prompts name wrong (``score_scene``); one image can miss several.
``wording``: one object (or two) asked for in more or fewer words ("a red circle", "a large red circle
at the center"), every colour and shape, 4 seeds each: the share of images with the right object count.
``binding``: ``metrics.binding_probe``, linear probes that read from a shape word's token its own colour
and the other object's (and from a colour word's token its shape), before and after the U-Net's text
refiner if it has one.
``attention``: two-colour prompts (ATTENTION_PROMPTS), 8 seeds each; in each finished image, the cells
whose pixels show a named colour (within 0.15 of its RGB) form that object's region; the share of those
cells' cross-attention (every step, level and head; the prompt's branch) on the object's own colour and
shape words and on the other object's. Own = other means attention does not route words to objects.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from minidiff.checkpoint import pick_device
from minidiff.compositional import COMPOSITIONAL_SEEDS, compositional_prompts
from minidiff.judge import load_judge, predict_scenes, score_scene, shows_prompt
from minidiff.metrics import binding_probe, generate, padding_attention_share
from minidiff.pipeline import WEIGHTS_DIR, load_pipeline
from minidiff.runs import copy_frozen_stages, make_source, train_config, train_preset
from minidiff.shapes import COLOURS, SHAPES, ShapesConfig, make_shapes, parse_caption
from minidiff.text import (
    SHIPPED_WEIGHTS,
    clip_stage,
    encode_prompts,
    load_clip,
    retrieval_accuracy,
    save_text_encoder,
)
from minidiff.training import fit

HELD_OUT = {"held_out": ["a purple triangle", "a small purple triangle", "a large purple triangle",
                         "three squares", "three small squares", "three red squares"],
            "seen": ["a purple circle", "a green triangle", "a purple square", "two squares", "four squares",
                     "three triangles"]}
HELD_OUT_SEEDS = 16
ATTENTION_PROMPTS = ("a red circle and a blue square", "a blue square and a red circle",
                     "a green triangle and a yellow diamond", "a purple circle and an orange square",
                     "a yellow circle to the left of a blue square")
TWO_OBJECT_PROMPT = "a small red circle and a large blue square on a white background"
WORDINGS = ("a {c} {s}", "a {c} {s} on a gray background", "a large {c} {s}", "a large {c} {s} at the center",
            "two {c} {s}s")


def train(out: Path, holdout: tuple[tuple[str, ...], ...], minutes: float | None, steps: int | None,
          p_omit: float | dict[str, float] | None = None, shipped_stages: bool = False,
          text_layers: int | None = None, **fields: object) -> dict:
    """``train --preset shapes-compositional [--steps N]`` with the combinations ``holdout`` never drawn by
    any stage, captions leaving out each word with probability ``p_omit`` (default: the preset's);
    ``shipped_stages``: reuse the shipped judge, text encoder and VAE, so only the U-Net trains;
    ``text_layers``: the U-Net's text refiner blocks (``UNetConfig.text_layers``; default: the preset's);
    ``fields``: other TrainConfig fields (``init``, ``lr``, ``seed``) where they are not None."""
    config = train_config("shapes-compositional")
    options = {**config.data_options, "holdout": holdout}
    options.update({} if p_omit is None else {"p_omit": p_omit})
    unet = {**config.unet_overrides, **({} if text_layers is None else {"text_layers": text_layers})}
    config = dataclasses.replace(config, data_options=options, steps=steps or config.steps,
                                 unet_overrides=unet, **{k: v for k, v in fields.items() if v is not None})
    if shipped_stages:
        out.mkdir(parents=True, exist_ok=True)
        copy_frozen_stages(WEIGHTS_DIR, out, ["judge", "text_encoder", "vae"])
    start = time.perf_counter()
    timings = train_preset(config, out, device="cpu", progress=False, max_minutes=minutes)
    timings["total_s"] = round(time.perf_counter() - start, 1)
    (out / "timings.json").write_text(json.dumps(timings, indent=1, default=str))
    return timings


def phrase_encoder(out: Path, steps: int, lr: float) -> dict:
    """Fine-tune the shipped TinyCLIP with the phrase loss (batch 128, seed 0); save it into ``out`` beside
    copies of the shipped judge, VAE and U-Net; its held-out retrieval and binding probe."""
    shipped, source = load_clip(SHIPPED_WEIGHTS), make_source(train_config("shapes-compositional"))
    config = dataclasses.replace(shipped.config, phrase_weight=1.0)
    stage = clip_stage(config, source, steps, init=shipped, lr=lr)
    start = time.perf_counter()
    fit(stage, progress=False, device=pick_device("cpu"))
    seconds = time.perf_counter() - start
    clip = stage.model.eval()
    out.mkdir(parents=True, exist_ok=True)
    save_text_encoder(clip, clip.tokenizer, out / "text_encoder")
    copy_frozen_stages(WEIGHTS_DIR, out, ["judge", "vae", "unet"])
    pipe = SimpleNamespace(encode=lambda p: encode_prompts(clip.text_encoder, clip.tokenizer, list(p)),
                           unet=None)  # all that binding_probe reads of a pipeline
    return {"steps": steps, "lr": lr, "seconds": round(seconds, 1),
            "retrieval": retrieval_accuracy(clip, *source.held_out(1000), source=source),
            "binding_probe": binding_probe(pipe)}


def held_out(run: str | None) -> dict[str, float]:
    """Share of images right per prompt of HELD_OUT, and the mean of each group."""
    pipe, judge, result = load_pipeline(run, device="cpu"), load_judge(), {}
    for group, prompts in HELD_OUT.items():
        for prompt in prompts:
            images = generate(pipe, [prompt] * HELD_OUT_SEEDS, list(range(HELD_OUT_SEEDS)), steps=20,
                              guidance_scale=3.0)
            got = predict_scenes(judge, images)
            right = sum(shows_prompt(g, prompt) for g in got)
            result[prompt] = right / HELD_OUT_SEEDS
        result[group] = sum(result[p] for p in prompts) / len(prompts)
    return result


def failures(run: str | None) -> dict[str, dict[str, float]]:
    """Per category: the share of images right, and per attribute the share of images that get it wrong."""
    pipe, judge, result = load_pipeline(run, device="cpu"), load_judge(), {}
    for category, prompts in compositional_prompts().items():
        asked = [p for p in prompts for _ in range(COMPOSITIONAL_SEEDS)]
        seeds = [k for _ in prompts for k in range(COMPOSITIONAL_SEEDS)]
        got = predict_scenes(judge, generate(pipe, asked, seeds, steps=20, guidance_scale=3.0))
        scores = [score_scene(parse_caption(p), g) for p, g in zip(asked, got)]
        wrong = {a: sum(s[a][0] < s[a][1] for s in scores) / len(scores) for a in scores[0]}
        extra = [len(g.objects) - len(parse_caption(p).objects) for p, g in zip(asked, got)]
        result[category] = {"right": sum(shows_prompt(g, p) for p, g in zip(asked, got)) / len(asked),
                            **{f"{a} wrong": v for a, v in wrong.items() if any(s[a][1] for s in scores)},
                            "too many": sum(e > 0 for e in extra) / len(extra),
                            "too few": sum(e < 0 for e in extra) / len(extra)}
    return result


def bare_caption_share(data_options: dict, n: int = 20000) -> float:
    """Share of ``n`` training captions of a shapes world that name one object and nothing else than
    its shape and colour (no size, place or background), like the benchmark's short prompts."""
    _, captions, _ = make_shapes(n, ShapesConfig(**{"max_objects": 4, **data_options}), seed=0)
    said = [parse_caption(c) for c in captions]
    return sum(len(d.objects) == 1 and d.background is None and d.objects[0].size is None
               and d.objects[0].position is None for d in said) / n


def wording(run: str | None) -> dict[str, dict[str, float]]:
    """Per wording of WORDINGS: the share of images with as many objects as asked, and with more; and
    how often the run's training captions were as bare as the first wording (``bare_caption_share``)."""
    pipe, judge, result = load_pipeline(run, device="cpu"), load_judge(), {}
    options = json.loads((Path(run or WEIGHTS_DIR) / "unet.json").read_text())["extra"]["train_config"]
    result["bare training captions"] = {"share": bare_caption_share(options["data_options"])}
    for template in WORDINGS:
        prompts = [template.format(c=c, s=s) for c in COLOURS for s in SHAPES]
        asked = [p for p in prompts for _ in range(COMPOSITIONAL_SEEDS)]
        seeds = [k for _ in prompts for k in range(COMPOSITIONAL_SEEDS)]
        got = predict_scenes(judge, generate(pipe, asked, seeds, steps=20, guidance_scale=3.0))
        extra = [len(g.objects) - len(parse_caption(p).objects) for p, g in zip(asked, got)]
        result[template] = {"right count": sum(e == 0 for e in extra) / len(extra),
                            "too many": sum(e > 0 for e in extra) / len(extra), "images": len(extra)}
    return result


def padding(run: str | None, unmasked: bool, prompt: str = TWO_OBJECT_PROMPT) -> float:
    """Mean share of cross-attention on <pad> keys over 4 seeds."""
    pipe = load_pipeline(run, device="cpu")
    return sum(padding_attention_share(pipe, prompt, seed=s, unmasked=unmasked) for s in range(4)) / 4


@torch.no_grad()
def attention(run: str | None, seeds: int = 8) -> dict[str, float]:
    """Mean cross-attention share of each colour region on its own / the other object's words."""
    import torch.nn.functional as F

    from minidiff.shapes import RGB

    pipe, sums, regions = load_pipeline(run, device="cpu"), dict.fromkeys(
        ("own colour", "other colour", "own shape", "other shape", "uniform share"), 0.0), 0
    for prompt in ATTENTION_PROMPTS:
        words = prompt.split()  # word i is token i + 1
        colours = [w for w in words if w in RGB]
        shapes = [words[words.index(c) + 1] for c in colours]
        token = {w: i + 1 for i, w in enumerate(words)}
        for seed in range(seeds):
            with pipe.unet.record_attention() as records:
                image = (pipe([prompt], seeds=seed)[0] + 1) / 2  # (3, H, W) in [0, 1]
            side = max(int(w.shape[-2] ** 0.5) for _, w in records)  # the finest attention grid
            maps = []
            for _, w in records:  # w (2, heads, N, L): [negative prompt, prompt]; level maps up to side
                s = int(w.shape[-2] ** 0.5)
                grid = w[-1].mean(0).reshape(s, s, -1)  # (s, s, L)
                maps.append(grid.repeat_interleave(side // s, 0).repeat_interleave(side // s, 1))
            att = torch.stack(maps).mean(0).reshape(side * side, -1)  # (cells, L)
            for k, colour in enumerate(colours):
                near = (image - torch.tensor(RGB[colour]).view(3, 1, 1)).abs().amax(0) < 0.15  # (H, W)
                cells = F.adaptive_avg_pool2d(near[None, None].float(), side).flatten() > 0.5  # (cells,)
                if not cells.any():
                    continue
                a = att[cells].mean(0)  # (L,)
                sums["own colour"] += a[token[colour]].item()
                sums["other colour"] += a[token[colours[1 - k]]].item()
                sums["own shape"] += a[token[shapes[k]]].item()
                sums["other shape"] += a[token[shapes[1 - k]]].item()
                sums["uniform share"] += 1 / (len(words) + 2)  # each real token's share if none is preferred
                regions += 1
    return {**{k: v / regions for k, v in sums.items()}, "regions": regions}


def omission(text: str) -> float | dict[str, float]:
    """``--p-omit``: one rate ("0.6") or one per attribute ("colour=0.3,size=0.6,background=0.6")."""
    if "=" not in text:
        return float(text)
    return {name: float(rate) for name, rate in (item.split("=") for item in text.split(","))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("train", "phrase-encoder", "heldout", "padding", "failures",
                                            "wording", "binding", "attention"))
    parser.add_argument("path")
    parser.add_argument("json", nargs="?")
    parser.add_argument("--minutes", type=float, default=None, help="train: bound the U-Net stage")
    parser.add_argument("--steps", type=int, default=None, help="train: U-Net steps (default: the preset's)")
    parser.add_argument("--holdout", nargs="*", default=[], help="combinations as words joined by +")
    parser.add_argument("--unmasked", action="store_true")
    parser.add_argument("--p-omit", type=omission, default=None,
                        help="train: caption word-omission rate, or colour=R,size=R,background=R")
    parser.add_argument("--shipped-stages", action="store_true", help="train: only the U-Net trains")
    parser.add_argument("--text-layers", type=int, default=None, help="train: U-Net text refiner blocks")
    parser.add_argument("--init", default=None, help="train: fine-tune from this run's U-Net (or shipped)")
    parser.add_argument("--lr", type=float, default=None, help="train: the U-Net's peak learning rate")
    parser.add_argument("--seed", type=int, default=None, help="train: the run's seed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = None if args.path == "shipped" else args.path
    if args.command == "train":
        result = train(Path(args.path), tuple(tuple(c.split("+")) for c in args.holdout), args.minutes,
                       args.steps, args.p_omit, args.shipped_stages, args.text_layers, init=args.init,
                       lr=args.lr, seed=args.seed)
    elif args.command == "phrase-encoder":
        result = phrase_encoder(Path(args.path), args.steps or 600, args.lr or 1e-3)
    elif args.command == "heldout":
        result = held_out(run)
    elif args.command == "failures":
        result = failures(run)
    elif args.command == "wording":
        result = wording(run)
    elif args.command == "binding":
        result = binding_probe(load_pipeline(run, device="cpu"))
    elif args.command == "attention":
        result = attention(run)
    else:
        result = {"padding_share": padding(run, args.unmasked), "unmasked": args.unmasked,
                  "prompt": TWO_OBJECT_PROMPT}
    print(json.dumps(result, indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
