"""The building blocks of the U-Net: timestep embedding, ResBlock, (cross-)attention, resampling,
and the token TransformerBlock shared by the text encoder and the U-Net's text refiner.

Every block works on images ``(B, C, H, W)`` except the attention layers, which work on token
sequences ``(B, N, D)``; ``SpatialTransformer`` turns an image into ``H * W`` tokens and back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

MAX_PERIOD = 10_000  # longest wavelength of the sinusoidal embedding, Vaswani et al. 2017 sec. 3.5
GROUP_SIZES = (32, 16, 8, 4, 2, 1)  # GroupNorm groups, 32 preferred (Wu & He 2018)
MIN_GROUP_CHANNELS = 4  # a group of one channel subtracts that channel's mean: an added embedding vanishes
MLP_RATIO = 4  # hidden width of the transformer MLP, Vaswani et al. 2017 sec. 3.3


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = MAX_PERIOD) -> torch.Tensor:
    """Sinusoidal embedding of timesteps ``t`` (B,) -> (B, dim) (Vaswani et al. 2017; Ho et al. 2020).

    With ``half = dim // 2`` and frequencies ``w_i = max_period ** (-i / half)``, the embedding is
    ``[sin(t * w_0), ..., sin(t * w_{half-1}), cos(t * w_0), ..., cos(t * w_{half-1})]``.
    ``t`` may be integer or float (continuous time).
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"timestep_embedding dim={dim} must be an even number >= 2")
    if t.dim() != 1:
        raise ValueError(f"timestep_embedding expects t of shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    i = torch.arange(half, device=t.device, dtype=torch.float32)  # (half,)
    freqs = torch.exp(-math.log(max_period) * i / half)  # (half,)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (B, dim)


def num_groups(channels: int) -> int:
    """Largest group count in GROUP_SIZES that divides ``channels`` into groups of at least
    MIN_GROUP_CHANNELS channels (1 group when none does): 32 -> 8, 64 -> 16, 128 and up -> 32.

    With one channel per group, GroupNorm removes each channel's mean, and with it the embedding that
    ``ResBlock`` adds just before its second norm; minidiff's width-32 U-Nets did that until Dec 2026.
    """
    return next((g for g in GROUP_SIZES if channels % g == 0 and channels // g >= MIN_GROUP_CHANNELS), 1)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with ``num_groups(channels)`` groups (Wu & He 2018)."""
    return nn.GroupNorm(num_groups(channels), channels)


class ResBlock(nn.Module):
    """Residual block with an added embedding (Ho et al. 2020, appendix B; He et al. 2016).

    ``x`` (B, in_ch, H, W), ``emb`` (B, emb_dim) -> (B, out_ch, H, W). ``emb`` carries the timestep
    and the pooled text vector.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # 1. GroupNorm -> SiLU -> conv
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        # 2. add the projected embedding to every pixel
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]  # (B, out_ch, 1, 1) broadcast
        # 3. GroupNorm -> SiLU -> dropout -> conv
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (B, out_ch, H, W)
        # 4. residual connection, 1x1 conv when the width changes
        return self.skip(x) + h


class CrossAttention(nn.Module):
    """Multi-head attention from ``x`` (B, N, dim) to ``context`` (B, L, context_dim) (Vaswani et al. 2017).

    Queries come from ``x``, keys and values from ``context``. ``context_mask`` (B, L) bool is True
    for tokens to attend to and False for padding. With ``return_weights=True`` the weights are
    computed explicitly and returned as ``(out, weights)`` with weights (B, heads, N, L); otherwise
    the fused ``scaled_dot_product_attention`` kernel is used.
    """

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"attention width {dim} must be divisible by heads={heads} (heads >= 1)")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # 1. project and split heads
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)  # (B, heads, N, d)
        k = rearrange(self.to_k(context), "b l (h d) -> b h l d", h=self.heads)  # (B, heads, L, d)
        v = rearrange(self.to_v(context), "b l (h d) -> b h l d", h=self.heads)  # (B, heads, L, d)
        mask = None if context_mask is None else context_mask[:, None, None, :].bool()  # (B, 1, 1, L)
        if return_weights:
            # 2a. softmax(q k^T / sqrt(d)) written out (Vaswani et al. 2017 eq. 1)
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, heads, N, L)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)  # (B, heads, N, L)
            out = weights @ v  # (B, heads, N, d)
        else:
            # 2b. the same computation in one fused kernel
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, N, d)
        # 3. merge heads and project
        out = self.to_out(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, dim)
        return (out, weights) if return_weights else out


class Attention(CrossAttention):
    """Multi-head self-attention over ``x`` (B, N, dim): a CrossAttention whose context is ``x``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, dim, heads)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return super().forward(x, x, return_weights=return_weights)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (Radford et al. 2019): x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = MLP_RATIO):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, L, D); keep (B, L) bool, False at <pad>: no token attends to a pad token."""
        # q, k, v: (B, H, L, Dh) each
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b l (n h d) -> n b h l d", n=3, h=self.heads)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # (B, H, L, Dh)
        x = x + self.proj(rearrange(a, "b h l d -> b l (h d)"))  # (B, L, D)
        return x + self.mlp(self.norm2(x))

    def zero_init(self) -> TransformerBlock:
        """Zero both residual branches' last layers, so the block starts as the identity."""
        for layer in (self.proj, self.mlp[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        return self


class SpatialTransformer(nn.Module):
    """Transformer block on an image: self-attention, cross-attention to text, MLP (Rombach et al. 2022).

    ``x`` (B, C, H, W), ``context`` (B, L, context_dim) -> (B, C, H, W). With ``context_dim=None``
    the cross-attention is left out (unconditional model). While ``recorder`` is a list, each
    forward pass appends ``(level, weights)`` with cross-attention weights (B, heads, H*W, L).
    """

    def __init__(self, channels: int, context_dim: int | None, heads: int, level: int = 0) -> None:
        super().__init__()
        self.level = level
        self.recorder: list[tuple[int, torch.Tensor]] | None = None
        self.norm = group_norm(channels)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.norm1 = nn.LayerNorm(channels)
        self.self_attn = Attention(channels, heads)
        self.norm2 = nn.LayerNorm(channels) if context_dim else None
        self.cross_attn = CrossAttention(channels, context_dim, heads) if context_dim else None
        self.norm3 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, MLP_RATIO * channels), nn.GELU(), nn.Linear(MLP_RATIO * channels, channels)
        )
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        height, width = x.shape[-2:]
        # 1. image to tokens
        h = rearrange(self.proj_in(self.norm(x)), "b c h w -> b (h w) c")  # (B, H*W, C)
        # 2. self-attention among pixels, with residual
        h = h + self.self_attn(self.norm1(h))  # (B, H*W, C)
        # 3. cross-attention from pixels to text tokens, with residual
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("SpatialTransformer was built with context_dim but got context=None")
            if self.recorder is not None:
                out, weights = self.cross_attn(self.norm2(h), context, context_mask, return_weights=True)
                self.recorder.append((self.level, weights.detach()))  # (B, heads, H*W, L)
            else:
                out = self.cross_attn(self.norm2(h), context, context_mask)
            h = h + out  # (B, H*W, C)
        # 4. position-wise MLP, with residual
        h = h + self.mlp(self.norm3(h))  # (B, H*W, C)
        # 5. tokens back to an image, residual around the whole block
        h = rearrange(h, "b (h w) c -> b c h w", h=height, w=width)  # (B, C, H, W)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv (Ho et al. 2020): (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour then 3x3 conv (Ho et al. 2020): (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (B, C, 2H, 2W)
