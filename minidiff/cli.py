"""Every command line of minidiff: ``python -m minidiff {sample,train,eval,grade,judge,figures}``.

Every option is checked before any work (before a model is loaded where it can be, always before a
file is written). Bad input prints one line, ``error: ...``, naming the option, its value and what is
allowed, and exits 2. Only UserError and ValueError become that line: any other exception is a bug
and keeps its traceback. Heavy modules are imported inside each command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NoReturn

from minidiff.checkpoint import atomic_write_bytes, checkpoint_exists, pick_device, read_metadata
from minidiff.validate import (
    MAX_EVAL_IMAGES,
    MAX_EVAL_PROMPTS,
    MAX_GUIDANCE,
    MAX_NUM_IMAGES,
    MAX_SIZE_FACTOR,
    UserError,
    as_option,
    check_int,
    check_output,
    check_sample,
    check_sampling,
    check_seed,
    default_preset,
    pipeline_facts,
    training_config,
)

EXIT_BAD_INPUT = 2


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), raised as UserError."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def cmd_sample(args: argparse.Namespace) -> int:
    """Generate a grid of images for one or more prompts and print the PNG's path."""
    facts = pipeline_facts(args.weights)
    out = check_sample(args, facts)
    if args.dry_run:
        print(f"{out}: every option and prompt is valid (--dry-run: nothing sampled)", file=sys.stderr)
        return 0
    from minidiff.judge import judge_lines
    from minidiff.label_judge import label_judge_lines
    from minidiff.pipeline import load_pipeline
    from minidiff.viz import save_grid

    pipe = load_pipeline(args.weights, device=args.device)
    prompts = [p for p in args.prompt for _ in range(args.num_images)]
    seeds = [args.seed + i for _ in args.prompt for i in range(args.num_images)]
    start = time.perf_counter()
    images = pipe(prompts, seeds=seeds, steps=args.steps, sampler=args.sampler, guidance_scale=args.guidance,
                  negative_prompt=args.negative_prompt, height=args.height, width=args.width)
    save_grid(images, out, nrow=args.num_images, scale=args.scale)
    print(f"{out}  ({len(prompts)} images, {args.steps} {args.sampler} steps, guidance {args.guidance}, "
          f"{time.perf_counter() - start:.2f} s)", file=sys.stderr)
    run_judge = Path(args.weights or "") / "judge"
    if (args.weights and checkpoint_exists(run_judge)
            and read_metadata(run_judge)["extra"].get("kind") == "label_judge"):
        for line in label_judge_lines(run_judge, images, prompts, seeds):  # what the run's label judge reads
            print(line, file=sys.stderr)
    elif images.shape[-1] == images.shape[-2] and facts["shapes"]:  # the judge reads square shapes images
        for line in judge_lines(images, prompts, seeds):  # what the shipped judge reads back
            print(line, file=sys.stderr)
    print(out)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a preset from scratch (or --resume a killed run)."""
    from minidiff.runs import train_preset
    from minidiff.training import TrainingDiverged

    if args.threads is not None:
        check_int("--threads", args.threads, 1, None, " (torch CPU threads)")
        import torch

        torch.set_num_threads(args.threads)
    name = args.preset or (default_preset(args.data) if args.data in (None, "shapes", "digits") else "data")
    out = check_output("--out", args.out or f"runs/{name}", folder=True)
    as_option("--device: ", pick_device, args.device)
    if (config := training_config(args, out)) is None:
        return 0
    try:
        result = train_preset(config, out, device=args.device, resume=args.resume, max_minutes=args.minutes)
    except TrainingDiverged as err:  # a run that blew up is reported in one line, its checkpoints named
        raise UserError(str(err)) from None
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    print(f"trained weights in {out}; sample with: python -m minidiff sample \"...\" --weights {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Score the judge on real images and the pipeline's prompt adherence."""
    check_int("--judge-images", args.judge_images, 1, MAX_EVAL_IMAGES, " (real images rendered at once)")
    if not args.judge_only:
        check_sampling(args, pipeline_facts(args.weights))
        check_int("--prompts", args.prompts, 1, MAX_EVAL_PROMPTS, " (evaluation prompts, one image each)")
    as_option("--device: ", pick_device, args.device)
    out = check_output("--json", args.json) if args.json else None
    from minidiff.compositional import evaluate_compositional_cli
    from minidiff.metrics import evaluate_data_run_cli, evaluate_judge_cli, evaluate_pipeline_cli
    from minidiff.runs import run_config

    config = run_config(args.weights) if args.weights else None
    if args.suite == "compositional":
        evaluate_compositional_cli(args.weights, args.steps, args.guidance, args.sampler, args.device, out)
        return 0
    if config is not None and config.data != "shapes":
        report = evaluate_data_run_cli(args.weights, per_label=max(1, args.prompts // 10), steps=args.steps,
                                       guidance_scale=args.guidance, sampler=args.sampler, device=args.device)
        if out is not None:
            atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
        return 0
    report = evaluate_judge_cli(n=args.judge_images)
    if not args.judge_only:
        report.update(evaluate_pipeline_cli(args.weights, n_prompts=args.prompts, steps=args.steps,
                                            guidance_scale=args.guidance, sampler=args.sampler,
                                            device=args.device))
    if out is not None:
        atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    return 0


def cmd_grade(args: argparse.Namespace, rest: list[str]) -> int:
    """Grade the exercises (all options are the grader's own: see `grade --help`)."""
    for i, arg in enumerate(rest):  # the report path is checked before any exercise runs
        if arg.startswith("--json=") or (arg == "--json" and i + 1 < len(rest)):
            check_output("--json", arg[len("--json="):] if "=" in arg else rest[i + 1])
    from minidiff.grading import main as grade_main

    return grade_main(rest)


def cmd_judge(args: argparse.Namespace) -> int:
    """Train and save the attribute judge (`judge train`), or score one on real images (`judge eval`)."""
    from minidiff.judge import evaluate_judge, load_judge, train_and_save

    check_int("--n", args.n, 1, MAX_EVAL_IMAGES, " (real images rendered at once)")
    as_option("--device: ", pick_device, args.device)
    check_seed(args.seed)
    if args.action == "train":
        check_int("--steps", args.steps, 1, None, " (judge training steps)")
        check_int("--batch-size", args.batch_size, 2, None, " (batch norm needs two images)")
        report = train_and_save(check_output("--path", args.path), args.preset, args.steps, args.batch_size,
                                args.seed, args.device, args.n)
        scores = report["eval"]
        print(f"trained in {report['train_seconds']:.0f}s; saved {args.path}")
    else:
        judge = as_option(f"--path={args.path!r}: ", load_judge, args.path, args.device)
        scores = evaluate_judge(judge, args.n)
    print("  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """Regenerate every figure in figures/."""
    check_output("--out", args.out, folder=True)
    from minidiff.figures import make_figures

    for path in make_figures(args.out, fast=args.fast):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    from minidiff.judge import PRESETS as JUDGE_PRESETS
    from minidiff.judge import WEIGHTS as JUDGE_WEIGHTS
    from minidiff.sampling import SAMPLERS

    parser = Parser(prog="python -m minidiff", description="Text-to-image diffusion, small enough to read.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sampling_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--weights", default=None, help="a training run's folder (default: shipped weights)")
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--sampler", default="dpmpp_2m", help=f"one of {', '.join(SAMPLERS)}")
        p.add_argument("--guidance", type=float, default=3.0,
                       help=f"classifier-free guidance, 0..{MAX_GUIDANCE:g} (0: no prompt, 1: no guidance)")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    p = sub.add_parser("sample", help="a sentence -> a PNG grid of pictures (shipped weights by default)")
    p.add_argument("prompt", nargs="+", help='e.g. "a large red circle at the top left on a blue background"')
    sampling_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed + i")
    p.add_argument("--negative-prompt", default="", help="what to steer away from")
    p.add_argument("--num-images", type=int, default=4, help=f"images per prompt, 1..{MAX_NUM_IMAGES}")
    p.add_argument("--height", type=int, default=None, help=f"up to {MAX_SIZE_FACTOR}x the training size")
    p.add_argument("--width", type=int, default=None, help=f"up to {MAX_SIZE_FACTOR}x the training size")
    p.add_argument("--out", default=None, help="PNG path (default: outputs/<prompt>_seed<seed>.png)")
    p.add_argument("--scale", type=int, default=4, help="draw each pixel as a scale x scale block in the PNG")
    p.add_argument("--dry-run", action="store_true", help="check every option and prompt, then stop")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("train", help="train every stage from scratch: (judge,) text encoder, (VAE,) U-Net")
    p.add_argument("--preset", default=None, help="shapes-latent (default), shapes-pixel, digits, images, "
                   "mnist-gpu, ... (see runs.PRESETS)")
    p.add_argument("--data", default=None,
                   help="shapes, digits, a saved data set or image folder, or a Hub name "
                   "(mnist, fashion_mnist, cifar10, huggan/smithsonian_butterflies_subset)")
    p.add_argument("--caption-column", default=None, help="column holding each image's caption")
    p.add_argument("--label-column", default=None,
                   help="column holding a class label (see --caption-template)")
    p.add_argument("--caption-template", default=None, help='e.g. "a handwritten digit {label_word}"')
    p.add_argument("--image-column", default=None, help="column holding the images (default: image)")
    p.add_argument("--split", default=None, help="data set split (default: train)")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    p.add_argument("--resolution", type=int, default=None, help="image side in pixels, 16..64")
    p.add_argument("--channels", type=int, default=None, help="1 (grayscale) or 3 (RGB)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own, one per "
                   "core); on a busy CPU 1 is often several times faster")
    p.add_argument("--steps", type=int, default=None, help="U-Net training steps (default: the preset's)")
    p.add_argument("--minutes", type=float, default=None, help="stop the U-Net stage after this many minutes")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="the U-Net's peak learning rate")
    p.add_argument("--init", default=None, help="fine-tune: start the U-Net from this run folder's (or "
                   "'shipped'), reusing its text encoder, VAE and judge")
    p.add_argument("--out", default=None, help="run folder (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("eval", help="judge accuracy on real images and prompt adherence of a pipeline")
    sampling_options(p)
    p.add_argument("--prompts", type=int, default=200, help="how many of the fixed evaluation prompts")
    p.add_argument("--suite", default="one_object", choices=("one_object", "compositional"),
                   help="one_object: 200 one-object prompts; compositional: GenEval's six categories")
    p.add_argument("--judge-images", type=int, default=2000)
    p.add_argument("--judge-only", action="store_true")
    p.add_argument("--json", default=None, help="also write the report here")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("grade", help="grade the exercises in exercises/ (see grade --help)", add_help=False)
    p.set_defaults(run=cmd_grade)

    p = sub.add_parser("judge", help="train or score the attribute judge")
    p.add_argument("action", choices=("train", "eval"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--preset", default="default", choices=sorted(JUDGE_PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=2000, help="real images to score")
    p.add_argument("--path", default=str(JUDGE_WEIGHTS), help="checkpoint (default: the shipped judge)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=cmd_judge)

    p = sub.add_parser("figures", help="regenerate every figure in figures/")
    p.add_argument("--out", default="figures")
    p.add_argument("--fast", action="store_true", help="small versions, for tests")
    p.set_defaults(run=cmd_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; bad input exits 2 with a one-line message."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        if argv[:1] == ["grade"]:  # the grader parses its own options
            return cmd_grade(parser.parse_args(argv[:1]), argv[1:])
        args = parser.parse_args(argv)
        return args.run(args)
    except (UserError, ValueError) as err:
        print("error: " + " ".join(str(err).split("\n")), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: checkpoints written so far are kept; continue with --resume", file=sys.stderr)
        return 130
