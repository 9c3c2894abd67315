"""Checking what a user typed, before any work: every option of every command, and the prompts.

Each check raises a UserError whose message names the option, its value and what is allowed; the
CLI prints it as one line and exits 2. Limits are named constants with the reason they are there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from minidiff.checkpoint import check_writable, checkpoint_exists, pick_device, read_metadata

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
MAX_GUIDANCE = 50.0  # shapes images saturate by 10 (viz.GUIDANCE_SCALES' sweep); 50 is far past it
MAX_SIZE_FACTOR = 8  # sides up to 8x the training resolution: far past where subjects repeat (notebook 08),
#                      while self-attention memory grows with (H * W)**2
MAX_NUM_IMAGES = 64  # images per prompt: an 8 x 8 grid row
MAX_BATCH = 256  # images sampled at once (prompts x --num-images): one batch in memory
MAX_PNG_SIDE = 8192  # pixels a side of the PNG grid: 8192**2 RGB is 200 MB in memory
MAX_EVAL_IMAGES = 50_000  # real images rendered at once by `eval --judge-images`: 12 KB each at 32 px
MAX_EVAL_PROMPTS = 10_000  # generated images kept for scoring, 12 KB each at 32 px
GRID_PAD = 1  # pixels between and around grid cells (viz.image_grid's default), counted in the PNG size
DEFAULT_PRESET = "shapes-latent"
DATA_OPTIONS = ("caption_column", "label_column", "caption_template", "image_column", "split", "max_images")


class UserError(Exception):
    """Input the user can fix; printed as one ``error: ...`` line without a traceback."""


def check_int(option: str, value: int, low: int, high: int | None = None, why: str = "") -> None:
    """Raise a UserError unless ``low <= value <= high`` (no upper bound when ``high`` is None)."""
    if value < low or (high is not None and value > high):
        allowed = f"in {low}..{high}" if high is not None else f">= {low}"
        raise UserError(f"{option}={value} is not allowed; use an integer {allowed}{why}")


def check_float(option: str, value: float, low: float, high: float, why: str = "", low_open: bool = False
                ) -> None:
    """Raise a UserError unless ``value`` is finite and in [low, high] ((low, high] with ``low_open``)."""
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        allowed = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise UserError(f"{option}={value} is not allowed; use a finite number in {allowed}{why}")


def check_seed(seed: int, count: int = 1) -> None:
    """Seeds ``seed .. seed + count - 1`` must all fit torch's generator."""
    if not 0 <= seed <= MAX_SEED - (count - 1):
        top = "2**63-1" if count == 1 else f"2**63-{count} (image i uses seed + i, for {count} images)"
        raise UserError(f"--seed={seed} must be in 0..{top}")


