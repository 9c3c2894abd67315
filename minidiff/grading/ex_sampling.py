"""Exercises on the reverse process: ex06 the DDPM posterior step, ex07 the DDIM step."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidiff.grading import references as ref
from minidiff.grading.spec import T_STEPS, Case, Exercise, Variant, broadcast_like, randint, randn
from minidiff.schedule import make_schedule

NOTEBOOK = "notebook 04 (samplers)"
INDEX_HINT = "alpha_bar[t] is the value at step t and alpha_bar[t - 1] the one before: t is not 1-based"
CLEAN_END_HINT = "before step 0 there is no noise: use alpha_bar_{-1} = 1 (not alpha_bar[-1], the last entry)"
BROADCAST_HINT = "alpha_bar[t] has shape (B,): reshape it to (B, 1, ..., 1) so each sample gets its own value"
T0_HINT = ("at t = 0 the step returns the posterior mean, x0_pred, with no noise (the variance is 0 there); "
           "decide this per sample (a mask t == 0), not with (t == 0).all() for the whole batch")

# ex06 --------------------------------------------------------------------------------------------


def _ddpm_inputs(g: torch.Generator, shape: tuple[int, ...], t: list[int], schedule: str,
                 dtype: torch.dtype = torch.float32) -> dict:
    sched = make_schedule(schedule, T_STEPS)
    return dict(xt=randn(g, *shape, dtype=dtype), t=torch.tensor(t), x0_pred=randn(g, *shape, dtype=dtype),
                alpha_bar=sched.alpha_bar, betas=sched.betas, noise=randn(g, *shape, dtype=dtype))


def _posterior(t_shift: int = 0, clean_end: bool = True, variance: str = "posterior", add_noise: bool = True,
               swap: bool = False, dtype: torch.dtype = torch.float64, batch_t0: bool = False):
    def variant(xt: Tensor, t: Tensor, x0_pred: Tensor, alpha_bar: Tensor, betas: Tensor,
                noise: Tensor) -> Tensor:
        if batch_t0 and bool((t == 0).all()):
            return x0_pred
        ts, like = (t - t_shift).clamp(min=0), xt.to(dtype)
        ab_t = broadcast_like(alpha_bar, ts, like)  # (B, 1, ..., 1)
        padded = torch.cat([alpha_bar.new_ones(1), alpha_bar])  # (T+1,) alpha_bar_{t-1} at index t
        use_end = clean_end and not batch_t0
        ab_prev = broadcast_like(padded, ts, like) if use_end else broadcast_like(alpha_bar, ts - 1, like)
        beta = 1 - ab_t / ab_prev
        c_x0, c_xt = ab_prev.sqrt() * beta / (1 - ab_t), (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t)
        if swap:
            c_x0, c_xt = c_xt, c_x0
        var = (1 - ab_prev) / (1 - ab_t) * beta if variance == "posterior" else beta
        mean = c_x0 * x0_pred + c_xt * xt
        return (mean + var.sqrt() * noise if add_noise else mean).to(xt.dtype)
    return variant


EX06 = Exercise(
    id="ex06", topic="ddpm_step", title="DDPM posterior step", function="ddpm_posterior_step",
    notebook=NOTEBOOK,
    reference=ref.ddpm_posterior_step,
    cases=(
        Case("images (4, 3, 8, 8), t = 0, 1, a random step and 999 in one batch, cosine schedule", 3,
             lambda g: _ddpm_inputs(g, (4, 3, 8, 8), [0, 1] + randint(g, 2, 999, 1) + [999], "cosine")),
        Case("t = 0 for the whole batch: the last step returns x0_pred, without noise", 2,
             lambda g: _ddpm_inputs(g, (2, 3, 4, 4), [0, 0], "cosine")),
        Case("2-D points (3, 2) at random steps, linear schedule", 2,
             lambda g: _ddpm_inputs(g, (3, 2), randint(g, 1, 1000, 3), "linear")),
        Case("batch size 1 at t = T - 1", 1, lambda g: _ddpm_inputs(g, (1, 2, 4, 4), [999], "linear")),
        Case("float64 inputs give a float64 result", 2,
             lambda g: _ddpm_inputs(g, (2, 2, 4, 4), randint(g, 1, 1000, 2), "cosine", torch.float64)),
    ),
    variants=(
        Variant("zeros", lambda xt, t, x0_pred, alpha_bar, betas, noise: torch.zeros_like(xt),
                "you return zeros"),
        Variant("identity", lambda xt, t, x0_pred, alpha_bar, betas, noise: xt,
                "you return xt unchanged: step to the posterior mean plus noise"),
        Variant("returns_x0_pred", lambda xt, t, x0_pred, alpha_bar, betas, noise: x0_pred,
                "you return x0_pred: the step goes to x_{t-1}, a mix of x0_pred and xt "
                "(Ho et al. 2020, eq. 7)"),
        Variant("no_noise", _posterior(add_noise=False),
                "add sqrt(posterior variance) * noise to the mean (not at t = 0: the variance is 0 there)"),
        Variant("beta_variance", _posterior(variance="beta"),
                "use the posterior variance (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t, not beta_t: "
                "it is 0 at t = 0, so no noise is added there"),
        Variant("off_by_one", _posterior(t_shift=1), INDEX_HINT),
        Variant("no_clean_end", _posterior(clean_end=False), CLEAN_END_HINT),
        Variant("batch_t0", _posterior(batch_t0=True), T0_HINT),
        Variant("float32_coefficients", _posterior(dtype=torch.float32),
                "near t = 0, 1 - alpha_bar_t is about 1e-4 and float32 keeps only a few digits of it: "
                "compute the coefficients in float64 (alpha_bar's dtype); convert only the result"),
        Variant("swapped", _posterior(swap=True),
                "the coefficient sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) goes with x0_pred and "
                "sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) with xt"),
        Variant("always_float32", lambda xt, t, x0_pred, alpha_bar, betas, noise: _posterior()(
            xt.float(), t, x0_pred.float(), alpha_bar, betas, noise.float()), "return xt's dtype"),
    ),
    error_hints=((r"must match the size of tensor", BROADCAST_HINT),
                 (r"out of bounds", "t runs from 0 to T - 1: for t = 0 take alpha_bar_{t-1} = 1")),
    t0_hint=T0_HINT,
)

# ex07 --------------------------------------------------------------------------------------------


def _ddim_inputs(g: torch.Generator, shape: tuple[int, ...], t: int, t_prev: int, schedule: str,
                 dtype: torch.dtype = torch.float32) -> dict:
    return dict(xt=randn(g, *shape, dtype=dtype), t=t, t_prev=t_prev, eps_pred=randn(g, *shape, dtype=dtype),
                alpha_bar=make_schedule(schedule, T_STEPS).alpha_bar)


def _ddim(shift: int = 0, clean_end: bool = True, swap: bool = False, eps_sign: float = 1.0,
          x0_only: bool = False, zero_is_clean: bool = False):
    def variant(xt: Tensor, t: int, t_prev: int, eps_pred: Tensor, alpha_bar: Tensor) -> Tensor:
        ab = alpha_bar.tolist()
        ab_t = ab[t - shift]
        ab_prev = ab[t_prev] if not clean_end else (ab[t_prev - shift] if t_prev - shift >= 0 else 1.0)
        if zero_is_clean and t_prev <= 0:
            ab_prev = 1.0
        x0_pred = (xt - eps_sign * math.sqrt(1 - ab_t) * eps_pred) / math.sqrt(ab_t)
        if x0_only:
            return x0_pred
        c_x0, c_eps = math.sqrt(ab_prev), math.sqrt(1 - ab_prev)
        if swap:
            c_x0, c_eps = c_eps, c_x0
        return c_x0 * x0_pred + c_eps * eps_pred
    return variant


def _true_noise(g: torch.Generator) -> dict:
    t = randint(g, 500, 1000)[0]
    x0, eps = randn(g, 3, 2, 4, 4), randn(g, 3, 2, 4, 4)
    alpha_bar = make_schedule("cosine", T_STEPS).alpha_bar
    xt = ref.q_sample(x0, torch.full((3,), t), eps, alpha_bar)
    return dict(xt=xt, t=t, t_prev=t - randint(g, 1, 500)[0], eps_pred=eps, alpha_bar=alpha_bar, x0=x0)


def _q_sample_at_t_prev(inputs: dict) -> Tensor:
    t_prev = torch.full((inputs["x0"].shape[0],), inputs["t_prev"])  # (B,)
    return ref.q_sample(inputs["x0"], t_prev, inputs["eps_pred"], inputs["alpha_bar"])


EX07 = Exercise(
    id="ex07", topic="ddim_step", title="DDIM step", function="ddim_step", notebook=NOTEBOOK,
    reference=ref.ddim_step,
    cases=(
        Case("a random jump t -> t_prev, images (4, 3, 8, 8), cosine schedule", 2,
             lambda g: (lambda t: _ddim_inputs(g, (4, 3, 8, 8), t, t - randint(g, 1, 100)[0], "cosine"))(
                 randint(g, 100, 1000)[0])),
        Case("the last step t -> t_prev = -1 returns x0_pred", 2,
             lambda g: _ddim_inputs(g, (2, 3, 4, 4), randint(g, 1, 100)[0], -1, "cosine")),
        Case("a 20 -> 0 step: t_prev = 0 uses alpha_bar[0], not the clean end", 2,
             lambda g: _ddim_inputs(g, (2, 3, 4, 4), 20, 0, "linear")),
        Case("with the true noise, q_sample(x0, t) steps to q_sample(x0, t_prev)", 2, _true_noise,
             expected=_q_sample_at_t_prev),
        Case("t = T - 1, batch size 1, 2-D points, linear schedule", 1,
             lambda g: _ddim_inputs(g, (1, 2), T_STEPS - 1, T_STEPS - 1 - randint(g, 1, 100)[0], "linear")),
        Case("float64 inputs give a float64 result", 1,
             lambda g: _ddim_inputs(g, (2, 2), 500, 450, "cosine", torch.float64)),
    ),
    variants=(
        Variant("zeros", lambda xt, t, t_prev, eps_pred, alpha_bar: torch.zeros_like(xt), "you return zeros"),
        Variant("identity", lambda xt, t, t_prev, eps_pred, alpha_bar: xt, "you return xt unchanged"),
        Variant("zero_is_clean", _ddim(zero_is_clean=True),
                "t_prev = 0 is a real step with alpha_bar[0] < 1; only t_prev = -1 is the clean end"),
        Variant("returns_x0_pred", _ddim(x0_only=True),
                "you return x0_pred: re-noise it to t_prev with sqrt(alpha_bar_prev) x0_pred + "
                "sqrt(1 - alpha_bar_prev) eps_pred"),
        Variant("off_by_one", _ddim(shift=1), INDEX_HINT),
        Variant("no_clean_end", _ddim(clean_end=False), CLEAN_END_HINT),
        Variant("swapped", _ddim(swap=True),
                "sqrt(alpha_bar_prev) multiplies x0_pred and sqrt(1 - alpha_bar_prev) the noise"),
        Variant("eps_sign", _ddim(eps_sign=-1.0),
                "x0_pred = (xt - sqrt(1 - alpha_bar_t) eps_pred) / sqrt(alpha_bar_t): subtract the noise"),
        Variant("always_float32", lambda xt, t, t_prev, eps_pred, alpha_bar: _ddim()(
            xt.float(), t, t_prev, eps_pred.float(), alpha_bar), "return xt's dtype"),
    ),
    error_hints=((r"out of bounds|index -?\d+ is out of", CLEAN_END_HINT),),
)

EXERCISES = (EX06, EX07)
