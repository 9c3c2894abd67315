"""Classifier-free guidance: a wrapper that takes a model and returns a guided model.

The guided prediction is ``uncond + guidance_scale * (cond - uncond)`` (Ho & Salimans 2022, eq. 6,
written with w + 1 -> guidance_scale as in Stable Diffusion). Scale 0 ignores the prompt, 1 is the
plain conditional model, and larger values push further along the direction the prompt adds. A
negative prompt is simply a different ``uncond``: guidance then pushes away from it. Because the
wrapper is itself a model, every sampler gets guidance for free.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minidiff.sampling import Model


def cfg_combine(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """uncond + guidance_scale * (cond - uncond) on predictions (B, ...) (Ho & Salimans 2022, eq. 6)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def cfg(model: Model, guidance_scale: float, uncond: Tensor) -> Model:
    """``model`` guided towards ``cond``, away from ``uncond`` (1 or B, L, D): the empty or negative prompt.

    The guided model makes one batched call for both branches; at scale 1 it is ``model`` itself.
    """
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale={guidance_scale} is not allowed; it must be >= 0 (1 = no guidance)")
    if guidance_scale == 1.0:
        return model

    def guided(xt: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """xt: (B, ...), t: (B,), cond: (B, L, D) -> guided prediction (B, ...)."""
        uncond_batch = uncond.expand(xt.shape[0], *uncond.shape[1:])  # (B, L, D)
        both = model(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([uncond_batch, cond]))  # (2B, ...)
        return cfg_combine(*both.chunk(2), guidance_scale)  # (B, ...)

    guided.prediction_type = getattr(model, "prediction_type", "eps")
    return guided
