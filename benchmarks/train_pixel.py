"""Training speed of the CPU presets, and prompt adherence against training time for the pixel preset.

Two tables:
1. speed: seconds per training step of ``shapes-pixel`` and ``shapes-latent`` (for comparison), split
   into data (render shapes + encode captions [+ VAE encode]) and U-Net (forward, backward, clipping,
   AdamW, EMA), and images/s. Untrained weights: a step costs the same whatever the weights are.
2. curve: the ``shapes-pixel`` U-Net trained from scratch with ``training.train_denoiser`` in chunks
   of ``--chunk`` minutes (``--resume`` semantics) up to ``--minutes``; after each chunk its EMA weights
   draw one image per evaluation prompt (seed = index, default sampling settings) and the judge scores
   them. Time on the x axis is U-Net training time only (evaluation excluded).

The text encoder is the one at ``--text-encoder`` (default: the shipped one), else trained here with
the preset's steps. The latent preset's VAE is the one at ``--vae`` (default: shipped), else an
untrained one: only its cost matters here.

    python benchmarks/train_pixel.py [--minutes 10] [--chunk 1] [--prompts 50] [--threads 2] [--fast]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from minidiff.checkpoint import load_checkpoint, load_into
from minidiff.judge import SCORED, load_judge
from minidiff.metrics import eval_prompts, format_table, generate, prompt_adherence
from minidiff.pipeline import Pipeline, load_unet
from minidiff.runs import TrainConfig, make_source, train_config
from minidiff.schedule import make_schedule
from minidiff.text import TextEncoder, Tokenizer, load_text_encoder, save_text_encoder, train_clip
from minidiff.training import fit, train_denoiser, unet_stage
from minidiff.unet import UNet, UNetConfig
from minidiff.vae import VAE, VAEConfig, load_vae, save_vae, train_vae

WEIGHTS = Path(__file__).resolve().parents[1] / "minidiff" / "weights"
SCORE_COLUMNS = (*SCORED, "all")
SAMPLING = {"steps": 20, "sampler": "dpmpp_2m", "guidance_scale": 3.0}  # the defaults of `minidiff sample`
FAST = {"batch_size": 8, "text_steps": 10, "vae_steps": 10}  # --fast: a smoke run, numbers not meaningful


def machine() -> dict[str, Any]:
    """What the numbers were measured on: threads, CPU, load average (other work slows every timing)."""
    return {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__}


def write_report(path: str, report: dict[str, Any]) -> None:
    """Write a benchmark's JSON report (creating its folder) and say where, with its wall time."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2))
    print(f"wrote {path} ({report['wall_s']:.0f} s)")


def prepare_stages(config: TrainConfig, out: Path, text_encoder: str | None = None, vae: str | None = None,
                   batch_scale: float = 1.0,
                   device: str = "cpu") -> tuple[TextEncoder, Tokenizer, VAE | None, dict[str, float]]:
    """The frozen stages a U-Net trains against, saved into ``out`` (the layout ``load_pipeline`` reads).

    A given checkpoint stem is loaded; otherwise the stage is trained from scratch with the config's
    steps and timed. ``batch_scale`` shrinks the training batches (for --fast). Returns the stages and
    the seconds each training took (absent when loaded).
    """
    timings: dict[str, float] = {}
    if text_encoder is None:
        start = time.perf_counter()
        clip = train_clip(config.text_preset, steps=config.text_steps,
                          batch_size=max(2, int(128 * batch_scale)),
                          seed=config.seed, device=device, resolution=config.resolution, progress=False)
        timings["text_encoder_s"] = time.perf_counter() - start
        save_text_encoder(clip, clip.tokenizer, out / "text_encoder")
    else:
        encoder, tokenizer = load_text_encoder(text_encoder)
        save_text_encoder(encoder, tokenizer, out / "text_encoder")
    encoder, tokenizer = load_text_encoder(out / "text_encoder")
    model = None
    if config.latent:
        if vae is None:
            start = time.perf_counter()
            model = train_vae(VAEConfig.from_preset(config.vae_preset), steps=config.vae_steps,
                              batch_size=max(1, int(config.vae_batch_size * batch_scale)), seed=config.seed,
                              device=device, resolution=config.resolution, progress=False)
            timings["vae_s"] = time.perf_counter() - start
        else:
            model = load_vae(vae)
        save_vae(model, out / "vae")
        model = load_vae(out / "vae")
    return encoder, tokenizer, model, timings


