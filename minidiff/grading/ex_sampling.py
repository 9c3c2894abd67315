"""Exercises on the reverse process: ex06 the DDPM posterior step, ex07 the DDIM step."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidiff.grading import references as ref
from minidiff.grading.context import Context, matches_reference
from minidiff.grading.spec import Exercise, Test, Variant, broadcast_like, randn
from minidiff.schedule import make_schedule

NOTEBOOK = "notebook 04 (samplers)"
INDEX_HINT = "alpha_bar[t] is the value at step t and alpha_bar[t - 1] the one before: t is not 1-based"
CLEAN_END_HINT = "before step 0 there is no noise: use alpha_bar_{-1} = 1 (not alpha_bar[-1], the last entry)"
BROADCAST_HINT = "alpha_bar[t] has shape (B,): reshape it to (B, 1, ..., 1) so each sample gets its own value"

# ex06 --------------------------------------------------------------------------------------------


def _ddpm_inputs(shape: tuple[int, ...], t: list[int], schedule: str, seed: int) -> dict:
    sched = make_schedule(schedule, 1000)
    return dict(xt=randn(*shape, seed=seed), t=torch.tensor(t), x0_pred=randn(*shape, seed=seed + 1),
                alpha_bar=sched.alpha_bar, betas=sched.betas, noise=randn(*shape, seed=seed + 2))


def _posterior(t_shift: int = 0, clean_end: bool = True, variance: str = "posterior", add_noise: bool = True,
               swap: bool = False, dtype: torch.dtype = torch.float64):
    def variant(xt: Tensor, t: Tensor, x0_pred: Tensor, alpha_bar: Tensor, betas: Tensor, noise: Tensor) -> Tensor:
        ts, like = (t - t_shift).clamp(min=0), xt.to(dtype)
        ab_t = broadcast_like(alpha_bar, ts, like)  # (B, 1, ..., 1)
        padded = torch.cat([alpha_bar.new_ones(1), alpha_bar])  # (T+1,) alpha_bar_{t-1} at index t
        ab_prev = broadcast_like(padded, ts, like) if clean_end else broadcast_like(alpha_bar, ts - 1, like)
        beta = 1 - ab_t / ab_prev
        c_x0, c_xt = ab_prev.sqrt() * beta / (1 - ab_t), (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t)
        if swap:
            c_x0, c_xt = c_xt, c_x0
        var = (1 - ab_prev) / (1 - ab_t) * beta if variance == "posterior" else beta
        mean = c_x0 * x0_pred + c_xt * xt
        return (mean + var.sqrt() * noise if add_noise else mean).to(xt.dtype)
    return variant


EX06 = Exercise(
    id="ex06", topic="ddpm_step", title="DDPM posterior step", function="ddpm_posterior_step", notebook=NOTEBOOK,
    reference=ref.ddpm_posterior_step,
    tests=(
        matches_reference("images (4, 3, 8, 8), t = [1, 10, 500, 999], cosine schedule", 4,
                          lambda: _ddpm_inputs((4, 3, 8, 8), [1, 10, 500, 999], "cosine", 61)),
        matches_reference("t = 0: the last step returns x0_pred, without noise", 3,
                          lambda: _ddpm_inputs((2, 3, 4, 4), [0, 0], "cosine", 64)),
        matches_reference("2-D points (2, 2), t = [5, 900], linear schedule", 3,
                          lambda: _ddpm_inputs((2, 2), [5, 900], "linear", 67)),
    ),
    variants=(
        Variant("zeros", lambda xt, t, x0_pred, alpha_bar, betas, noise: torch.zeros_like(xt), "you return zeros"),
        Variant("identity", lambda xt, t, x0_pred, alpha_bar, betas, noise: xt,
                "you return xt unchanged: step to the posterior mean plus noise"),
        Variant("returns_x0_pred", lambda xt, t, x0_pred, alpha_bar, betas, noise: x0_pred,
                "you return x0_pred: the step goes to x_{t-1}, a mix of x0_pred and xt (Ho et al. 2020, eq. 7)"),
        Variant("no_noise", _posterior(add_noise=False),
                "add sqrt(posterior variance) * noise to the mean (except at t = 0, where the variance is 0)"),
        Variant("beta_variance", _posterior(variance="beta"),
                "use the posterior variance (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t, not beta_t: "
                "it is 0 at t = 0"),
        Variant("off_by_one", _posterior(t_shift=1), INDEX_HINT),
        Variant("no_clean_end", _posterior(clean_end=False), CLEAN_END_HINT),
        Variant("float32_coefficients", _posterior(dtype=torch.float32),
                "near t = 0, 1 - alpha_bar_t is about 1e-4 and float32 keeps only a few digits of it: compute the "
                "coefficients in float64 (alpha_bar's dtype) and convert only the result to xt.dtype"),
        Variant("swapped", _posterior(swap=True),
                "the coefficient sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) goes with x0_pred and "
                "sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) with xt"),
    ),
    error_hints=((r"must match the size of tensor", BROADCAST_HINT),
                 (r"out of bounds", "t runs from 0 to T - 1: for t = 0 take alpha_bar_{t-1} = 1")),
)

# ex07 --------------------------------------------------------------------------------------------


def _ddim_inputs(shape: tuple[int, ...], t: int, t_prev: int, schedule: str, seed: int) -> dict:
    return dict(xt=randn(*shape, seed=seed), t=t, t_prev=t_prev, eps_pred=randn(*shape, seed=seed + 1),
                alpha_bar=make_schedule(schedule, 1000).alpha_bar)


def _ddim(shift: int = 0, clean_end: bool = True, swap: bool = False, eps_sign: float = 1.0, x0_only: bool = False):
    def variant(xt: Tensor, t: int, t_prev: int, eps_pred: Tensor, alpha_bar: Tensor) -> Tensor:
        ab = alpha_bar.tolist()
        ab_t = ab[t - shift]
        ab_prev = ab[t_prev] if not clean_end else (ab[t_prev - shift] if t_prev - shift >= 0 else 1.0)
        x0 = (xt - eps_sign * math.sqrt(1 - ab_t) * eps_pred) / math.sqrt(ab_t)
        if x0_only:
            return x0
        c_x0, c_eps = math.sqrt(ab_prev), math.sqrt(1 - ab_prev)
        if swap:
            c_x0, c_eps = c_eps, c_x0
        return c_x0 * x0 + c_eps * eps_pred
    return variant


def _true_noise_moves_along(ctx: Context) -> None:
    def make() -> dict:
        x0, eps = randn(3, 2, 4, 4, seed=75), randn(3, 2, 4, 4, seed=76)
        alpha_bar = make_schedule("cosine", 1000).alpha_bar
        xt = ref.q_sample(x0, torch.full((3,), 600), eps, alpha_bar)
        return dict(xt=xt, t=600, t_prev=300, eps_pred=eps, alpha_bar=alpha_bar, x0=x0)

    inputs = make()
    got = ctx.call(inputs)
    expected = ref.q_sample(inputs["x0"], torch.full((3,), 300), inputs["eps_pred"], inputs["alpha_bar"])
    ctx.expect_close(got, expected, inputs, make,
                     what=f"{ctx.describe({k: v for k, v in inputs.items() if k != 'x0'})} with the true noise, "
                          "compared with q_sample(x0, t_prev, noise)")


EX07 = Exercise(
    id="ex07", topic="ddim_step", title="DDIM step", function="ddim_step", notebook=NOTEBOOK,
    reference=ref.ddim_step,
    tests=(
        matches_reference("t = 500 -> t_prev = 450, images (4, 3, 8, 8), cosine schedule", 3,
                          lambda: _ddim_inputs((4, 3, 8, 8), 500, 450, "cosine", 71)),
        matches_reference("the last step t = 20 -> t_prev = -1 returns the predicted x0", 3,
                          lambda: _ddim_inputs((2, 3, 4, 4), 20, -1, "cosine", 73)),
        Test("with the true noise, q_sample(x0, t) steps to q_sample(x0, t_prev)", 2, _true_noise_moves_along),
        matches_reference("t = 999 -> t_prev = 949, 2-D points (2, 2), linear schedule", 2,
                          lambda: _ddim_inputs((2, 2), 999, 949, "linear", 77)),
    ),
    variants=(
        Variant("zeros", lambda xt, t, t_prev, eps_pred, alpha_bar: torch.zeros_like(xt), "you return zeros"),
        Variant("identity", lambda xt, t, t_prev, eps_pred, alpha_bar: xt, "you return xt unchanged"),
        Variant("returns_x0", _ddim(x0_only=True),
                "you return the predicted x0: re-noise it to t_prev with sqrt(alpha_bar_prev) x0 + "
                "sqrt(1 - alpha_bar_prev) eps_pred"),
        Variant("off_by_one", _ddim(shift=1), INDEX_HINT),
        Variant("no_clean_end", _ddim(clean_end=False), CLEAN_END_HINT),
        Variant("swapped", _ddim(swap=True),
                "sqrt(alpha_bar_prev) multiplies the predicted x0 and sqrt(1 - alpha_bar_prev) the noise"),
        Variant("eps_sign", _ddim(eps_sign=-1.0),
                "x0 = (xt - sqrt(1 - alpha_bar_t) eps_pred) / sqrt(alpha_bar_t): subtract the noise"),
    ),
    error_hints=((r"out of bounds|index -?\d+ is out of", CLEAN_END_HINT),),
)

EXERCISES = (EX06, EX07)
