"""A toy KL-regularised autoencoder: the "first stage" of latent diffusion (Rombach et al. 2022).

The encoder maps an image (B, 3, H, W) to a diagonal Gaussian over latents (B, C_lat, H/f, W/f);
the decoder maps a latent back to pixels. Training minimises a reconstruction loss plus a tiny
KL term (Rombach et al. 2022, sec. 3 and appendix G: kl_weight ~ 1e-6), so the latent space stays
close to N(0, I) in shape but its scale is free; ``scale_factor`` = 1 / std(latents) fixes the
scale so that diffusion sees unit-variance latents (Rombach et al. 2022, sec. 4.3.2).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.checkpoint import load_checkpoint, load_into, pick_device, save_checkpoint
from minidiff.layers import Downsample, Upsample

LOGVAR_INIT = -8.0  # initial log sigma^2 of q(z|x): sigma = 0.02, nearly deterministic at the start
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # clamp on log sigma^2, as in the LDM DiagonalGaussian
SCALE_SAMPLES = 512  # images used to estimate scale_factor after training
SCALE_SEED = 2**61  # their batch's seed, far from training batches' seeds
WEIGHTS = Path(__file__).parent / "weights" / "vae"  # the shipped VAE (.safetensors + .json)
EVAL_SEED = 1  # default seed of the evaluation images, below TRAIN_SEED_STRIDE
TRAIN_SEED_STRIDE = 2**32  # training batches use seeds >= this; smaller seeds are free for evaluation
WARMUP_STEPS = 100  # linear warm-up of Adam's learning rate
GRAD_CLIP = 1.0  # gradient-norm clipping: without it lr 1e-3 diverged near step 1000 at 2 threads


@dataclass
class VAEConfig:
    """Hyper-parameters of the toy VAE; ``downsample_factor`` f = 2 ** (len(channel_mult) - 1)."""

    in_channels: int = 3
    latent_channels: int = 4  # Rombach et al. 2022 use c = 4 for f4/f8
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 4)  # one level per entry; downsample between levels
    num_res_blocks: int = 1
    kl_weight: float = 1e-6  # Rombach et al. 2022, appendix G
    lr: float = 1e-3  # AdamW with warm-up and clipping (benchmarks/vae_seeds.py checks seeds and threads)
    scale_factor: float = 1.0  # set by estimate_scale_factor after training

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        if self.latent_channels < 1 or self.base_channels < 1 or not self.channel_mult:
            raise ValueError(f"latent_channels={self.latent_channels} and base_channels={self.base_channels} "
                             f"must be >= 1 and channel_mult={self.channel_mult} non-empty")

    @property
    def downsample_factor(self) -> int:
        """f: how many pixels per side one latent cell covers."""
        return 2 ** (len(self.channel_mult) - 1)

    @classmethod
    def from_preset(cls, name: str) -> VAEConfig:
        """The config called ``name``; see ``PRESETS``."""
        if name not in PRESETS:
            raise ValueError(f"VAE preset {name!r} is not known; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name])


PRESETS: dict[str, VAEConfig] = {
    "f4": VAEConfig(channel_mult=(1, 2, 4)),  # 32x32x3 -> 8x8x4: 12x fewer numbers
    "f8": VAEConfig(channel_mult=(1, 2, 4, 4)),  # 32x32x3 -> 4x4x4: 48x fewer numbers
}


class _ResBlock(nn.Module):
    """SiLU -> conv, twice, plus a (1x1 conv) skip (He et al. 2016); the second conv starts at zero,
    so every block starts as the identity (Goyal et al. 2017; Zhang et al. 2019, "Fixup").

    Like ``layers.ResBlock`` but without the timestep embedding (an autoencoder has no ``t``) and
    without GroupNorm, which with one channel per group erases each image's colours.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.conv1(F.silu(x))))  # (B, c_out, H, W)
        return self.skip(x) + h


def _head(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))


