"""One training loop for the denoiser: objectives, CFG dropout, EMA, checkpoints, resume, DDP.

Each step draws a fresh batch of captioned shapes (seeded by the step, so a resumed run sees the
same data), encodes the captions with the frozen text encoder (replacing a share of them by the
empty prompt, so the same network also learns the unconditional model that guidance needs),
optionally encodes the images with the frozen VAE, noises them with ``q_sample`` and regresses the
model's output on the target of its objective (eps, x0 or v).

Everything a run needs to continue lives in ``<out>/train_state`` (weights, EMA weights, optimiser
moments, step); ``<out>/unet`` holds the EMA weights that sampling loads. Both are written
atomically, so killing a run loses at most the steps since the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from minidiff.checkpoint import (checkpoint_exists, load_checkpoint, load_into, pick_device, read_metadata,
                                 save_checkpoint, write_run_manifest)
from minidiff.shapes import ShapesConfig, make_shapes
from minidiff.schedule import PREDICTION_TYPES, make_schedule, q_sample, training_target
from minidiff.text import TextEncoder, Tokenizer, encode_prompts
from minidiff.unet import UNet, UNetConfig
from minidiff.vae import VAE, to_latent

LOSS_EXPLODED = 1e4  # a loss this far above 1 (the variance of eps) means the run has diverged
SEED_STRIDE = 1_000_003  # a prime: step s of seed k draws data with seed k * SEED_STRIDE + s


@dataclass
class TrainConfig:
    """Everything that decides a denoiser training run (the U-Net itself is a UNetConfig preset)."""

    unet: str = "cpu-latent"
    latent: bool = True
    resolution: int = 32
    prediction_type: str = "v"  # with the cosine schedule, eps errors are amplified ~2e4x at t = T-1 (notebook 02)
    schedule: str = "cosine"
    T: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # gradient-norm clipping, as in Ho et al. 2020's code
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # Ho & Salimans 2022 train with p_uncond = 0.1-0.2
    steps: int = 6000
    max_objects: int = 1
    p_two: float = 0.0
    holdout: tuple[tuple[str, ...], ...] = ()
    seed: int = 0
    checkpoint_every: int = 250
    sample_every: int = 1000
    text_preset: str = "cpu"
    text_steps: int = 600
    vae_preset: str = "f4"
    vae_steps: int = 6000  # with vae_batch_size, the recipe of the shipped VAE (weights/README.md)
    vae_batch_size: int = 8
    unet_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r} is not known; choose one of {PREDICTION_TYPES}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps={self.steps} and batch_size={self.batch_size} must be >= 1")
        if not 0 <= self.cond_dropout <= 1:
            raise ValueError(f"cond_dropout={self.cond_dropout} must lie in [0, 1]")
        self.holdout = tuple(tuple(c) for c in self.holdout)


PRESETS: dict[str, TrainConfig] = {
    "shapes-latent": TrainConfig(),
    "shapes-pixel": TrainConfig(unet="cpu-pixel", latent=False, steps=3000),
    "shapes-latent-gpu": TrainConfig(unet="gpu-latent", batch_size=256, lr=3e-4, steps=20000, text_preset="gpu"),
    "shapes-pixel-gpu": TrainConfig(unet="gpu-pixel", latent=False, batch_size=256, lr=2e-4, steps=20000, text_preset="gpu"),
    "tiny": TrainConfig(unet="cpu-latent", steps=20, batch_size=8, checkpoint_every=5, sample_every=0, text_steps=5,
                        vae_steps=5, warmup_steps=5, unet_overrides={"base_channels": 8, "channel_mults": (1, 2)}),
}


def train_config(preset: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig called ``preset`` with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ValueError(f"training preset {preset!r} is not known; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[preset], **overrides)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or exploded; the last good checkpoint is kept."""


def _distributed() -> tuple[int, int]:
    """(rank, world size) when launched by torchrun, else (0, 1); initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    """AdamW's per-parameter moments as flat named tensors (safetensors stores no nesting)."""
    return {f"opt.{i}.{k}": v for i, s in opt.state_dict()["state"].items() for k, v in s.items()}


