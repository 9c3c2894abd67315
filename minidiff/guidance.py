"""Classifier-free guidance: a wrapper that takes a model and returns a guided model.

The guided prediction is ``uncond + guidance_scale * (cond - uncond)`` (Ho & Salimans 2022, eq. 6,
written with w + 1 -> guidance_scale as in Stable Diffusion). Scale 0 ignores the prompt, 1 is the
plain conditional model, and larger values push further along the direction the prompt adds. A
negative prompt is simply a different ``uncond``: guidance then pushes away from it. Because the
wrapper is itself a model, every sampler gets guidance for free.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from minidiff.sampling import Model


class CFG:
    """``model`` guided towards ``cond`` and away from ``uncond`` with weight ``guidance_scale``."""

    def __init__(self, model: Model, guidance_scale: float, uncond: Tensor) -> None:
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale={guidance_scale} is not allowed; it must be >= 0 (1 = no guidance)")
        self.model = model
        self.guidance_scale = float(guidance_scale)
        self.uncond = uncond
        self.prediction_type = getattr(model, "prediction_type", "eps")

    def __call__(self, xt: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """xt: (B, ...), t: (B,), cond: (B, L, D) -> guided prediction (B, ...)."""
        if self.guidance_scale == 1.0:
            return self.model(xt, t, cond)
        batch = xt.shape[0]
        uncond = self.uncond.expand(batch, *self.uncond.shape[1:])  # (B, L, D)
        # 1. one batched call for both branches: [uncond; cond]
        both = self.model(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([uncond, cond]))  # (2B, ...)
        pred_uncond, pred_cond = both.chunk(2)  # (B, ...) each
        # 2. extrapolate from the unconditional towards the conditional prediction (Ho & Salimans 2022, eq. 6)
        return pred_uncond + self.guidance_scale * (pred_cond - pred_uncond)


def cfg(model: Model, guidance_scale: float, uncond: Any) -> CFG:
    """Wrap ``model`` with classifier-free guidance; ``uncond`` (1 or B, L, D) is the empty or negative prompt."""
    return CFG(model, guidance_scale, uncond)