def shipped(name: str) -> str | None:
    """The shipped checkpoint stem ``minidiff/weights/<name>`` if it exists, else None."""
    return str(WEIGHTS / name) if (WEIGHTS / f"{name}.json").exists() else None


def step_speed(config: TrainConfig, text_encoder: TextEncoder, tokenizer: Tokenizer, vae: VAE | None,
               steps: int = 10, warmup: int = 2, device: str = "cpu") -> dict[str, Any]:
    """Seconds per U-Net training step as ``training.fit`` runs it, and the share spent making batches.

    Times ``steps`` steps of fit after ``warmup`` untimed ones, then the stage's batches alone.
    """
    dev = torch.device(device)
    stage = unet_stage(dataclasses.replace(config, steps=warmup + steps), make_source(config), text_encoder,
                       tokenizer, vae, dev)
    fit(dataclasses.replace(stage, steps=warmup), progress=False, device=dev)
    step_s = fit(stage, progress=False, device=dev, stop_after=steps)["seconds"] / steps
    start = time.perf_counter()
    for step in range(steps):
        x0 = stage.batch(step, 0)[0]  # (B, C, h, w)
    data_s = (time.perf_counter() - start) / steps
    return {"unet": config.unet, "params": sum(p.numel() for p in stage.model.parameters()),
            "x0_shape": list(x0.shape[1:]), "batch_size": config.batch_size, "data_s": data_s,
            "unet_s": step_s - data_s, "step_s": step_s, "images_per_s": config.batch_size / step_s}


def adherence_curve(config: TrainConfig, out: Path, text_encoder: TextEncoder, tokenizer: Tokenizer,
                    vae: VAE | None,
                    minutes: float, chunk_minutes: float, prompts: list[str], target: float | None = None,
                    device: str = "cpu", label: str = "", sampling: dict[str, Any] | None = None,
                    raw: bool = False) -> list[dict[str, Any]]:
    """Train ``config``'s U-Net from scratch in ``out`` for up to ``minutes`` of training time, scoring
    adherence of its EMA weights on ``prompts`` after every ``chunk_minutes``; stops early once "all"
    >= ``target``. With ``raw``, the raw (not averaged) weights are scored too, as "all_raw".

    Each row: step, train_min (cumulative U-Net training minutes), loss, the judge's scores, eval_s.
    """
    for stale in ("unet_state", "unet"):  # always from scratch
        for suffix in (".json", ".safetensors"):
            (out / f"{stale}{suffix}").unlink(missing_ok=True)
    judge, schedule, rows, trained_s = load_judge(), make_schedule(config.schedule, config.T), [], 0.0
    while trained_s < 60 * minutes:
        chunk = min(chunk_minutes, minutes - trained_s / 60)
        result = train_denoiser(config, out, text_encoder, tokenizer, vae, device=device, resume=True,
                                max_minutes=chunk, progress=False)
        trained_s += result["seconds"]
        start = time.perf_counter()
        scores = {}
        for name, unet in (("", load_unet(out / "unet", device)[0]),
                           ("_raw", raw_unet(out, device) if raw else None)):
            if unet is not None:
                pipe = Pipeline(unet, text_encoder.to(device), tokenizer, schedule, vae, config.resolution)
                adherence = prompt_adherence(generate(pipe, prompts, **(sampling or SAMPLING)), prompts,
                                             judge)
                scores.update(adherence if not name else {"all_raw": adherence["all"]})
        rows.append({"run": label, "step": result["step"], "train_min": trained_s / 60,
                     "loss": result["loss"], **scores, "eval_s": time.perf_counter() - start})
        columns = ["run", "step", "train_min", "loss", *SCORE_COLUMNS, *(["all_raw"] if raw else []),
                   "eval_s"]
        print(format_table(rows[-1:], columns, header=len(rows) == 1, width=8), flush=True)
        if (target is not None and scores["all"] >= target) or result["step"] >= config.steps:
            break
    return rows


