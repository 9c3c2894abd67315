"""Latent against pixel diffusion, side by side in one run, on the same machine and threads.

1. stages: one text encoder (shared by both pipelines) and the VAE, trained from scratch with the
   ``shapes-latent`` preset's steps and timed (or loaded with --text-encoder / --vae, then untimed).
2. speed: seconds per training step (``train_pixel.step_speed``) and sampling time at the default
   settings (20 DPM-Solver++(2M) steps, guidance 3, so 40 U-Net evaluations per image): one image
   alone, and per image in a batch of --sample-batch. Sampling includes text encoding and, for the
   latent pipeline, VAE decoding. Costs do not depend on the weights, so fresh U-Nets are timed.
3. time to adherence: each U-Net trained from scratch for up to --minutes of training time, scored on
   --prompts evaluation prompts after every --chunk minutes, stopping at --target ("all") adherence.
   Reported: the training minutes when it got there, or the best adherence within the budget.
4. the whole latent pipeline from scratch (text encoder + VAE + U-Net to target) against a
   15-minute goal.

    python benchmarks/latent_vs_pixel.py [--minutes 15] [--chunk 1.5] [--prompts 50] [--threads 2] [--fast]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from train_pixel import (
    FAST,
    SAMPLING,
    adherence_curve,
    first_reaching,
    machine,
    prepare_stages,
    step_speed,
    write_report,
)

from minidiff.metrics import eval_prompts, format_table
from minidiff.pipeline import Pipeline
from minidiff.runs import TrainConfig, train_config
from minidiff.schedule import make_schedule
from minidiff.text import TextEncoder, Tokenizer
from minidiff.training import build_unet
from minidiff.vae import VAE

GOAL_MINUTES = 15.0  # the goal: the whole latent pipeline from scratch to 90% adherence on 2 CPU cores
SAMPLE_PROMPT = "a large red circle at the top left on a blue background"  # the README's run command


def sampling_speed(config: TrainConfig, text_encoder: TextEncoder, tokenizer: Tokenizer, vae: VAE | None,
                   batch: int, repeats: int = 3) -> dict[str, float]:
    """Seconds for one image alone and per image in a batch of ``batch`` (best of ``repeats``), default
    settings."""
    channels = vae.config.latent_channels if vae is not None else 3
    unet = build_unet(config, channels, text_encoder.config.dim).eval()
    pipe = Pipeline(unet, text_encoder, tokenizer, make_schedule(config.schedule, config.T), vae,
                    config.resolution)

    def best(n: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            pipe([SAMPLE_PROMPT] * n, seeds=0, **SAMPLING)
            times.append(time.perf_counter() - start)
        return min(times)

    pipe([SAMPLE_PROMPT], seeds=0, **SAMPLING)  # warm-up
    return {"sample_1_s": best(1), "sample_per_image_s": best(batch) / batch}


def summary(results: dict[str, dict[str, Any]], stages: dict[str, float],
            target: float) -> list[dict[str, Any]]:
    """Side-by-side rows: metric, latent, pixel, pixel / latent."""
    rows = []
    for key, label in (("params", "U-Net parameters"), ("x0_shape", "diffused tensor"),
                       ("step_s", "train step (s)"),
                       ("images_per_s", "train images/s"), ("sample_1_s", "sample 1 image (s)"),
                       ("sample_per_image_s", "sample, per image in batch (s)"),
                       ("to_target_min", f"U-Net minutes to {target:.0%}"),
                       ("best_all", "best adherence in budget"), ("budget_min", "U-Net minutes trained")):
        latent, pixel = (results[name][key] if results[name][key] is not None else "not reached"
                         for name in ("latent", "pixel"))
        numbers = isinstance(latent, (int, float)) and isinstance(pixel, (int, float))
        ratio = pixel / latent if numbers and latent else ""
        rows.append({"metric": label, "latent": latent, "pixel": pixel, "pixel/latent": ratio})
    total = stages.get("text_encoder_s", float("nan")) / 60 + stages.get("vae_s", float("nan")) / 60
    rows.append({"metric": "text encoder + VAE minutes", "latent": total,
                 "pixel": stages.get("text_encoder_s", float("nan")) / 60})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="U-Net training budget of each pipeline")
    parser.add_argument("--chunk", type=float, default=1.5, help="minutes of training between evaluations")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--target", type=float, default=0.9, help='adherence ("all") to reach')
    parser.add_argument("--sample-batch", type=int, default=16)
    parser.add_argument("--speed-steps", type=int, default=10)
    parser.add_argument("--text-steps", type=int, default=None,
                        help="text encoder steps (default: the preset's)")
    parser.add_argument("--vae-steps", type=int, default=None, help="VAE steps (default: the preset's)")
    parser.add_argument("--text-encoder", default=None,
                        help="checkpoint stem to reuse (default: train from scratch)")
    parser.add_argument("--vae", default=None, help="checkpoint stem to reuse (default: train from scratch)")
    parser.add_argument("--raw", action="store_true",
                        help="also score the raw (not EMA) weights after each chunk")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="keep both runs here (default: a temporary folder)")
    parser.add_argument("--fast", action="store_true",
                        help="tiny batches and budgets: checks the script runs")
    parser.add_argument("--json", default=None,
                        help="default: benchmarks/results/latent_vs_pixel[_fast].json")
    args = parser.parse_args()
    args.json = args.json or f"benchmarks/results/latent_vs_pixel{'_fast' if args.fast else ''}.json"
    torch.set_num_threads(args.threads)
    fast = FAST if args.fast else {}
    if args.fast:
        args.minutes, args.chunk = min(args.minutes, 0.3), min(args.chunk, 0.15)
        args.prompts, args.speed_steps, args.sample_batch = 8, 2, 4
    stage_steps = {k: v for k, v in (("text_steps", args.text_steps), ("vae_steps", args.vae_steps))
                   if v is not None}
    configs = {name: train_config(f"shapes-{name}", **{**fast, **stage_steps})
               for name in ("latent", "pixel")}
    load_start = [round(x, 2) for x in os.getloadavg()]  # other work on the machine slows every timing
    wall, results, curves = time.perf_counter(), {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        scale = 0.125 if args.fast else 1.0
        # 1. the text encoder and the VAE, from scratch
        text_encoder, tokenizer, vae, stages = prepare_stages(configs["latent"], out / "latent",
                                                              args.text_encoder, args.vae, scale)
        prepare_stages(configs["pixel"], out / "pixel", str(out / "latent" / "text_encoder"), None, scale)
        print("stages:", {k: round(v, 1) for k, v in stages.items()}, flush=True)
        # 2. training step and sampling speed
        for name, config in configs.items():
            model = vae if config.latent else None
            results[name] = {**step_speed(config, text_encoder, tokenizer, model, args.speed_steps),
                             **sampling_speed(config, text_encoder, tokenizer, model, args.sample_batch)}
            print(name, {k: v for k, v in results[name].items()}, flush=True)
        # 3. time to the target adherence, from scratch
        prompts = eval_prompts(args.prompts)
        for name, config in configs.items():
            print(f"\n{name}: adherence against U-Net training time ({args.prompts} prompts)", flush=True)
            curves[name] = adherence_curve(config, out / name, text_encoder, tokenizer,
                                           vae if config.latent else None, args.minutes, args.chunk, prompts,
                                           target=args.target, label=name, raw=args.raw)
            reached = first_reaching(curves[name], args.target)
            results[name].update(reached, to_target_min=reached["train_min"] if reached["reached"] else None)
    # 4. the whole latent pipeline against the goal
    latent_total = None
    if results["latent"]["to_target_min"] is not None and {"text_encoder_s", "vae_s"} <= set(stages):
        latent_total = (stages["text_encoder_s"] + stages["vae_s"]) / 60 + results["latent"]["to_target_min"]
    table = summary(results, stages, args.target)
    print(f"\nlatent vs pixel diffusion ({args.threads} threads)")
    print(format_table(table, ["metric", "latent", "pixel", "pixel/latent"]))
    verdict = (f"{latent_total:.1f} min" if latent_total is not None else
               f"not reached (best {results['latent']['best_all']:.3f} after "
               f"{results['latent']['budget_min']:.1f} U-Net min)")
    print(f"\nwhole latent pipeline from scratch to {args.target:.0%} adherence: {verdict}; "
          f"goal {GOAL_MINUTES:.0f} min")
    stage_steps = {"text_steps": configs["latent"].text_steps, "vae_steps": configs["latent"].vae_steps}
    report = {"summary": table, "results": results, "curves": curves, "stages_s": stages,
              "stage_steps": stage_steps, "latent_total_min": latent_total, "goal_min": GOAL_MINUTES,
              "sampling": SAMPLING, "args": vars(args),
              "machine": {**machine(), "load_average_start": load_start},
              "wall_s": time.perf_counter() - wall}
    write_report(args.json, report)


if __name__ == "__main__":
    main()