class VAE(nn.Module):
    """Convolutional encoder/decoder with a diagonal Gaussian posterior q(z | x) (Kingma & Welling 2014)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_channels * m for m in config.channel_mult]
        enc: list[nn.Module] = [nn.Conv2d(config.in_channels, widths[0], 3, padding=1)]
        c = widths[0]
        for level, w in enumerate(widths):
            for _ in range(config.num_res_blocks):
                enc.append(_ResBlock(c, w))
                c = w
            if level < len(widths) - 1:
                enc.append(Downsample(c))
        enc += [_ResBlock(c, c), _head(c, 2 * config.latent_channels)]
        self.encoder = nn.Sequential(*enc)
        # start with a narrow posterior: with logvar = 0 the sampled noise (std 1) would drown the
        # small initial means; kl_weight is too small to pull sigma back up either way
        nn.init.constant_(self.encoder[-1][1].bias[config.latent_channels:], LOGVAR_INIT)
        dec: list[nn.Module] = [nn.Conv2d(config.latent_channels, c, 3, padding=1), _ResBlock(c, c)]
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(config.num_res_blocks):
                dec.append(_ResBlock(c, w))
                c = w
            if level > 0:
                dec.append(Upsample(c))
        dec.append(_head(c, config.in_channels))
        self.decoder = nn.Sequential(*dec)

    @property
    def scale_factor(self) -> float:
        """1 / std of latent means on training data (Rombach et al. 2022, sec. 4.3.2)."""
        return self.config.scale_factor

    def check_size(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is (B, C_in, H, W) with H and W multiples of f."""
        f, c = self.config.downsample_factor, self.config.in_channels
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"VAE input must be (B, {c}, H, W); got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % f or w % f:
            raise ValueError(f"image size {h}x{w} cannot be encoded with downsample factor f={f}; "
                             f"height and width must be multiples of {f} (e.g. "
                             f"{f * math.ceil(h / f)}x{f * math.ceil(w / f)})")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) in [-1, 1] -> (mean, logvar), each (B, C_lat, H/f, W/f)."""
        self.check_size(x)
        moments = self.encoder(x)  # (B, 2 C_lat, H/f, W/f)
        mean, logvar = moments.chunk(2, dim=1)  # 2 x (B, C_lat, H/f, W/f)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def sample_latent(mean: torch.Tensor, logvar: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + sigma * eps, eps ~ N(0, I): the reparameterisation trick (Kingma & Welling 2014)."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return VAE.reparameterise(mean, logvar, eps)

    @staticmethod
    def reparameterise(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z = mean + exp(logvar / 2) * noise, each (B, C_lat, h, w) (Kingma & Welling 2014, sec. 2.4)."""
        return mean + torch.exp(0.5 * logvar) * noise

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C_lat, h, w) -> x (B, 3, h f, w f); not clamped."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"latent must be (B, {self.config.latent_channels}, h, w); got shape "
                             f"{tuple(z.shape)}")
        return self.decoder(z)

    @staticmethod
    def kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mean, exp(logvar)) || N(0, I)) per example, (B,): 0.5 sum(mu^2 + s^2 - 1 - log s^2)
        (Kingma & Welling 2014, appendix B)."""
        return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)  # (B,)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) -> (reconstruction (B, 3, H, W), mean, logvar) through a sampled z."""
        mean, logvar = self.encode(x)
        return self.decode(self.sample_latent(mean, logvar, generator)), mean, logvar


def vae_loss(vae: VAE, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-image summed squared error + kl_weight * KL, averaged over the batch: the negative ELBO
    of a Gaussian decoder, with the KL down-weighted as in Rombach et al. 2022 (appendix G).

    Squared error rather than LDM's L1: under L1 the median pixel is the background, which pulls
    short runs towards dropping small objects.
    """
    recon, mean, logvar = vae(x, generator)
    rec = (recon - x).pow(2).flatten(1).sum(1).mean()
    kl = vae.kl(mean, logvar).mean()
    return {"loss": rec + vae.config.kl_weight * kl, "rec": rec, "kl": kl,
            "mse": rec.detach() / x[0].numel()}


@torch.no_grad()
def to_latent(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Image (B, 3, H, W) -> scaled latent mean * scale_factor (B, C_lat, H/f, W/f): deterministic."""
    mean, _ = vae.encode(x)
    return mean * vae.scale_factor


@torch.no_grad()
def from_latent(vae: VAE, z: torch.Tensor) -> torch.Tensor:
    """Scaled latent (B, C_lat, h, w) -> image (B, 3, h f, w f) clamped to [-1, 1]."""
    return vae.decode(z / vae.scale_factor).clamp(-1.0, 1.0)


@torch.no_grad()
def estimate_scale_factor(vae: VAE, images: torch.Tensor, batch_size: int = 256) -> float:
    """1 / std of the latent means of ``images`` (N, 3, H, W) (Rombach et al. 2022, sec. 4.3.2)."""
    device = next(vae.parameters()).device
    means = [vae.encode(images[i:i + batch_size].to(device))[0] for i in range(0, len(images), batch_size)]
    return float(1.0 / torch.cat(means).float().std())


def vae_stage(config: VAEConfig, source: Any, steps: int, batch_size: int = 8, seed: int = 0) -> Any:
    """The VAE stage for the one training loop: a fresh VAE, ``vae_loss``, and source batches seeded
    ``(seed + 1) * TRAIN_SEED_STRIDE + step`` (seeds below the stride stay free for evaluation)."""
    from minidiff.training import Stage

    config = dataclasses.replace(config, in_channels=source.channels)
    torch.manual_seed(seed)
    vae = VAE(config)

    def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Generator]:
        data_seed = (seed + 1) * TRAIN_SEED_STRIDE + step * 64 + rank
        images, _ = source.batch(batch_size, data_seed)  # (B, C, H, W)
        return images, torch.Generator().manual_seed(data_seed)  # the generator draws z ~ q(z|x)

    def loss(model: nn.Module, b: tuple[torch.Tensor, torch.Generator]) -> torch.Tensor:
        x = b[0].to(next(model.parameters()).device)
        return vae_loss(model, x, b[1])["loss"]

    return Stage("vae", vae, loss, batch, steps, config.lr, batch_size, warmup_steps=min(WARMUP_STEPS, steps),
                 grad_clip=GRAD_CLIP, seed=seed)


