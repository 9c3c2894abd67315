"""The denoiser: a text-conditioned U-Net (Ronneberger et al. 2015; Ho et al. 2020; Rombach et al. 2022).

``UNet(config)(xt, t, cond)`` maps a noisy image ``xt`` (B, C, H, W), timesteps ``t`` (B,) and text
token embeddings ``cond`` (B, L, D) to a prediction of the same shape as ``xt``: the noise ``eps``,
the clean image ``x0`` or the velocity ``v``, as ``config.prediction_type`` says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.layers import (
    Downsample,
    ResBlock,
    SpatialTransformer,
    TransformerBlock,
    Upsample,
    group_norm,
    timestep_embedding,
)
from minidiff.schedule import PREDICTION_TYPES

EMB_MULT = 4  # time-embedding width = 4 * base_channels (Ho et al. 2020 code)


@dataclass
class UNetConfig:
    """Shape of a U-Net. Level ``i`` works at resolution ``H / 2**i`` with
    ``base_channels * channel_mults[i]`` channels; levels in ``attention_levels`` (and the middle) get
    self- and cross-attention.
    ``text_dim`` is D of the text tokens ``cond`` (B, L, D); ``None`` or 0 builds an unconditional model.
    ``text_layers`` > 0 passes ``cond`` through that many trainable transformer blocks first (the
    text refiner): the frozen CLIP encoder was trained to match whole captions, not to tell which
    colour belongs to which noun, and the denoising loss can teach the refiner that.
    """

    in_channels: int = 3
    out_channels: int | None = None
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2, 3)
    text_dim: int | None = 128
    heads: int = 4
    dropout: float = 0.0
    prediction_type: str = "eps"
    mask_padding: bool = True  # cross-attention skips all-zero cond rows (padding; see text.encode_prompts)
    text_layers: int = 0  # trainable TransformerBlocks that refine the frozen cond before cross-attention

    def __post_init__(self) -> None:
        # JSON round-trips turn tuples into lists; make them tuples again
        self.channel_mults = tuple(self.channel_mults)
        self.attention_levels = tuple(self.attention_levels)
        if self.out_channels is None:
            self.out_channels = self.in_channels
        if self.text_dim == 0:
            self.text_dim = None
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r} is not known; choose one of "
                             f"{PREDICTION_TYPES}")
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults={self.channel_mults} must be a non-empty tuple of positive "
                             "integers")
        levels = tuple(range(len(self.channel_mults)))
        if any(i not in levels for i in self.attention_levels):
            raise ValueError(f"attention_levels={self.attention_levels} must be level indices in {levels}")
        for name in ("in_channels", "out_channels", "base_channels", "num_res_blocks", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.text_layers < 0 or (self.text_layers and (not self.text_dim or self.text_dim % self.heads)):
            raise ValueError(f"text_layers={self.text_layers} must be >= 0; a refiner (> 0) needs a text-"
                             f"conditioned U-Net whose text_dim={self.text_dim} heads={self.heads} divide")
        widths = [self.base_channels * m for m in self.channel_mults]
        if any(w % self.heads for w in widths):
            raise ValueError(f"heads={self.heads} must divide every level width {widths}")
        if self.text_dim is not None and self.text_dim < 0:
            raise ValueError(f"text_dim={self.text_dim} must be a positive integer, or None/0 for "
                             "unconditional")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")

    @property
    def downsample_factor(self) -> int:
        """H and W must be multiples of this: 2 ** (number of levels - 1)."""
        return 2 ** (len(self.channel_mults) - 1)

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> UNetConfig:
        """The preset ``name`` from PRESETS with fields replaced by ``overrides``.

        ``out_channels`` follows ``in_channels`` unless it is overridden too.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown U-Net preset {name!r}; valid presets: {sorted(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown UNetConfig fields {unknown}; valid fields: {sorted(fields)}")
        return dataclasses.replace(PRESETS[name], **{"out_channels": None, **overrides})


PRESETS: dict[str, UNetConfig] = {
    # 3x32x32 pixels on a 2-core CPU: attention at 8x8 and 4x4 only, full-resolution layers kept thin
    "cpu-pixel": UNetConfig(in_channels=3, base_channels=16, channel_mults=(1, 2, 4, 4), num_res_blocks=1,
                            attention_levels=(2, 3), heads=4),
    # 4x8x8 latents of the toy VAE on a 2-core CPU: attention at 4x4
    "cpu-latent": UNetConfig(in_channels=4, base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                             attention_levels=(1,), heads=4),
    # 3x32x32 or 3x64x64 pixels on one GPU
    "gpu-pixel": UNetConfig(in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                            attention_levels=(1, 2), heads=8, dropout=0.1),
    # 4x8x8 or 4x16x16 latents on one GPU
    "gpu-latent": UNetConfig(in_channels=4, base_channels=128, channel_mults=(1, 2, 2), num_res_blocks=2,
                             attention_levels=(0, 1, 2), heads=8, dropout=0.1),
}


def _real_tokens(cond: torch.Tensor) -> torch.Tensor:
    """cond (B, L, D) -> (B, L) bool: True where a row is not all zeros (padding, see encode_prompts),
    and always at token 0 (<bos>), so a query never has nothing to attend to."""
    keep = cond.ne(0).any(-1)  # (B, L)
    keep[:, 0] = True
    return keep


class _Stage(nn.Module):
    """A ResBlock followed, at attention levels, by a SpatialTransformer."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, config: UNetConfig, level: int,
                 attention: bool) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, config.dropout)
        self.attn = SpatialTransformer(out_ch, config.text_dim, config.heads, level) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None,
                cond_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.res(x, emb)  # (B, out_ch, H, W)
        return x if self.attn is None else self.attn(x, cond, cond_mask)


class UNet(nn.Module):
    """U-Net denoiser: ``forward(xt (B, C, H, W), t (B,), cond (B, L, D) | None) -> (B, C, H, W)``.

    Timesteps enter through a sinusoidal embedding and an MLP (Ho et al. 2020); the pooled text
    vector ``cond[:, 0]`` is projected and added to it; every attention level cross-attends to all
    of ``cond`` (Rombach et al. 2022), after the optional text refiner (``refine_text``). H and W must be
    multiples of ``config.downsample_factor``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.prediction_type = config.prediction_type
        base, emb_dim = config.base_channels, EMB_MULT * config.base_channels
        last = len(config.channel_mults) - 1
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text_proj = nn.Linear(config.text_dim, emb_dim) if config.text_dim else None
        self.conv_in = nn.Conv2d(config.in_channels, base, 3, padding=1)

        # encoder: num_res_blocks stages per level, a Downsample between levels; remember skip widths
        skips, ch = [base], base
        self.down = nn.ModuleList()
        for level, mult in enumerate(config.channel_mults):
            stages = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                stages.append(_Stage(ch, base * mult, emb_dim, config, level,
                                     level in config.attention_levels))
                ch = base * mult
                skips.append(ch)
            self.down.append(stages)
            if level < last:
                self.down.append(Downsample(ch))
                skips.append(ch)

        # middle: always has attention, at the lowest resolution
        self.mid = nn.ModuleList([_Stage(ch, ch, emb_dim, config, last, True),
                                  _Stage(ch, ch, emb_dim, config, last, False)])

        # decoder: num_res_blocks + 1 stages per level, each eating one skip; an Upsample between levels
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            stages = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                stages.append(_Stage(ch + skips.pop(), base * mult, emb_dim, config, level,
                                     level in config.attention_levels))
                ch = base * mult
            self.up.append(stages)
            if level > 0:
                self.up.append(Upsample(ch))

        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, config.out_channels, 3, padding=1)
        # zero-init the last conv so the untrained model predicts 0 (Nichol & Dhariwal 2021 code;
        # Goyal et al. 2017)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # zero-initialised residual blocks: a refiner starts as the identity, even when it is added to a
        # trained U-Net (train --init), so fine-tuning begins from exactly the old model. Built last, so
        # every other layer's random init is the same with or without it
        self.text_refiner = nn.ModuleList(TransformerBlock(config.text_dim, config.heads).zero_init()
                                          for _ in range(config.text_layers))

    def _check_inputs(self, xt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> None:
        cfg = self.config
        if xt.dim() != 4:
            raise ValueError(f"xt must have shape (B, C, H, W), got {tuple(xt.shape)}")
        if xt.shape[1] != cfg.in_channels:
            raise ValueError(f"xt has {xt.shape[1]} channels but this U-Net takes "
                             f"in_channels={cfg.in_channels}")
        f = cfg.downsample_factor
        for name, size in (("height", xt.shape[2]), ("width", xt.shape[3])):
            if size % f:
                lo = max(f, size // f * f)
                allowed = ", ".join(str(n) for n in range(max(f, lo - f), lo + 3 * f, f))
                raise ValueError(f"{name} {size} is not a multiple of {f} (2^{len(cfg.channel_mults) - 1} "
                                 f"downsamplings) for this U-Net; allowed: {allowed}, ...")
        if t.shape != (xt.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({xt.shape[0]},), got {tuple(t.shape)}")
        if cfg.text_dim is None:
            if cond is not None:
                raise ValueError("this U-Net is unconditional (text_dim=None) but got cond; pass cond=None")
            return
        if cond is None:
            raise ValueError(f"this U-Net is text-conditioned (text_dim={cfg.text_dim}) and needs cond "
                             f"(B, L, {cfg.text_dim}); for no prompt pass the embedding of the empty "
                             "prompt ''")
        if cond.dim() != 3 or cond.shape[2] != cfg.text_dim or cond.shape[0] not in (1, xt.shape[0]):
            raise ValueError(f"cond must have shape (B or 1, L, text_dim) = ({xt.shape[0]}, L, "
                             f"{cfg.text_dim}), got {tuple(cond.shape)}")

    def forward(self, xt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict eps, x0 or v from ``xt`` (B, C, H, W), ``t`` (B,) and ``cond`` (B, L, D).

        ``cond_mask`` (B, L) bool marks real tokens (True) against padding (False); by default (with
        ``config.mask_padding``) padding is where a row of ``cond`` is all zeros, as ``encode_prompts``
        writes it, so image queries give padding no attention. Token 0 (<bos>) is always attended.
        """
        self._check_inputs(xt, t, cond)
        if cond is not None and cond.shape[0] != xt.shape[0]:
            cond = cond.expand(xt.shape[0], -1, -1)  # (B, L, D)
        if cond is not None and cond_mask is None and self.config.mask_padding:
            cond_mask = _real_tokens(cond)  # (B, L)
        if cond is not None:  # 0. words attend to words in the text refiner, if there is one
            cond = self.refine_text(cond, cond_mask)  # (B, L, D)
        # 1. embedding = MLP(sinusoidal(t)) + projected pooled text vector cond[:, 0]
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))  # (B, emb_dim)
        if self.text_proj is not None:
            emb = emb + self.text_proj(cond[:, 0])  # (B, emb_dim)
        # 2. encoder, keeping every activation for the skip connections
        h = self.conv_in(xt)  # (B, base, H, W)
        skips = [h]
        for block in self.down:
            if isinstance(block, Downsample):
                h = block(h)  # (B, ch, H/2, W/2)
                skips.append(h)
                continue
            for stage in block:
                h = stage(h, emb, cond, cond_mask)
                skips.append(h)
        # 3. middle, at the lowest resolution
        for stage in self.mid:
            h = stage(h, emb, cond, cond_mask)
        # 4. decoder: concatenate the matching skip before each stage
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)  # (B, ch, 2H, 2W)
                continue
            for stage in block:
                h = stage(torch.cat([h, skips.pop()], dim=1), emb, cond, cond_mask)  # (B, ch + skip_ch, H, W)
        # 5. project back to the input channels
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)

    def refine_text(self, cond: torch.Tensor, cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pass ``cond`` (B, L, D) through the text refiner -> (B, L, D); unchanged without one.

        Words attend to words (not to padding: ``cond_mask`` (B, L), by default the rows that are not
        all zero, plus <bos>), and padding rows stay zero, so cross-attention still tells them apart.
        """
        if not len(self.text_refiner):
            return cond
        keep = _real_tokens(cond) if cond_mask is None else cond_mask.bool().clone()  # (B, L)
        keep[:, 0] = True
        for block in self.text_refiner:
            cond = block(cond, keep)  # (B, L, D)
        return cond * keep.unsqueeze(-1).to(cond.dtype)  # (B, L, D)

    @contextmanager
    def record_attention(self) -> Iterator[list[tuple[int, torch.Tensor]]]:
        """Collect cross-attention weights of the forward passes inside the ``with`` block.

        Yields a list that fills with ``(level, weights)``, weights (B, heads, H_l * W_l, L) where
        ``H_l = H / 2**level``, in the order the blocks run (encoder, middle, decoder).
        """
        records: list[tuple[int, torch.Tensor]] = []
        blocks = [m for m in self.modules() if isinstance(m, SpatialTransformer)]
        for m in blocks:
            m.recorder = records
        try:
            yield records
        finally:
            for m in blocks:
                m.recorder = None
