"""The compositional model: how its weights were made, and the experiments around it (issue 10).

    python benchmarks/compositional.py text OUT_DIR [--steps 150]        # text encoder for the richer world
    python benchmarks/compositional.py train OUT_DIR [--steps 2400] [--minutes 45] [--holdout triangle+purple ...]
    python benchmarks/compositional.py heldout RUN_DIR JSON             # held-out combinations vs seen ones
    python benchmarks/compositional.py padding RUN_DIR|shipped [--unmasked]  # attention share on <pad> keys

``text``: the shipped tiny CLIP (one- and two-object captions) gets rows for the new words (counts,
plurals, relations; N(0, 0.02) like every embedding), then 150 CLIP steps on the richer world (batch 96,
lr 1e-3, warm-up 20, cosine). ``train``: ``training.train_preset`` on 1-4 object scenes with the
shipped VAE and that text encoder copied into OUT_DIR first, U-Net ``cpu-latent`` with cross-attention
at 8x8 and 4x4 and masked padding. ``heldout``: 16 seeds per prompt; an image counts when the judge finds
everything the prompt names. ``padding``: ``metrics.padding_attention_share`` over 4 seeds; with
``--unmasked`` the model sees pad rows as the encoder outputs them and no mask (the behaviour before).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import torch

from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.judge import all_right, load_judge, predict_scenes, score_scene
from minidiff.metrics import generate, padding_attention_share
from minidiff.pipeline import WEIGHTS_DIR, load_pipeline
from minidiff.shapes import ShapesConfig, make_shapes, parse_caption, vocabulary
from minidiff.text import (LEARNING_RATE, PAD_ID, WEIGHT_DECAY, TinyCLIP, Tokenizer, clip_loss, load_clip,
                           retrieval_accuracy, same_scene, save_text_encoder)
from minidiff.training import train_preset
from minidiff.runs import train_config

TEXT_SEED = 7  # CLIP fine-tuning batches use seeds TEXT_SEED * 1_000_003 + step
HELD_OUT = {"held_out": ["a purple triangle", "a small purple triangle", "a large purple triangle", "three squares",
                         "three small squares", "three red squares"],
            "seen": ["a purple circle", "a green triangle", "a purple square", "two squares", "four squares",
                     "three triangles"]}
HELD_OUT_SEEDS = 16
TWO_OBJECT_PROMPT = "a small red circle and a large blue square on a white background"


def extend_text_encoder(out: Path, steps: int, batch_size: int = 96) -> dict:
    """The shipped tiny CLIP with the richer world's vocabulary, fine-tuned ``steps`` CLIP steps."""
    torch.manual_seed(0)
    old = load_clip(WEIGHTS_DIR / "text_encoder")
    tokenizer = Tokenizer(vocabulary())
    config = dataclasses.replace(old.config, text=dataclasses.replace(old.config.text, vocab_size=len(tokenizer)))
    clip = TinyCLIP(config, tokenizer)
    clip.load_state_dict({k: v for k, v in old.state_dict().items() if "token_embedding" not in k}, strict=False)
    with torch.no_grad():  # words the old encoder knew keep their rows
        for word, i in tokenizer.ids.items():
            if word in old.tokenizer.ids:
                clip.text_encoder.token_embedding.weight[i] = old.text_encoder.token_embedding.weight[old.tokenizer.ids[word]]
    opt = torch.optim.AdamW(clip.parameters(), lr=LEARNING_RATE / 2, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / 20, 0.5 * (1 + math.cos(math.pi * s / steps))))
    start = time.perf_counter()
    for step in range(steps):
        images, captions, scenes = make_shapes(batch_size, ShapesConfig(), seed=TEXT_SEED * 1_000_003 + step)
        tokens = tokenizer.encode(captions, config.text.max_len)  # (B, L)
        tokens = tokens[:, : int((tokens != PAD_ID).sum(1).max())]  # (B, L'): drop all-pad columns
        loss = clip_loss(*clip.train()(images, tokens), same=same_scene(scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    clip.eval()
    report = {"recipe": f"benchmarks/compositional.py text --steps {steps}", "steps": steps, "batch_size": batch_size,
              "train_seconds": round(time.perf_counter() - start, 1),
              "new_words": [w for w in tokenizer.tokens if w not in old.tokenizer.ids]}
    for name, cfg in (("one_object", ShapesConfig(max_objects=1, kinds={"position": 1.0})),
                      ("two_objects", ShapesConfig(max_objects=2, kinds={"position": 1.0}))):
        images, captions, _ = make_shapes(500, cfg, seed=10**9 + 7)
        report[f"retrieval_{name}"] = {k: round(v, 4) for k, v in retrieval_accuracy(clip, images, captions).items()}
    out.mkdir(parents=True, exist_ok=True)
    save_text_encoder(clip, tokenizer, out / "text_encoder", extra=report)
    return report


def train(out: Path, steps: int, minutes: float, holdout: tuple[tuple[str, ...], ...], init: str | None,
          lr: float) -> dict:
    """The U-Net stage on 1-4 object scenes (text encoder already in ``out``; the shipped VAE is copied).

    ``init``: a U-Net checkpoint to start from (weights and EMA; fresh optimiser, step 0), written as the
    run's ``train_state`` so that ``train_preset(resume=True)`` continues from it.
    """
    for suffix in (".json", ".safetensors"):
        if not (out / f"vae{suffix}").exists():
            shutil.copy(WEIGHTS_DIR / f"vae{suffix}", out / f"vae{suffix}")
    overrides = {} if init else {"attention_levels": (0, 1)}
    config = train_config("shapes-latent", max_objects=4, p_two=0.5, steps=steps, holdout=holdout, lr=lr,
                          checkpoint_every=200, sample_every=0, unet_overrides=overrides)
    if init and not (out / "train_state.json").exists():
        state, meta = load_checkpoint(init)
        tensors = {**{f"model.{k}": v for k, v in state.items()}, **{f"ema.{k}": v.clone() for k, v in state.items()}}
        save_checkpoint(out / "train_state", tensors, meta["config"], {"step": 0, "init": str(init)})
    start = time.perf_counter()
    timings = train_preset(config, out, device="cpu", progress=False, max_minutes=minutes, resume=bool(init))
    timings["total_s"] = time.perf_counter() - start
    (out / "timings.json").write_text(json.dumps(timings, indent=1, default=str))
    return timings


def held_out(run: str | None) -> dict[str, float]:
    """Share of images right per prompt of HELD_OUT, and the mean of each group."""
    pipe, judge, result = load_pipeline(run, device="cpu"), load_judge(), {}
    for group, prompts in HELD_OUT.items():
        for prompt in prompts:
            images = generate(pipe, [prompt] * HELD_OUT_SEEDS, list(range(HELD_OUT_SEEDS)), steps=20, guidance_scale=3.0)
            got = predict_scenes(judge, images)
            result[prompt] = sum(all_right(score_scene(parse_caption(prompt), g)) for g in got) / HELD_OUT_SEEDS
        result[group] = sum(result[p] for p in prompts) / len(prompts)
    return result


def padding(run: str | None, unmasked: bool, prompt: str = TWO_OBJECT_PROMPT) -> float:
    """Mean share of cross-attention on <pad> keys over 4 seeds."""
    pipe = load_pipeline(run, device="cpu")
    if unmasked:
        pipe.unet.config.mask_padding = False
        encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
        pipe.encode = lambda prompts: encoder(tokenizer.encode(list(prompts), encoder.config.max_len))
    return sum(padding_attention_share(pipe, prompt, seed=s) for s in range(4)) / 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("text", "train", "heldout", "padding"))
    parser.add_argument("path")
    parser.add_argument("json", nargs="?")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=45.0)
    parser.add_argument("--holdout", nargs="*", default=[], help="combinations as words joined by +")
    parser.add_argument("--unmasked", action="store_true")
    parser.add_argument("--init", default=None, help="train: start from this U-Net checkpoint")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = None if args.path == "shipped" else args.path
    if args.command == "text":
        result = extend_text_encoder(Path(args.path), args.steps or 150)
    elif args.command == "train":
        holdout = tuple(tuple(c.split("+")) for c in args.holdout)
        result = train(Path(args.path), args.steps or 2400, args.minutes, holdout, args.init, args.lr)
    elif args.command == "heldout":
        result = held_out(run)
    else:
        result = {"padding_share": padding(run, args.unmasked), "unmasked": args.unmasked, "prompt": TWO_OBJECT_PROMPT}
    print(json.dumps(result, indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