def _unflatten_optimizer(opt: torch.optim.Optimizer, state: dict[str, Tensor]) -> None:
    sd = opt.state_dict()
    moments: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            moments.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": moments, "param_groups": sd["param_groups"]})


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% (Loshchilov & Hutter 2017)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def make_batch(config: TrainConfig, step: int, rank: int, text_encoder: TextEncoder, tokenizer: Tokenizer,
               vae: Optional[VAE], device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Step ``step``'s training batch: (x0 (B, C, H, W), cond (B, L, D), t (B,), noise like x0).

    Seeded by (seed, step, rank) only, so a resumed run draws exactly what the first one would have.
    """
    data_seed = (config.seed * SEED_STRIDE + step) * 64 + rank
    shapes = ShapesConfig(resolution=config.resolution, max_objects=config.max_objects, p_two=config.p_two,
                          holdout=config.holdout)
    images, captions, _ = make_shapes(config.batch_size, shapes, seed=data_seed)
    g = torch.Generator().manual_seed(data_seed)
    # 1. classifier-free guidance dropout: some captions become the empty prompt (Ho & Salimans 2022)
    drop = torch.rand(len(captions), generator=g) < config.cond_dropout
    captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    cond = encode_prompts(text_encoder, tokenizer, captions, device)  # (B, L, D)
    x0 = images.to(device)  # (B, 3, H, W)
    if vae is not None:
        x0 = to_latent(vae, x0)  # (B, C_lat, H/f, W/f)
    # 2. a random timestep and noise per image (Ho et al. 2020, alg. 1)
    t = torch.randint(0, config.T, (x0.shape[0],), generator=g).to(device)  # (B,)
    noise = torch.randn(x0.shape, generator=g).to(device)  # like x0
    return x0, cond, t, noise


def diffusion_loss(model: Any, schedule: Any, x0: Tensor, t: Tensor, noise: Tensor, cond: Optional[Tensor],
                   prediction_type: str = "eps") -> Tensor:
    """Mean squared error between the model's output on x_t = q_sample(x0, t, noise) and its target.

    x0, noise: (B, ...); t: (B,); cond: (B, L, D) or None. The simple loss of Ho et al. 2020 (eq. 14)
    for eps; the same regression on x0 or v for the other objectives (Salimans & Ho 2022).
    """
    xt = q_sample(schedule, x0, t, noise)
    target = training_target(schedule, x0, noise, t, prediction_type)
    return F.mse_loss(model(xt, t, cond).to(target.dtype), target)  # bf16 autocast output back to fp32


def build_unet(config: TrainConfig, channels: int, text_dim: int) -> UNet:
    """The U-Net of ``config.unet`` sized for ``channels`` inputs and ``text_dim``-wide tokens."""
    overrides = {"in_channels": channels, "text_dim": text_dim, "prediction_type": config.prediction_type,
                 **config.unet_overrides}
    return UNet(UNetConfig.from_preset(config.unet, **overrides))


def train_denoiser(
    config: TrainConfig,
    out_dir: str | Path,
    text_encoder: TextEncoder,
    tokenizer: Tokenizer,
    vae: Optional[VAE] = None,
    device: str = "auto",
    resume: bool = False,
    max_minutes: Optional[float] = None,
    progress: bool = True,
    sample_fn: Any = None,
    stop_after: Optional[int] = None,
) -> dict[str, Any]:
    """Train a U-Net denoiser on shapes; returns {"step", "loss", "seconds", "images_per_s"}.

    ``sample_fn(unet, step)`` (optional) is called every ``config.sample_every`` steps with the EMA
    model, e.g. to write a grid. ``stop_after`` ends this call after that many steps (with a
    checkpoint), as a kill would, without changing the run's schedule. Under torchrun the model is wrapped in DistributedDataParallel and
    each rank draws its own data; only rank 0 writes files.
    """
    out = Path(out_dir)
    dev = pick_device(device)
    rank, world = _distributed()
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", rank % torch.cuda.device_count())
    channels = vae.config.latent_channels if vae is not None else 3
    torch.manual_seed(config.seed)
    unet = build_unet(config, channels, text_encoder.config.dim).to(dev)
    ema = build_unet(config, channels, text_encoder.config.dim).to(dev).eval()
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = make_schedule(config.schedule, config.T)
    text_encoder, vae = text_encoder.to(dev).eval(), (vae.to(dev).eval() if vae is not None else None)
    step, loss_value, sampled_step = 0, float("nan"), None
    if resume and checkpoint_exists(out / "train_state"):
        state, meta = load_checkpoint(out / "train_state", map_location=dev, verify=False)
        load_into(unet, {k[6:]: v for k, v in state.items() if k.startswith("model.")}, "U-Net")
        load_into(ema, {k[4:]: v for k, v in state.items() if k.startswith("ema.")}, "EMA U-Net")
        _unflatten_optimizer(opt, state)
        step, loss_value = meta["extra"]["step"], meta["extra"].get("loss", loss_value)
        sampled_step = read_metadata(out / "unet", verify=False)["extra"].get("step") if checkpoint_exists(out / "unet") else None
        if sampled_step is not None and sampled_step > step:
            raise ValueError(f"{out / 'unet.safetensors'} is at step {sampled_step} but {out / 'train_state.safetensors'} "
                             f"is at step {step}: they are not from one run; restore the pair or start a new --out")
    model = torch.nn.parallel.DistributedDataParallel(unet) if world > 1 else unet
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    def checkpoint(at: int) -> None:
        if rank != 0:
            return
        tensors = {**{f"model.{k}": v for k, v in unet.state_dict().items()},
                   **{f"ema.{k}": v for k, v in ema.state_dict().items()}, **_flatten_optimizer(opt)}
        info = {"step": at, "loss": loss_value, "train_config": dataclasses.asdict(config),
                "unet_config": dataclasses.asdict(unet.config)}
        save_checkpoint(out / "train_state", tensors, unet.config, info)
        save_checkpoint(out / "unet", ema, ema.config, {"kind": "unet", **info})
        write_run_manifest(out)

    if resume and step and sampled_step != step:  # killed between the two saves: the EMA weights are in train_state
        checkpoint(step)
    elif resume and step and rank == 0:  # killed before the manifest was rewritten: it lists the files resumed from
        write_run_manifest(out)
    start, seen, first = time.perf_counter(), 0, step
    bar = tqdm(total=config.steps, initial=step, desc="train U-Net", disable=not progress or rank != 0)
    while step < config.steps:
        x0, cond, t, noise = make_batch(config, step, rank, text_encoder, tokenizer, vae, dev)
        torch.manual_seed(config.seed * SEED_STRIDE + step)  # dropout masks, also reproducible on resume
        for group in opt.param_groups:
            group["lr"] = lr_at(config, step)
        # 3. noise the batch and regress on the objective's target
        with autocast:
            loss = diffusion_loss(model, schedule, x0, t, noise, cond, config.prediction_type)
        loss_value = loss.item()
        if not math.isfinite(loss_value) or loss_value > LOSS_EXPLODED:
            raise TrainingDiverged(f"loss became {loss_value} at step {step}; the last good checkpoint "
                                   f"in {out} is kept. Lower lr (now {config.lr}) or grad_clip.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), config.grad_clip)
        opt.step()
        # 4. exponential moving average of the weights, used for sampling (Song & Ermon 2020); the
        #    decay warms up as in TensorFlow's ExponentialMovingAverage(num_updates), so a short run's
        #    EMA is not mostly its random initial weights
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), unet.parameters()):
                p_ema.lerp_(p, 1 - decay)
        step += 1
        seen += x0.shape[0] * world
        elapsed = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", img_per_s=f"{seen / elapsed:.0f}")
        out_of_time = (max_minutes is not None and elapsed > 60 * max_minutes) or step - first == stop_after
        if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
            checkpoint(step)
        if sample_fn is not None and rank == 0 and config.sample_every and step % config.sample_every == 0:
            sample_fn(ema, step)
        if out_of_time:
            break
    bar.close()
    seconds = time.perf_counter() - start
    return {"step": step, "loss": loss_value, "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9)}


SAMPLE_PROMPTS = (
    "a large red circle at the top left on a blue background",
    "a small green square at the bottom right on a black background",
    "a large yellow triangle at the center on a gray background",
    "a small purple diamond at the top right on a white background",
)


def train_preset(preset: str | TrainConfig, out_dir: str | Path, device: str = "auto", resume: bool = False,
                 max_minutes: Optional[float] = None, progress: bool = True) -> dict[str, Any]:
    """Train everything a preset needs, from scratch, in stages: text encoder, VAE (latent only), U-Net.

    A stage whose checkpoint already exists in ``out_dir`` is reused, so ``resume=True`` after a kill
    skips finished stages and continues the U-Net from its last checkpoint. ``max_minutes`` bounds
    the U-Net stage. Returns the timings of each stage.
    """
    from minidiff.pipeline import Pipeline
    from minidiff.text import load_text_encoder, save_text_encoder, train_clip
    from minidiff.vae import VAEConfig, load_vae, save_vae, train_vae
    from minidiff.viz import save_grid

    config = train_config(preset) if isinstance(preset, str) else preset
    pick_device(device)  # an unavailable device is refused before any folder is made
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, _ = _distributed()
    timings: dict[str, Any] = {}
    if not checkpoint_exists(out / "text_encoder"):
        start = time.perf_counter()
        clip = train_clip(config.text_preset, steps=config.text_steps, seed=config.seed, device=device,
                          resolution=config.resolution, progress=progress and rank == 0)
        if rank == 0:
            save_text_encoder(clip, clip.tokenizer, out / "text_encoder")
            write_run_manifest(out)
        timings["text_encoder_s"] = time.perf_counter() - start
    text_encoder, tokenizer = load_text_encoder(out / "text_encoder")
    vae = None
    if config.latent:
        if not checkpoint_exists(out / "vae"):
            start = time.perf_counter()
            trained = train_vae(VAEConfig.from_preset(config.vae_preset), steps=config.vae_steps,
                                batch_size=config.vae_batch_size, seed=config.seed, device=device,
                                resolution=config.resolution, progress=progress and rank == 0)
            if rank == 0:
                save_vae(trained, str(out / "vae"))
                write_run_manifest(out)
            timings["vae_s"] = time.perf_counter() - start
        vae = load_vae(str(out / "vae"))
    schedule = make_schedule(config.schedule, config.T)

    def write_grid(ema: UNet, step: int) -> None:
        pipe = Pipeline(ema, text_encoder, tokenizer, schedule, vae, config.resolution)
        images = pipe([p for p in SAMPLE_PROMPTS for _ in range(2)], seeds=0, steps=20)
        save_grid(images, out / "samples" / f"step_{step:06d}.png", nrow=2, scale=4)

    result = train_denoiser(config, out, text_encoder, tokenizer, vae, device=device, resume=resume,
                            max_minutes=max_minutes, progress=progress, sample_fn=write_grid)
    timings.update(unet_s=result["seconds"], **result)
    return timings