def train_vae(config: VAEConfig, steps: int, batch_size: int = 8, seed: int = 0, device: str = "auto",
              resolution: int = 32, progress: bool = True, source: Any = None, out: Path | None = None,
              resume: bool = False) -> VAE:
    """Train a VAE with ``fit`` on ``source`` (shapes at ``resolution`` by default), then set
    ``config.scale_factor`` on one batch of its images. ``vae.train_steps``, ``vae.train_time_s``: its run."""
    from minidiff.data import ShapesSource
    from minidiff.shapes import ShapesConfig
    from minidiff.training import fit

    source = source or ShapesSource(ShapesConfig(resolution=resolution))
    stage = vae_stage(config, source, steps, batch_size, seed)
    result = fit(stage, out, checkpoint_every=500, resume=resume, progress=progress,
                 device=pick_device(device))
    vae = stage.model.eval()
    vae.train_steps, vae.train_time_s, vae.losses = result["step"], result["seconds"], result["losses"]
    # scale latents to unit std on images like the U-Net's (Rombach et al. 2022, sec. 4.3.2); not on held-out
    # pairs, which for shapes are only fully captioned scenes of 1-2 objects
    vae.config.scale_factor = estimate_scale_factor(vae, source.batch(SCALE_SAMPLES, seed=SCALE_SEED)[0])
    return vae


def save_vae(vae: VAE, path: str | Path, extra: dict | None = None) -> None:
    """Write ``path``.safetensors + ``path``.json (creating the folder); scale_factor lives in the config."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, vae, vae.config, {"kind": "vae", **(extra or {})})


def load_vae(path: str | Path, device: str = "cpu") -> VAE:
    """Load a VAE saved by ``save_vae``, in eval mode."""
    state, meta = load_checkpoint(path, map_location=pick_device(device))
    vae = VAE(VAEConfig(**meta["config"])).to(pick_device(device))
    return load_into(vae, state, name="vae").eval()


def object_masks(scenes: list, resolution: int) -> tuple[torch.Tensor, list[str]]:
    """One mask per object: (M, H, W) bool, True where the object covers any part of a pixel,
    and the object sizes (M,). Each object is drawn alone on its background and compared with the
    bare background, so anti-aliased edges (where detail lives) count as the object's pixels."""
    from minidiff.shapes import Scene, render

    alone = [Scene(s.background, (o,)) for s in scenes for o in s.objects]
    bare = [Scene(s.background) for s in scenes for _ in s.objects]
    masks = (render(alone, resolution) - render(bare, resolution)).abs().amax(1) > 0  # (M, H, W)
    return masks, [o.size for s in scenes for o in s.objects]


@torch.no_grad()
def reconstruction_error_by_size(vae: VAE, n: int = 256, seed: int = EVAL_SEED, resolution: int = 32,
                                 batch_size: int = 128) -> dict[str, float]:
    """Per-pixel MSE of to_latent -> from_latent reconstructions of ``n`` fresh shapes images:
    overall, on background pixels (no object touches them) and on pixels of small / large objects.

    Returns {"overall", "background", "small", "large", "n_small", "n_large"}; a lossy latent loses
    small objects (a few pixels, under one latent cell at f8) before large ones.
    """
    from minidiff.shapes import ShapesConfig, make_shapes

    images, _, scenes = make_shapes(n, ShapesConfig(resolution=resolution), seed=seed)
    device = next(vae.parameters()).device
    recon = torch.cat([from_latent(vae, to_latent(vae, images[i:i + batch_size].to(device))).cpu()
                       for i in range(0, n, batch_size)])  # (N, 3, H, W)
    sq_err = (recon - images).pow(2).mean(1)  # (N, H, W) averaged over RGB
    masks, sizes = object_masks(scenes, resolution)  # (M, H, W), (M,)
    owner = torch.tensor([i for i, s in enumerate(scenes) for _ in s.objects])  # (M,) image of each object
    background = torch.zeros_like(sq_err).index_add_(0, owner, masks.float()) == 0  # (N, H, W)
    out = {"overall": sq_err.mean().item(), "background": sq_err[background].mean().item()}
    for size in ("small", "large"):
        pick = torch.tensor([z == size for z in sizes])  # (M,)
        out[size] = sq_err[owner[pick]][masks[pick]].mean().item() if pick.any() else float("nan")
        out[f"n_{size}"] = int(pick.sum())
    return out
