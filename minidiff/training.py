"""The one training loop every stage trains with (judge, text encoder, VAE, U-Net), and the U-Net stage.

Every stage hands ``fit`` the same three things, wrapped in a ``Stage``: its model, its loss and its
batches. ``fit`` does the rest the same way for all of them:

    for step in range(steps):
        batch = stage.batch(step, rank)              # seeded by the step: resume sees the same data
        loss = stage.loss(model, batch)
        (divergence check, checkpoint of healthy weights)
        loss.backward(); clip gradients; AdamW step  # lr: linear warm-up, then cosine decay
        EMA of the weights (where asked)

Checkpoints hold the weights, the EMA weights, the optimiser moments and the step in one file,
written atomically, so a killed run resumes exactly (bitwise on CPU). Under ``torchrun`` the model
is wrapped in DistributedDataParallel and each rank draws its own batches; rank 0 writes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from minidiff.checkpoint import (
    checkpoint_exists,
    load_checkpoint,
    load_into,
    save_checkpoint,
    write_run_manifest,
)

if TYPE_CHECKING:
    from minidiff.runs import TrainConfig

LOSS_EXPLODED = 1e4  # a loss this far above any stage's starting loss means the run has blown up
DIVERGED_FACTOR = 20.0  # smoothed loss this many times its best so far: diverged
UNHEALTHY_FACTOR = 5.0  # a checkpoint is written only while the step's loss is within 5x the best
SMOOTHING = 0.98  # exponential smoothing of the loss for the divergence test
LOSS_FLOOR = 1e-12  # "best" is never taken below this, so a loss of exactly 0 does not make every loss a jump
MIN_LR_SHARE = 0.1  # the cosine decays to 10% of the peak learning rate
SEED_STRIDE = 1_000_003  # a prime: step s of seed k draws data with seed k * SEED_STRIDE + s


def step_seed(seed: int, step: int, rank: int | None = None) -> int:
    """The seed of step ``step`` of a run seeded ``seed``: ``seed * SEED_STRIDE + step``; with a ``rank``,
    ``that * 64 + rank``, so each of up to 64 ranks draws its own batch. Resume sees the same seeds."""
    base = seed * SEED_STRIDE + step
    return base if rank is None else base * 64 + rank


class TrainingDiverged(RuntimeError):
    """The loss became NaN or exploded; the message names the last healthy checkpoint, if any."""


@dataclass
class Stage:
    """What one stage brings to the loop: a model, a loss ``loss(model, batch) -> scalar`` and batches
    ``batch(step, rank)``, plus its optimiser recipe."""

    name: str
    model: nn.Module
    loss: Callable[[nn.Module, Any], Tensor]
    batch: Callable[[int, int], Any]
    steps: int
    lr: float
    batch_size: int
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # gradient-norm clipping, as in Ho et al. 2020's code
    ema_decay: float | None = None  # None: no EMA copy
    min_lr_share: float = MIN_LR_SHARE  # the cosine ends at this share of lr
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"{self.name}: steps={self.steps}, batch_size={self.batch_size} and "
                             f"lr={self.lr} must be > 0")


def lr_at(stage: Stage, step: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_share`` of the peak (Loshchilov & Hutter 2017)."""
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    progress = min(1.0, (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps))
    share = stage.min_lr_share
    return stage.lr * (share + (1 - share) * 0.5 * (1 + math.cos(math.pi * progress)))


def distributed() -> tuple[int, int]:
    """(rank, world size) when launched by torchrun, else (0, 1); initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def _mean_over_ranks(value: float, world: int, device: torch.device) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], device=device)
    torch.distributed.all_reduce(t)
    return t.item() / world


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    """AdamW's per-parameter moments as flat named tensors (safetensors stores no nesting)."""
    return {f"opt.{i}.{k}": torch.as_tensor(v)
            for i, s in opt.state_dict()["state"].items() for k, v in s.items()}


def _load_optimizer(opt: torch.optim.Optimizer, state: dict[str, Tensor]) -> None:
    moments: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            moments.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": moments, "param_groups": opt.state_dict()["param_groups"]})


