"""Every command line of minidiff: ``python -m minidiff {sample,train,eval,grade,judge,figures}``.

Bad input prints one line, ``error: ...``, and exits with status 2; no tracebacks. Heavy modules are
imported inside each command so that ``sample`` starts fast.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Input the user can fix; printed without a traceback."""


def judge_lines(images: torch.Tensor, prompts: list[str], seeds: list[int]) -> list[str]:
    """What the shipped judge reads back from each image (N, 3, H, W) in [-1, 1], one line per image:
    its seed, "ok" or "MISSED" (every attribute the prompt names, and the object count), and the scene
    it read, as a caption. E.g. ``judge, seed 0: ok     a large red circle at the top left on a blue background``.
    """
    from minidiff.shapes import caption, parse_caption
    from minidiff.judge import all_right, load_judge, predict_scenes, score_scene

    lines = []
    for prompt, seed, got in zip(prompts, seeds, predict_scenes(load_judge(), images)):
        right = all_right(score_scene(parse_caption(prompt), got))
        read = caption(got, 0) if got.objects else f"no object on a {got.background} background"
        lines.append(f"judge, seed {seed}: {'ok    ' if right else 'MISSED'} {read}")
    return lines


def cmd_sample(args: argparse.Namespace) -> int:
    """Generate a grid of images for one or more prompts and print the PNG's path."""
    from minidiff.pipeline import load_pipeline
    from minidiff.viz import save_grid

    if args.num_images < 1:
        raise UserError(f"--num-images={args.num_images} must be >= 1")
    if args.scale < 1:
        raise UserError(f"--scale={args.scale} must be >= 1 (1 writes the images at their own size)")
    pipe = load_pipeline(args.weights, device=args.device)
    prompts = [p for p in args.prompt for _ in range(args.num_images)]
    seeds = [args.seed + i for _ in args.prompt for i in range(args.num_images)]
    start = time.perf_counter()
    images = pipe(prompts, seeds=seeds, steps=args.steps, sampler=args.sampler, guidance_scale=args.guidance,
                  negative_prompt=args.negative_prompt, height=args.height, width=args.width)
    slug = re.sub(r"[^a-z0-9]+", "_", args.prompt[0].lower()).strip("_")[:60] or "unconditional"
    out = Path(args.out or f"outputs/{slug}_seed{args.seed}.png")
    save_grid(images, out, nrow=args.num_images, scale=args.scale)
    print(f"{out}  ({len(prompts)} images, {args.steps} {args.sampler} steps, guidance {args.guidance}, "
          f"{time.perf_counter() - start:.2f} s)", file=sys.stderr)
    if images.shape[-1] == images.shape[-2]:  # the judge reads square images only
        for line in judge_lines(images, prompts, seeds):
            print(line, file=sys.stderr)
    print(out)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a preset from scratch (or --resume a killed run)."""
    from minidiff.training import train_config, train_preset

    overrides = {"steps": args.steps} if args.steps else {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = train_config(args.preset, **overrides)
    out = args.out or f"runs/{args.preset}"
    result = train_preset(config, out, device=args.device, resume=args.resume, max_minutes=args.minutes)
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    print(f"trained weights in {out}; sample with: python -m minidiff sample \"...\" --weights {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Score the judge on real images and the pipeline's prompt adherence."""
    from minidiff.metrics import evaluate_compositional_cli, evaluate_judge_cli, evaluate_pipeline_cli

    if args.suite == "compositional":
        evaluate_compositional_cli(args.weights, args.steps, args.guidance, args.sampler, args.device,
                                   args.json)
        return 0
    report = evaluate_judge_cli(n=args.judge_images)
    if not args.judge_only:
        report.update(evaluate_pipeline_cli(args.weights, n_prompts=args.prompts, steps=args.steps,
                                            guidance_scale=args.guidance, sampler=args.sampler, device=args.device))
    if args.json:
        import json
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def cmd_grade(args: argparse.Namespace, rest: list[str]) -> int:
    """Grade the exercises (all options are the grader's own: see `grade --help`)."""
    from minidiff.grading import main as grade_main

    return grade_main(rest)


def cmd_judge(args: argparse.Namespace, rest: list[str]) -> int:
    """Train or score the attribute judge (`judge train --steps N`, `judge eval`)."""
    from minidiff.judge import main_judge

    return main_judge(rest)


def cmd_figures(args: argparse.Namespace) -> int:
    """Regenerate every figure in figures/."""
    from minidiff.viz import make_figures

    for path in make_figures(args.out, fast=args.fast):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    from minidiff.sampling import SAMPLERS

    parser = argparse.ArgumentParser(prog="python -m minidiff", description="Text-to-image diffusion, small enough to read.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("sample", help="a sentence -> a PNG grid of pictures (shipped weights by default)")
    p.add_argument("prompt", nargs="+", help='e.g. "a large red circle at the top left on a blue background"')
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed + i")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="dpmpp_2m", help=f"one of {', '.join(SAMPLERS)}")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (0 = ignore prompt, 1 = none)")
    p.add_argument("--negative-prompt", default="", help="what to steer away from")
    p.add_argument("--num-images", type=int, default=4, help="images per prompt (one seed each)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--weights", default=None, help="a training run's folder (default: the shipped weights)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--out", default=None, help="PNG path (default: outputs/<prompt>_seed<seed>.png)")
    p.add_argument("--scale", type=int, default=4, help="draw every pixel as a scale x scale block in the PNG")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("train", help="train a preset from scratch: text encoder, VAE, U-Net")
    p.add_argument("--preset", default="shapes-latent", help="shapes-latent, shapes-pixel, shapes-latent-gpu, ...")
    p.add_argument("--steps", type=int, default=None, help="U-Net training steps (default: the preset's)")
    p.add_argument("--minutes", type=float, default=None, help="stop the U-Net stage after this many minutes")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="run folder (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("eval", help="judge accuracy on real images and prompt adherence of a pipeline")
    p.add_argument("--weights", default=None, help="a training run's folder (default: the shipped weights)")
    p.add_argument("--prompts", type=int, default=200, help="how many of the fixed evaluation prompts")
    p.add_argument("--suite", default="one_object", choices=("one_object", "compositional"),
                   help="one_object: 200 one-object prompts; compositional: GenEval's six categories")
    p.add_argument("--judge-images", type=int, default=2000)
    p.add_argument("--judge-only", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the report here")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("grade", help="grade the exercises in exercises/ (see grade --help)", add_help=False)
    p.set_defaults(run=cmd_grade)

    p = sub.add_parser("judge", help="train or score the attribute judge (see judge --help)", add_help=False)
    p.set_defaults(run=cmd_judge)

    p = sub.add_parser("figures", help="regenerate every figure in figures/")
    p.add_argument("--out", default="figures")
    p.add_argument("--fast", action="store_true", help="small versions, for tests")
    p.set_defaults(run=cmd_figures)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Parse ``argv`` and run the command; bad input exits 2 with a one-line message."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    passthrough = argv[:1] in (["grade"], ["judge"])  # these parse their own options
    if passthrough:
        args, rest = parser.parse_args(argv[:1]), argv[1:]
    else:
        args, rest = parser.parse_args(argv), []
    try:
        if passthrough:
            return args.run(args, rest)
        return args.run(args)
    except (UserError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: checkpoints written so far are kept; continue with --resume", file=sys.stderr)
        return 130
