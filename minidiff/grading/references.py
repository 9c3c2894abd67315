"""The reference solutions: thin adapters from each stub's signature to minidiff's own functions.

The package is the answer key. Each function here has exactly the signature of its stub in
``exercises/`` and does no arithmetic of its own beyond handing the inputs to minidiff, so that the
exercises can never drift from the library they teach.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from minidiff import guidance, layers, sampling, schedule, text, training
from minidiff.schedule import NoiseSchedule
from minidiff.vae import VAE

ATTENTION_WEIGHTS = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight", "to_out.bias")


def schedule_from_alpha_bar(alpha_bar: Tensor) -> NoiseSchedule:
    """The NoiseSchedule whose cumulative product is ``alpha_bar`` (T,): betas_t = 1 - ab_t / ab_{t-1}."""
    return NoiseSchedule("exercise", 1.0 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]]))


def alpha_bar_linear(T: int) -> Tensor:
    return schedule.make_schedule("linear", T).alpha_bar


def alpha_bar_cosine(T: int) -> Tensor:
    return schedule.make_schedule("cosine", T).alpha_bar


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    return schedule.q_sample(schedule_from_alpha_bar(alpha_bar), x0, t, noise)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    return layers.timestep_embedding(t, dim)


def diffusion_loss(model: Any, x0: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor,
                   cond: Any = None) -> Tensor:
    return training.diffusion_loss(model, schedule_from_alpha_bar(alpha_bar), x0, t, noise, cond, "eps")


def ddpm_posterior_step(xt: Tensor, t: Tensor, x0_pred: Tensor, alpha_bar: Tensor, betas: Tensor,
                        noise: Tensor) -> Tensor:
    # coefficients in float64, as the sampler computes them
    padded = torch.cat([alpha_bar.new_ones(1), alpha_bar])  # (T+1,) index t: alpha_bar_{t-1}, 1 at t = 0
    ab_t, ab_prev = schedule.gather(alpha_bar, t, xt.double()), schedule.gather(padded, t, xt.double())
    return sampling.ddpm_step(xt, x0_pred, ab_t, ab_prev, noise).to(xt.dtype)


def ddim_step(xt: Tensor, t: int, t_prev: int, eps_pred: Tensor, alpha_bar: Tensor) -> Tensor:
    t_batch = torch.full((len(xt),), t)  # (B,)
    x0_pred = schedule.predict_x0(schedule_from_alpha_bar(alpha_bar), eps_pred, xt, t_batch, "eps")
    ab = alpha_bar.double().tolist() + [1.0]  # index -1 is the clean end
    return sampling.ddim_step(x0_pred, eps_pred, ab[t], ab[t_prev], 0.0, None)


def cfg_combine(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    return guidance.cfg_combine(eps_uncond, eps_cond, guidance_scale)


def clip_loss(img_emb: Tensor, txt_emb: Tensor, logit_scale: float) -> Tensor:
    return text.clip_loss(img_emb, txt_emb, logit_scale)


def cross_attention(x: Tensor, context: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, heads: int = 1) -> Tensor:
    # nn.Linear computes x @ W^T where the exercise has x @ w; no output projection: the identity
    dim = wq.shape[1]
    weights = (wq.T, wk.T, wv.T, torch.eye(dim, dtype=x.dtype), torch.zeros(dim, dtype=x.dtype))
    attention = layers.CrossAttention(wq.shape[0], wk.shape[0], heads).to(x.dtype)
    return torch.func.functional_call(attention, dict(zip(ATTENTION_WEIGHTS, weights)), (x, context))


def vae_latent(mean: Tensor, logvar: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    return VAE.reparameterise(mean, logvar, noise), VAE.kl(mean, logvar)


def ddim_sample(model: Any, x_T: Tensor, alpha_bar: Tensor, steps: int) -> Tensor:
    return sampling.sample(model, x_T, schedule_from_alpha_bar(alpha_bar), steps, "ddim")


def dpmpp_2m_step(xt: Tensor, x0_pred: Tensor, x0_pred_last: Tensor | None, alpha_bar_last: float,
                  alpha_bar_t: float, alpha_bar_prev: float) -> Tensor:
    return sampling.dpmpp_2m_step(xt, x0_pred, x0_pred_last, alpha_bar_last, alpha_bar_t, alpha_bar_prev)


def res_block(in_ch: int, out_ch: int, emb_dim: int) -> torch.nn.Module:
    return layers.ResBlock(in_ch, out_ch, emb_dim)