def fit(stage: Stage, out: Path | None = None, checkpoint_every: int = 0, resume: bool = False,
        max_minutes: float | None = None, progress: bool = True, stop_after: int | None = None,
        every: tuple[int, Callable[[nn.Module, int], None]] | None = None, device: torch.device | None = None,
        meta: dict[str, Any] | None = None,
        on_checkpoint: Callable[[nn.Module, int], None] | None = None) -> dict[str, Any]:
    """Train ``stage.model`` in place; return {"step", "loss", "seconds", "images_per_s", "losses"}.

    ``out``: folder of the checkpoint ``<out>/<name>_state`` (None: no checkpoints), written every
    ``checkpoint_every`` steps, at the end and when time runs out. ``resume`` continues from it.
    ``stop_after`` ends this call after that many steps (with a checkpoint), as a kill would.
    ``every = (n, fn)`` calls ``fn(model_to_sample, step)`` every n steps on rank 0 (the EMA if any);
    ``on_checkpoint(model_to_sample, step)`` runs after each checkpoint, on rank 0. ``meta`` goes into
    the checkpoint's metadata. The trained weights (the EMA copy where there is one) end up in
    ``stage.model``.
    """
    device = device or next(stage.model.parameters()).device
    rank, world = distributed()
    model = stage.model.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if stage.ema_decay is not None else None
    opt = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    path = out / f"{stage.name}_state" if out is not None else None
    step, smooth, best, losses, last_healthy = 0, None, math.inf, [], None
    if resume and path is not None and checkpoint_exists(path):
        # the manifest lists finished stages
        state, saved = load_checkpoint(path, map_location=device, verify=False)
        load_into(model, {k[6:]: v for k, v in state.items() if k.startswith("model.")}, stage.name)
        if ema is not None:
            load_into(ema, {k[4:]: v for k, v in state.items() if k.startswith("ema.")}, f"EMA {stage.name}")
        _load_optimizer(opt, state)
        info = saved["extra"]
        step, smooth, best, losses = info["step"], info["smooth"], info["best"], info["losses"]
        last_healthy = info["step"]
        if on_checkpoint is not None and rank == 0:  # a kill may have come between the state and what follows
            on_checkpoint(ema if ema is not None else model, step)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    def checkpoint(at: int) -> None:
        nonlocal last_healthy
        last_healthy = at
        if rank != 0 or path is None:
            return
        tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **_optimizer_tensors(opt),
                   **({f"ema.{k}": v for k, v in ema.state_dict().items()} if ema is not None else {})}
        save_checkpoint(path, tensors, {},
                        {"step": at, "loss": losses[-1] if losses else None, "smooth": smooth,
                                            "best": best, "losses": losses, **(meta or {})})
        if on_checkpoint is not None:
            on_checkpoint(ema if ema is not None else model, at)

    start, seen, first = time.perf_counter(), 0, step
    bar = tqdm(total=stage.steps, initial=step, desc=f"train {stage.name}", disable=not progress or rank != 0)
    model.train()
    while step < stage.steps:
        batch = stage.batch(step, rank)
        torch.manual_seed(step_seed(stage.seed, step))  # dropout masks, also reproducible on resume
        for group in opt.param_groups:
            group["lr"] = lr_at(stage, step)
        with autocast:
            loss = stage.loss(wrapped, batch)
        value = _mean_over_ranks(loss.item(), world, device)
        # 1. divergence: a NaN, an explosion, or the smoothed loss far above its best
        smooth = (value if smooth is None or not math.isfinite(smooth)
                  else SMOOTHING * smooth + (1 - SMOOTHING) * value)
        best = max(LOSS_FLOOR, min(best, smooth))
        if not math.isfinite(value) or value > LOSS_EXPLODED or smooth > DIVERGED_FACTOR * best:
            bar.close()  # so the message starts on a line of its own
            kept = (f"the last healthy checkpoint, step {last_healthy}, is kept in {path}"
                    if last_healthy is not None and path is not None else "no healthy checkpoint exists")
            raise TrainingDiverged(f"{stage.name} training diverged at step {step}: loss {value:.4g} "
                                   f"(smoothed {smooth:.4g}, best {best:.4g}); {kept}. Lower its lr (now "
                                   f"{stage.lr:g}).")
        # 2. checkpoint the weights that just produced this healthy loss, before they change
        healthy = value <= UNHEALTHY_FACTOR * best
        if checkpoint_every and step % checkpoint_every == 0 and step > first and healthy:
            checkpoint(step)
        # 3. one optimiser step with clipped gradients
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), stage.grad_clip)
        opt.step()
        # 4. EMA of the weights (Song & Ermon 2020); its decay warms up as in TensorFlow's
        #    ExponentialMovingAverage(num_updates), so a short run's EMA is not its random start
        if ema is not None:
            decay = min(stage.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters()):
                    p_ema.lerp_(p, 1 - decay)
                for b_ema, b in zip(ema.buffers(), model.buffers()):
                    b_ema.copy_(b)
        step += 1
        losses.append(round(value, 6))
        seen += stage.batch_size * world
        elapsed = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", img_per_s=f"{seen / elapsed:.0f}")
        out_of_time = (max_minutes is not None and elapsed > 60 * max_minutes) or step - first == stop_after
        if step == stage.steps or out_of_time:
            checkpoint(step)
        if every is not None and rank == 0 and every[0] and step % every[0] == 0:
            every[1](ema if ema is not None else model.eval(), step)
            model.train()
        if out_of_time:
            break
    bar.close()
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    seconds = time.perf_counter() - start
    return {"step": step, "loss": losses[-1] if losses else math.nan, "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9), "losses": losses, "finished": step >= stage.steps}


def diffusion_loss(model: Any, schedule: Any, x0: Tensor, t: Tensor, noise: Tensor, cond: Tensor | None,
                   prediction_type: str = "eps") -> Tensor:
    """Mean squared error between the model's output on x_t = q_sample(x0, t, noise) and its target.

    x0, noise: (B, ...); t: (B,); cond: (B, L, D) or None. The simple loss of Ho et al. 2020 (eq. 14)
    for eps; the same regression on x0 or v for the other objectives (Salimans & Ho 2022).
    """
    from minidiff.schedule import q_sample, training_target

    xt = q_sample(schedule, x0, t, noise)
    target = training_target(schedule, x0, t, noise, prediction_type)
    return F.mse_loss(model(xt, t, cond).to(target.dtype), target)  # bf16 autocast output back to fp32


def build_unet(config: TrainConfig, channels: int, text_dim: int) -> nn.Module:
    """The U-Net of ``config.unet`` sized for ``channels`` inputs and ``text_dim``-wide tokens."""
    from minidiff.unet import UNet, UNetConfig

    overrides = {"in_channels": channels, "text_dim": text_dim, "prediction_type": config.prediction_type,
                 **config.unet_overrides}
    return UNet(UNetConfig.from_preset(config.unet, **overrides))


def unet_stage(config: TrainConfig, source: Any, text_encoder: nn.Module, tokenizer: Any,
               vae: nn.Module | None, device: torch.device) -> Stage:
    """The denoiser stage: captions -> frozen text encoder (a share dropped to "", so the same network
    learns the unconditional model guidance needs), images -> (VAE latents), noised by the schedule."""
    from minidiff.schedule import make_schedule
    from minidiff.text import encode_prompts
    from minidiff.vae import to_latent

    channels = vae.config.latent_channels if vae is not None else source.channels
    torch.manual_seed(config.seed)
    unet = build_unet(config, channels, text_encoder.config.dim).to(device)
    if config.init is not None:  # fine-tuning: start from another run's U-Net (its EMA weights)
        from minidiff.runs import init_folder

        state, _ = load_checkpoint(init_folder(config.init) / "unet", map_location=device)
        # a text refiner the init lacks keeps its identity initialisation (see UNetConfig.text_layers)
        new = {k: v for k, v in unet.state_dict().items() if k.startswith("text_refiner.") and k not in state}
        load_into(unet, {**state, **new},
                  f"U-Net of init={config.init!r} (it must have this run's U-Net config)")
    schedule = make_schedule(config.schedule, config.T)
    text_encoder = text_encoder.to(device).eval()
    vae = vae.to(device).eval() if vae is not None else None

    def batch(step: int, rank: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        data_seed = step_seed(config.seed, step, rank)
        images, captions = source.batch(config.batch_size, data_seed)  # (B, C, H, W), B captions
        g = torch.Generator().manual_seed(data_seed)
        # 1. classifier-free guidance dropout: some captions become the empty prompt (Ho & Salimans 2022)
        drop = torch.rand(len(captions), generator=g) < config.cond_dropout
        cond = encode_prompts(text_encoder, tokenizer,
                              ["" if d else c for c, d in zip(captions, drop.tolist())], device)  # (B, L, D)
        x0 = images.to(device) if vae is None else to_latent(vae, images.to(device))  # (B, C', h, w)
        # 2. a random timestep and noise per image (Ho et al. 2020, alg. 1)
        t = torch.randint(0, config.T, (x0.shape[0],), generator=g).to(device)  # (B,)
        noise = torch.randn(x0.shape, generator=g).to(device)  # like x0
        return x0, cond, t, noise

    def loss(model: nn.Module, b: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        x0, cond, t, noise = b
        return diffusion_loss(model, schedule, x0, t, noise, cond, config.prediction_type)

    return Stage("unet", unet, loss, batch, config.steps, config.lr, config.batch_size, config.warmup_steps,
                 config.weight_decay, config.grad_clip, config.ema_decay, config.seed)


def train_denoiser(config: TrainConfig, out_dir: str | Path, text_encoder: nn.Module, tokenizer: Any,
                   vae: nn.Module | None = None, device: str = "auto", resume: bool = False,
                   max_minutes: float | None = None, progress: bool = True, sample_fn: Any = None,
                   stop_after: int | None = None, source: Any = None) -> dict[str, Any]:
    """Train the U-Net stage with ``fit``; save its EMA weights as ``<out>/unet``; return fit's numbers.

    ``sample_fn(unet, step)`` is called every ``config.sample_every`` steps with the EMA model.
    """
    from minidiff.checkpoint import pick_device

    out, dev = Path(out_dir), pick_device(device)
    rank, world = distributed()
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", rank % torch.cuda.device_count())
    from minidiff.runs import make_source

    stage = unet_stage(config, source or make_source(config), text_encoder, tokenizer, vae, dev)
    info = {"train_config": dataclasses.asdict(config), "unet_config": dataclasses.asdict(stage.model.config)}

    def save_unet(ema: nn.Module, step: int) -> None:  # the EMA weights that sampling loads, beside the state
        save_checkpoint(out / "unet", ema, ema.config, {"kind": "unet", "step": step, **info})
        write_run_manifest(out)

    return fit(stage, out, config.checkpoint_every, resume, max_minutes, progress, stop_after,
               (config.sample_every, sample_fn) if sample_fn is not None else None, dev, info, save_unet)