def raw_unet(out: Path, device: str = "cpu") -> UNet:
    """The raw (not averaged) U-Net weights of the last checkpoint in ``out``/unet_state, in eval mode."""
    state, meta = load_checkpoint(out / "unet_state", map_location=device)
    unet = UNet(UNetConfig(**meta["config"]))
    return load_into(unet, {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")},
                     "U-Net").to(device).eval()


def first_reaching(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """When a curve first got "all" >= target (train_min), or the best it reached within its budget."""
    hit = next((r for r in rows if r["all"] >= target), None)
    best = max(rows, key=lambda r: r["all"]) if rows else {"all": float("nan"), "train_min": float("nan"),
                                                           "step": 0}
    return {"reached": hit is not None, "train_min": (hit or best)["train_min"],
            "step": (hit or best)["step"],
            "best_all": best["all"], "budget_min": rows[-1]["train_min"] if rows else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="U-Net training budget of the curve")
    parser.add_argument("--chunk", type=float, default=1.0, help="minutes of training between evaluations")
    parser.add_argument("--prompts", type=int, default=50, help="evaluation prompts scored after each chunk")
    parser.add_argument("--speed-steps", type=int, default=10,
                        help="timed steps per preset (after 2 warm-up steps)")
    parser.add_argument("--text-encoder", default=shipped("text_encoder"),
                        help="checkpoint stem (default: shipped, else train)")
    parser.add_argument("--vae", default=shipped("vae"),
                        help="checkpoint stem (default: shipped, else untrained)")
    parser.add_argument("--raw", action="store_true",
                        help="also score the raw (not EMA) weights after each chunk")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="keep the run here (default: a temporary folder)")
    parser.add_argument("--fast", action="store_true",
                        help="tiny batches and budgets: checks the script runs")
    parser.add_argument("--json", default=None, help="default: benchmarks/results/train_pixel[_fast].json")
    args = parser.parse_args()
    args.json = args.json or f"benchmarks/results/train_pixel{'_fast' if args.fast else ''}.json"
    torch.set_num_threads(args.threads)
    fast = FAST if args.fast else {}
    if args.fast:
        args.minutes, args.chunk = min(args.minutes, 0.4), min(args.chunk, 0.2)
        args.prompts, args.speed_steps = min(args.prompts, 8), 2
    pixel, latent = train_config("shapes-pixel", **fast), train_config("shapes-latent", **fast)
    load_start = [round(x, 2) for x in os.getloadavg()]  # other work on the machine slows every timing
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        text_encoder, tokenizer, _, stage_s = prepare_stages(pixel, out / "pixel", args.text_encoder, None,
                                                             0.125 if args.fast else 1.0)
        # cost only
        vae = load_vae(args.vae) if args.vae else VAE(VAEConfig.from_preset(latent.vae_preset)).eval()
        speed = [{"preset": name, **step_speed(config, text_encoder, tokenizer, model, args.speed_steps)}
                 for name, config, model in (("shapes-pixel", pixel, None), ("shapes-latent", latent, vae))]
        print("\ntraining step speed (untrained weights; data = render + text encode [+ VAE encode])")
        print(format_table(speed,
                           ["preset", "params", "x0_shape", "batch_size", "data_s", "unet_s", "step_s",
                            "images_per_s"]))
        print(f"\nadherence of shapes-pixel against U-Net training time ({args.prompts} prompts, {SAMPLING})")
        curve = adherence_curve(pixel, out / "pixel", text_encoder, tokenizer, None, args.minutes, args.chunk,
                                eval_prompts(args.prompts), label="shapes-pixel", raw=args.raw)
    print(format_table(curve,
                       ["step", "train_min", "loss", *SCORE_COLUMNS, *(["all_raw"] if args.raw else [])]))
    report = {"speed": speed, "curve": curve, "stages_s": stage_s, "sampling": SAMPLING, "fast": args.fast,
              "args": vars(args), "machine": {**machine(), "load_average_start": load_start},
              "wall_s": time.perf_counter() - wall}
    write_report(args.json, report)


if __name__ == "__main__":
    main()
