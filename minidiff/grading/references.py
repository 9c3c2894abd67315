"""The reference solutions: thin adapters from each stub's signature to minidiff's own functions.

The package is the answer key. Each function here has exactly the signature of its stub in
``exercises/`` and does no arithmetic of its own beyond handing the inputs to minidiff, so that the
exercises can never drift from the library they teach.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minidiff import guidance, layers, sampling, schedule, text, training
from minidiff.schedule import NoiseSchedule


def schedule_from_alpha_bar(alpha_bar: Tensor) -> NoiseSchedule:
    """The NoiseSchedule whose cumulative product is ``alpha_bar`` (T,): betas_t = 1 - ab_t / ab_{t-1}."""
    ab = alpha_bar.double()
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])  # (T,) alpha_bar_{t-1}, with alpha_bar_{-1} = 1
    return NoiseSchedule("exercise", 1.0 - ab / ab_prev)


def alpha_bar_linear(T: int) -> Tensor:
    return schedule.make_schedule("linear", T).alpha_bar


def alpha_bar_cosine(T: int) -> Tensor:
    return schedule.make_schedule("cosine", T).alpha_bar


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    return schedule.q_sample(schedule_from_alpha_bar(alpha_bar), x0, t, noise)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    return layers.timestep_embedding(t, dim)


def diffusion_loss(model, x0: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor, cond=None) -> Tensor:
    return training.diffusion_loss(model, schedule_from_alpha_bar(alpha_bar), x0, t, noise, cond, "eps")


def ddpm_posterior_step(xt: Tensor, t: Tensor, x0_pred: Tensor, alpha_bar: Tensor, betas: Tensor,
                        noise: Tensor) -> Tensor:
    # coefficients in float64, as the sampler computes them: near t = 0, 1 - alpha_bar_t is ~1e-4
    # and float32 would keep only three digits of it
    ab = alpha_bar.double()
    ab_padded = torch.cat([ab.new_ones(1), ab])  # (T+1,) index t: alpha_bar_{t-1}, with alpha_bar_{-1} = 1
    ab_t = schedule.gather(ab, t, xt.double())  # (B, 1, ..., 1)
    ab_prev = schedule.gather(ab_padded, t, xt.double())  # (B, 1, ..., 1)
    mean, var = schedule.posterior_from_alpha_bar(ab_t, ab_prev, x0_pred, xt)
    return (mean + var.sqrt() * noise).to(xt.dtype)


def ddim_step(xt: Tensor, t: int, t_prev: int, eps_pred: Tensor, alpha_bar: Tensor) -> Tensor:
    sched = schedule_from_alpha_bar(alpha_bar)
    t_batch = torch.full((xt.shape[0],), t, dtype=torch.long)  # (B,)
    x0 = schedule.predict_x0(sched, eps_pred, xt, t_batch, "eps")
    ab = alpha_bar.double().tolist()
    step = sampling.Step(x=xt, t=t, t_prev=t_prev, ab=ab[t], ab_prev=ab[t_prev] if t_prev >= 0 else 1.0,
                         x0=x0, eps=eps_pred, denoise=None, generator=None, eta=0.0)
    return sampling.ddim_step(step)


class _TwoBranches:
    """A stand-in model whose unconditional and conditional predictions are given tensors."""

    def __init__(self, eps_uncond: Tensor, eps_cond: Tensor) -> None:
        self.eps_uncond, self.eps_cond = eps_uncond, eps_cond

    def __call__(self, xt: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        if xt.shape[0] == 2 * self.eps_cond.shape[0]:  # the batched [uncond; cond] call
            return torch.cat([self.eps_uncond, self.eps_cond])  # (2B, ...)
        return self.eps_cond


def cfg_combine(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    batch = eps_cond.shape[0]
    guided = guidance.cfg(_TwoBranches(eps_uncond, eps_cond), guidance_scale, uncond=torch.zeros(1, 1, 1))
    return guided(torch.zeros_like(eps_cond), torch.zeros(batch, dtype=torch.long), torch.ones(batch, 1, 1))


def clip_loss(img_emb: Tensor, txt_emb: Tensor, logit_scale: float) -> Tensor:
    return text.clip_loss(img_emb, txt_emb, logit_scale)


def cross_attention(x: Tensor, context: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, heads: int = 1) -> Tensor:
    dim, context_dim = wq.shape[0], wk.shape[0]
    attn = layers.CrossAttention(dim, context_dim, heads).to(x.dtype)
    with torch.no_grad():
        # nn.Linear computes x @ W^T, the exercise x @ w: load the transposes; no output projection
        attn.to_q.weight.copy_(wq.T)
        attn.to_k.weight.copy_(wk.T)
        attn.to_v.weight.copy_(wv.T)
        attn.to_out.weight.copy_(torch.eye(dim, dtype=x.dtype))
        nn.init.zeros_(attn.to_out.bias)
        return attn(x, context)
