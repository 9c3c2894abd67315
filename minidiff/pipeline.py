"""Prompt -> tokens -> embedding -> seeded latent noise -> sampler with guidance -> VAE decode.

``Pipeline.__call__`` is the whole generation loop of a text-to-image model, one numbered stage
at a time. The same class runs pixel-space models (``vae=None``) and latent ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from minidiff.checkpoint import (
    checkpoint_exists,
    load_checkpoint,
    load_into,
    pick_device,
    verify_run_manifest,
)
from minidiff.guidance import cfg_combine
from minidiff.sampling import Callback, make_step, make_timesteps
from minidiff.schedule import NoiseSchedule, make_schedule, predict_eps, predict_x0, q_sample
from minidiff.text import TextEncoder, Tokenizer, encode_prompts, load_text_encoder
from minidiff.unet import UNet, UNetConfig
from minidiff.vae import VAE, from_latent, load_vae, to_latent

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class Pipeline:
    """A text encoder, a denoising U-Net, a noise schedule and (for latent diffusion) a VAE."""

    unet: UNet
    text_encoder: TextEncoder
    tokenizer: Tokenizer
    schedule: NoiseSchedule
    vae: VAE | None = None
    resolution: int = 32

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def size_multiple(self) -> int:
        """Heights and widths must be multiples of this: U-Net downsampling times VAE downsampling."""
        f = self.vae.config.downsample_factor if self.vae is not None else 1
        return f * self.unet.config.downsample_factor

    def check_size(self, height: int, width: int) -> None:
        """Raise a ValueError naming the size if the VAE and U-Net cannot take it."""
        m = self.size_multiple
        for name, v in (("height", height), ("width", width)):
            if not isinstance(v, int) or v < m or v % m:
                raise ValueError(f"{name}={v} is not allowed: this pipeline needs multiples of {m} "
                                 f"(e.g. {m}, {2 * m}, {self.resolution}, {2 * self.resolution}); "
                                 f"it was trained at {self.resolution}x{self.resolution}")

    def encode(self, prompts: Sequence[str]) -> Tensor:
        """Prompts -> per-token embeddings (B, L, D) from the frozen text encoder."""
        return encode_prompts(self.text_encoder, self.tokenizer, list(prompts), self.device)

    def decode(self, x: Tensor) -> Tensor:
        """Latents (or pixels) (B, C, h, w) -> pixels (B, 3, H, W) in [-1, 1]."""
        return from_latent(self.vae, x) if self.vae is not None else x.clamp(-1, 1)

    @torch.no_grad()
    def __call__(
        self,
        prompts: str | Sequence[str],
        seeds: int | Sequence[int] = 0,
        steps: int = 20,
        sampler: str = "dpmpp_2m",
        guidance_scale: float = 3.0,
        negative_prompt: str = "",
        height: int | None = None,
        width: int | None = None,
        init_images: Tensor | None = None,
        strength: float = 0.6,
        eta: float = 0.0,
        spacing: str = "trailing",
        callback: Callback | None = None,
    ) -> Tensor:
        """Generate one image per prompt: returns (B, 3, H, W) in [-1, 1].

        ``seeds``: one per image (an int s gives s, s+1, ...). ``init_images`` (B, 3, H, W) turns this
        into image-to-image: they are noised to ``strength`` of the way and denoised from there.
        ``callback(i, t, xt, x0_pred, eps_pred)`` sees every step, with x0_pred decoded to pixels.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError('prompts is empty; pass at least one prompt ("" for an unconditional image)')
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale={guidance_scale} is not allowed; it must be >= 0")
        seeds = list(range(seeds, seeds + len(prompts))) if isinstance(seeds, int) else list(seeds)
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; "
                             "pass one seed per prompt or one int")
        height, width = height or self.resolution, width or self.resolution
        self.check_size(height, width)
        f = self.vae.config.downsample_factor if self.vae is not None else 1
        channels = self.unet.config.in_channels
        # 1. prompt -> tokens -> per-token embeddings; the negative prompt is the "unconditional" branch
        cond = self.encode(prompts)  # (B, L, D)
        uncond = self.encode([negative_prompt]).expand_as(cond)  # (B, L, D)
        # 2. one generator per image, so each image depends on its own seed only
        generators = [torch.Generator(self.device).manual_seed(s) for s in seeds]
        noise = torch.stack([torch.randn(channels, height // f, width // f, generator=g, device=self.device)
                             for g in generators])  # (B, C, h, w)
        # 3. the schedule plans the timesteps; image-to-image starts part-way down
        timesteps = make_timesteps(self.schedule.T, steps, spacing)
        x = noise
        if init_images is not None:
            if not 0 < strength <= 1:
                raise ValueError(f"strength={strength} must lie in (0, 1]: the share of the steps to run")
            init = init_images.to(self.device)
            z0 = to_latent(self.vae, init) if self.vae is not None else init  # (B, C, h, w)
            if z0.shape != noise.shape:
                raise ValueError(f"init_images give latents of shape {tuple(z0.shape)}; "
                                 f"expected {tuple(noise.shape)}")
            timesteps = timesteps[steps - max(1, round(steps * strength)):]
            x = q_sample(self.schedule, z0, timesteps[:1].expand(len(prompts)).to(self.device), noise)

        # 4. the model at one timestep: predict both branches, guide, read off x0_pred and eps_pred
        def denoise(xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
            """The guided U-Net at timestep t: (x0_pred, eps_pred), each (B, C, h, w)."""
            t_batch = torch.full((len(xt),), t, dtype=torch.long, device=self.device)  # (B,)
            if guidance_scale == 1.0:  # the conditional prediction alone
                pred = self.unet(xt, t_batch, cond)  # (B, C, h, w)
            else:  # both branches in one batch, then guide (Ho & Salimans 2022, eq. 6)
                both = self.unet(torch.cat([xt, xt]), torch.cat([t_batch, t_batch]),
                                 torch.cat([uncond, cond]))  # (2B, C, h, w)
                pred = cfg_combine(*both.chunk(2), guidance_scale)  # (B, C, h, w)
            return (predict_x0(self.schedule, pred, xt, t_batch, self.unet.prediction_type),
                    predict_eps(self.schedule, pred, xt, t_batch, self.unet.prediction_type))

        # 5. the denoising loop, the same as sampling.sample's: predict and guide, show, step
        step = make_step(self.schedule, sampler, denoise, generators, eta)  # the sampler's update rule
        ts = timesteps.tolist()
        for i, (t, t_prev) in enumerate(zip(ts, ts[1:] + [-1])):  # t_prev = -1: the clean end
            x0_pred, eps_pred = denoise(x, t)
            if callback is not None:
                callback(i, t, x, self.decode(x0_pred), eps_pred)
            x = step(x, x0_pred, eps_pred, t, t_prev)
        # 6. decode the final latent to pixels
        return self.decode(x)


def verify_manifest(weights_dir: Path = WEIGHTS_DIR) -> dict:
    """Check every file in ``manifest.json`` exists with the listed sha256; return the manifest."""
    if not (weights_dir / "manifest.json").is_file():
        raise ValueError(f"no weights manifest at {weights_dir / 'manifest.json'}; reinstall minidiff or "
                         "train with `python -m minidiff train --preset shapes-latent`")
    return verify_run_manifest(weights_dir, required=True)


def load_unet(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """Load a U-Net checkpoint written by training; returns (unet in eval mode, its extra metadata)."""
    state, meta = load_checkpoint(path, map_location=device)
    unet = UNet(UNetConfig(**meta["config"])).to(device)
    return load_into(unet, state, "U-Net").eval(), meta["extra"]


def load_pipeline(path: str | Path | None = None, device: str = "auto") -> Pipeline:
    """The shipped shapes pipeline (``path=None``, checked against its manifest) or a training run's folder.

    A folder holds ``unet``, ``text_encoder`` and, for latent diffusion, ``vae`` checkpoints.
    """
    folder = WEIGHTS_DIR if path is None else Path(path)
    if path is None:
        verify_manifest(folder)
    elif not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; pass a training run's output folder "
                         "or None for the shipped weights")
    dev = pick_device(device)
    unet, extra = load_unet(folder / "unet", dev)
    text_encoder, tokenizer = load_text_encoder(folder / "text_encoder")
    train = extra.get("train_config", {})
    latent = train.get("latent", checkpoint_exists(folder / "vae"))
    vae = load_vae(str(folder / "vae"), str(dev)) if latent else None
    schedule = make_schedule(train.get("schedule", "cosine"), train.get("T", 1000))
    return Pipeline(unet, text_encoder.to(dev), tokenizer, schedule, vae, train.get("resolution", 32))
