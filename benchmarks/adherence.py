"""Prompt adherence of a pipeline against sampler and steps, and against the guidance scale.

Two tables, both on the fixed evaluation prompts (``metrics.eval_prompts``, seed = prompt index):
1. samplers: every sampler at 5, 10, 20 and 50 steps (guidance 3): the judge's adherence ("all" and
   per attribute), the Frechet distance between judge features of the generated images and of the
   prompts rendered exactly (``fd``; lower is closer to real data), and the seconds it took.
2. guidance: scales 0, 1, 3, 5, 7.5 and 10 (default sampler and steps): adherence, fd, mean HSV
   saturation, and diversity = mean pairwise RMS distance between ``--seeds`` seeds of each of the first
   ``--diversity-prompts`` prompts. Guidance 0 ignores the prompt, 1 is the plain conditional model.
A "real" row gives the same numbers for the exact renders of the prompts.

With 100 images and 128 features the Frechet distance is biased upwards: compare rows, not runs.

    python benchmarks/adherence.py [--prompts 100] [--weights RUN_DIR] [--threads 2] [--fast]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from train_pixel import SAMPLING, SCORE_COLUMNS, machine, write_report

from minidiff.figures import GUIDANCE_SCALES  # the sweep of figures/guidance.png: 0, 1, 3, 5, 7.5, 10
from minidiff.judge import Judge, load_judge
from minidiff.metrics import (
    diversity,
    eval_prompts,
    format_table,
    frechet_distance,
    generate,
    judge_features,
    prompt_adherence,
    saturation,
)
from minidiff.pipeline import Pipeline, load_pipeline
from minidiff.sampling import SAMPLERS
from minidiff.shapes import parse_caption, render

STEPS = (5, 10, 20, 50)
SEED_STRIDE = 1000  # seed k of prompt i is k * SEED_STRIDE + i, so seed 0 is the adherence image


def score(images: torch.Tensor, prompts: list[str], judge: Judge,
          real_features: torch.Tensor) -> dict[str, float]:
    """Adherence per attribute, fd against the real renders, and saturation of images (N, 3, H, W)."""
    return {**prompt_adherence(images, prompts, judge),
            "fd": frechet_distance(judge_features(judge, images), real_features),
            "saturation": saturation(images)}


def sampler_sweep(pipe: Pipeline, prompts: list[str], judge: Judge, real_features: torch.Tensor,
                  steps_list: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per (sampler, steps) at the default guidance scale."""
    rows = []
    for sampler in SAMPLERS:
        for steps in steps_list:
            start = time.perf_counter()
            images = generate(pipe, prompts, steps=steps, sampler=sampler,
                              guidance_scale=SAMPLING["guidance_scale"])
            rows.append({"sampler": sampler, "steps": steps, **score(images, prompts, judge, real_features),
                         "seconds": time.perf_counter() - start})
            print(format_table(rows[-1:], ["sampler", "steps", "all", "fd", "seconds"], header=len(rows) == 1,
                               width=9), flush=True)
    return rows


def guidance_sweep(pipe: Pipeline, prompts: list[str], judge: Judge, real_features: torch.Tensor,
                   scales: tuple[float, ...], diversity_prompts: int, seeds: int) -> list[dict[str, Any]]:
    """One row per guidance scale at the default sampler and steps, with diversity over seeds."""
    rows = []
    few = prompts[:diversity_prompts]
    repeated = [p for p in few for _ in range(seeds)]
    seed_list = [k * SEED_STRIDE + i for i in range(len(few)) for k in range(seeds)]
    for scale in scales:
        start = time.perf_counter()
        settings = {"steps": SAMPLING["steps"], "sampler": SAMPLING["sampler"], "guidance_scale": scale}
        images = generate(pipe, prompts, **settings)
        per_prompt = generate(pipe, repeated, seed_list, **settings)  # (P * S, 3, H, W)
        spread = diversity(per_prompt.reshape(len(few), seeds, *per_prompt.shape[1:]))  # (P, S, 3, H, W)
        rows.append({"guidance": scale, **score(images, prompts, judge, real_features), "diversity": spread,
                     "seconds": time.perf_counter() - start})
        print(format_table(rows[-1:], ["guidance", "all", "fd", "saturation", "diversity", "seconds"],
                           header=len(rows) == 1, width=9),
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None,
                        help="a training run's folder (default: the shipped pipeline)")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--diversity-prompts", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt for diversity")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fast", action="store_true",
                        help="few prompts, steps and scales: checks the script runs")
    parser.add_argument("--json", default=None, help="default: benchmarks/results/adherence[_fast].json")
    args = parser.parse_args()
    args.json = args.json or f"benchmarks/results/adherence{'_fast' if args.fast else ''}.json"
    torch.set_num_threads(args.threads)
    steps_list, scales = (STEPS[:2], (0.0, 3.0, 10.0)) if args.fast else (STEPS, GUIDANCE_SCALES)
    if args.fast:
        args.prompts, args.diversity_prompts, args.seeds = min(args.prompts, 8), 2, 2
    load_start = [round(x, 2) for x in os.getloadavg()]  # other work on the machine slows every timing
    wall = time.perf_counter()
    pipe = load_pipeline(args.weights, device=args.device)
    judge, prompts = load_judge(), eval_prompts(args.prompts)
    # (N, 3, H, W) the prompts drawn exactly
    real = render([parse_caption(p) for p in prompts], pipe.resolution)
    real_features = judge_features(judge, real)
    reference = {**score(real, prompts, judge, real_features), "diversity": 0.0}
    print(f"samplers x steps ({args.prompts} prompts, guidance {SAMPLING['guidance_scale']})")
    samplers = sampler_sweep(pipe, prompts, judge, real_features, steps_list)
    print(f"\nguidance scale ({SAMPLING['steps']} {SAMPLING['sampler']} steps; diversity over "
          f"{args.seeds} seeds x {args.diversity_prompts} prompts)")
    guidance = guidance_sweep(pipe, prompts, judge, real_features, scales, args.diversity_prompts, args.seeds)
    print("\nprompt adherence against sampler and steps")
    print(format_table(samplers + [{"sampler": "real", **reference}],
                       ["sampler", "steps", *SCORE_COLUMNS, "fd", "seconds"]))
    print("\nagainst guidance scale")
    print(format_table(guidance + [{"guidance": "real", **reference}],
                       ["guidance", *SCORE_COLUMNS, "fd", "saturation", "diversity", "seconds"]))
    report = {"samplers": samplers, "guidance": guidance, "real": reference,
              "weights": str(args.weights or "shipped"),
              "args": vars(args), "machine": {**machine(), "load_average_start": load_start},
              "wall_s": time.perf_counter() - wall}
    write_report(args.json, report)


if __name__ == "__main__":
    main()