def as_option(prefix: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, with the ValueError it may raise turned into a UserError that starts with ``prefix``."""
    try:
        return fn(*args)
    except ValueError as err:
        raise UserError(f"{prefix}{err}") from None


def check_output(option: str, value: str, folder: bool = False, suffixes: Sequence[str] = ()) -> Path:
    """An output path must be writable (``checkpoint.check_writable``), checked before any work."""
    return as_option(f"{option}={value!r} ", check_writable, value, folder, suffixes)


def pipeline_facts(weights: str | None) -> dict[str, Any]:
    """What the checks need from the checkpoints of ``--weights`` (None: the shipped ones), read from their
    headers without building a model: training resolution, timesteps T, size multiple, the tokenizer, its
    max_len, and whether it only knows shapes caption words (then the judge can read prompts back)."""
    from minidiff.pipeline import WEIGHTS_DIR
    from minidiff.shapes import vocabulary
    from minidiff.text import SPECIALS, Tokenizer
    from minidiff.unet import UNetConfig
    from minidiff.vae import VAEConfig

    if weights is not None and not Path(weights).is_dir():
        raise UserError(f"--weights={weights!r} is not a folder; pass a training run's output folder "
                        f"(or leave it out for the shipped weights)")
    folder = WEIGHTS_DIR if weights is None else Path(weights)
    try:
        unet, text = read_metadata(folder / "unet"), read_metadata(folder / "text_encoder")
        tokenizer = Tokenizer.from_dict(text["extra"]["tokenizer"])
        train = unet["extra"].get("train_config", {})
        latent = train.get("latent", checkpoint_exists(folder / "vae"))  # as load_pipeline decides
        f = VAEConfig(**read_metadata(folder / "vae")["config"]).downsample_factor if latent else 1
        multiple = f * UNetConfig(**unet["config"]).downsample_factor
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"--weights={str(folder)!r}: {err}") from None
    return {"resolution": train.get("resolution", 32), "T": train.get("T", 1000), "tokenizer": tokenizer,
            "max_len": text["config"].get("max_len", 32), "multiple": multiple,
            "shapes": set(tokenizer.tokens[len(SPECIALS):]) <= set(vocabulary())}


def check_prompts(option: str, prompts: Sequence[str], facts: dict[str, Any]) -> None:
    """Check each prompt once, before any work: the caption parser for shapes weights, whose judge reads
    prompts back (it splits words with ``shapes.split_words`` and names whole words: 'círcle'), then the
    tokenizer (unknown words, length)."""
    from minidiff.shapes import parse_caption

    for prompt in prompts:
        try:
            if facts["shapes"]:
                parse_caption(prompt)
            facts["tokenizer"].encode([prompt], facts["max_len"])
        except ValueError as err:
            raise UserError(f"{option}: {err}") from None


def check_sampling(args: argparse.Namespace, facts: dict[str, Any]) -> None:
    """--steps, --guidance and --sampler, shared by sample and eval."""
    from minidiff.sampling import SAMPLERS

    check_int("--steps", args.steps, 1, facts["T"], f" (the schedule has {facts['T']} timesteps)")
    check_float("--guidance", args.guidance, 0.0, MAX_GUIDANCE, " (0 ignores the prompt, 1 is no guidance; "
                f"images saturate long before {MAX_GUIDANCE:g})")
    if args.sampler not in SAMPLERS:
        raise UserError(f"--sampler={args.sampler!r} is not known; choose one of {', '.join(SAMPLERS)}")


def check_sample(args: argparse.Namespace, facts: dict[str, Any]) -> Path:
    """Every option of ``sample``; returns the PNG path."""
    check_sampling(args, facts)
    check_int("--num-images", args.num_images, 1, MAX_NUM_IMAGES, " (images per prompt)")
    total = len(args.prompt) * args.num_images
    if total > MAX_BATCH:
        raise UserError(f"--num-images={args.num_images} with {len(args.prompt)} prompts makes {total} "
                        f"images; at most {MAX_BATCH} are sampled at once")
    check_seed(args.seed, args.num_images)
    m, top = facts["multiple"], MAX_SIZE_FACTOR * facts["resolution"]
    for option, value in (("--height", args.height), ("--width", args.width)):
        if value is not None and not (m <= value <= top and value % m == 0):
            raise UserError(f"{option}={value} is not allowed; use a multiple of {m} in {m}..{top} (the VAE "
                            f"and U-Net downsample by {m}; {top} is {MAX_SIZE_FACTOR}x the "
                            f"{facts['resolution']} px training size)")
    height, width = args.height or facts["resolution"], args.width or facts["resolution"]
    grid = max(args.num_images * (width + GRID_PAD), len(args.prompt) * (height + GRID_PAD)) + GRID_PAD  # px
    check_int("--scale", args.scale, 1, max(1, MAX_PNG_SIDE // grid), f" (the PNG grid of "
              f"{len(args.prompt)} x {args.num_images} images of {height}x{width} px must fit "
              f"{MAX_PNG_SIDE} px a side)")
    check_prompts("prompt", args.prompt, facts)
    check_prompts("--negative-prompt", [args.negative_prompt], facts)
    as_option("--device: ", pick_device, args.device)
    slug = re.sub(r"[^a-z0-9]+", "_", args.prompt[0].lower()).strip("_")[:60] or "unconditional"
    return check_output("--out", args.out or f"outputs/{slug}_seed{args.seed}.png", suffixes=(".png",))


def training_config(args: argparse.Namespace, out: Path) -> Any:
    """The TrainConfig to run: the preset (chosen by --data when not given) with the options applied, or
    with --resume the run's own settings (which explicit options must then match)."""
    from minidiff.runs import PRESETS, STAGES, TrainConfig, init_folder, run_config, train_config

    if args.preset is not None and args.preset not in PRESETS:
        raise UserError(f"--preset={args.preset!r} is not known; choose one of {', '.join(sorted(PRESETS))}")
    if args.steps is not None:
        check_int("--steps", args.steps, 1, None, " (U-Net training steps)")
    if args.minutes is not None:
        check_float("--minutes", args.minutes, 0.0, 1e6, " (the U-Net stage stops after it)", low_open=True)
    if args.seed is not None:
        check_seed(args.seed)
    if args.lr is not None:
        check_float("--lr", args.lr, 0.0, 1.0, " (the U-Net's peak learning rate)", low_open=True)
    if args.init is not None:
        as_option("--init: ", init_folder, args.init)
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed), ("lr", args.lr),
                                   ("init", args.init), ("resolution", args.resolution),
                                   ("channels", args.channels))
                 if v is not None}
    if args.data is not None:
        options = {k: v for k, v in vars(args).items() if k in DATA_OPTIONS and v is not None}
        if args.data in ("shapes", "digits") and options.keys() - {"caption_template"}:
            raise UserError(f"--data {args.data} takes no column options; got {sorted(options)}")
        overrides.update(data=args.data, data_options=options)
    preset = args.preset or default_preset(args.data)
    stages = [name for name in (*STAGES, *(f"{n}_state" for n in STAGES)) if checkpoint_exists(out / name)]
    if stages and not args.resume:
        raise UserError(f"--out={str(out)!r} already holds a run ({', '.join(stages)}); continue it with "
                        f"--resume or choose another --out")
    if args.resume and not stages:
        raise UserError(f"--resume: --out={str(out)!r} holds no checkpoint to resume (none of "
                        f"{', '.join(STAGES)}); leave out --resume to train from scratch")
    unet_state = out / "unet_state"
    state = read_metadata(unet_state, verify=False)["extra"] if checkpoint_exists(unet_state) else {}
    try:
        saved = run_config(out) or (TrainConfig(**state["train_config"]) if "train_config" in state else None)
    except TypeError as err:
        raise UserError(f"--resume: the settings saved in {out} cannot be read ({err})") from None
    if saved is None and args.resume and args.preset is None:
        raise UserError(f"--resume: the run in {out} has no run.json with its settings; pass the --preset "
                        f"(and --steps, --seed) it was started with")
    if saved is None:  # a new run, or an old one without its settings: the preset decides
        return train_config(preset, **overrides)
    config = (train_config(args.preset, **overrides) if args.preset
              else dataclasses.replace(saved, **overrides))
    wanted, old = (json.loads(json.dumps(dataclasses.asdict(c))) for c in (config, saved))  # tuples -> lists
    if differ := [f"{k}={v!r} (asked: {wanted.get(k)!r})"
                  for k, v in sorted(old.items()) if v != wanted.get(k)]:
        raise UserError(f"--resume: the run in {out} was trained with other settings: {'; '.join(differ)}; "
                        f"resume it with its own settings or choose another --out")
    if state.get("step", 0) >= config.steps:
        loss = f", loss {state['loss']:.4g}" if isinstance(state.get("loss"), float) else ""
        print(f"{out} is already finished: step {state['step']} of {config.steps}{loss}; nothing to train. "
              f"Sample with: python -m minidiff sample \"...\" --weights {out}")
        return None
    return config


def default_preset(data: str | None) -> str:
    """The preset ``train`` uses when only --data is given."""
    return DEFAULT_PRESET if data in (None, "shapes") else "digits" if data == "digits" else "images"
