"""Exercises on the reverse process: ex06 the DDPM posterior step, ex07 the DDIM step, ex12 the DDIM loop,
ex13 the DPM-Solver++(2M) step."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidiff.grading import references as ref
from minidiff.grading.spec import T_STEPS, Case, Exercise, Inputs, Variant, broadcast_like, randint, randn
from minidiff.sampling import make_timesteps
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


# ex12 --------------------------------------------------------------------------------------------

MODEL_SPREAD = 0.2  # the stand-in eps model's per-channel weights are 1 + 0.2 N(0, 1): eps close to xt


def _loop_inputs(g: torch.Generator, shape: tuple[int, ...], steps: int, schedule: str,
                 dtype: torch.dtype = torch.float32) -> Inputs:
    channels = shape[1]
    model = dict(model=dict(w=1 + MODEL_SPREAD * randn(g, channels), b=MODEL_SPREAD * randn(g, channels)))
    return dict(model=model, x_T=randn(g, *shape, dtype=dtype),
                alpha_bar=make_schedule(schedule, T_STEPS).alpha_bar, steps=steps)


def _ddim_loop(spacing: str = "trailing", t_shift: int = 0, clean_end: bool = True, int_t: bool = False,
               eps_once: bool = False):
    def variant(model, x_T: Tensor, alpha_bar: Tensor, steps: int) -> Tensor:
        ts = (make_timesteps(len(alpha_bar), steps, spacing) - t_shift).clamp(min=0).tolist()
        ab = alpha_bar.tolist() + [1.0]  # index -1 is the clean end
        x, eps_pred = x_T, None
        for t, t_prev in zip(ts, ts[1:] + [-1 if clean_end else 0]):
            t_batch = t if int_t else torch.full((len(x),), t)  # (B,)
            eps_pred = eps_pred if eps_once and eps_pred is not None else model(x, t_batch, None)
            x0_pred = (x - math.sqrt(1 - ab[t]) * eps_pred) / math.sqrt(ab[t])
            x = math.sqrt(ab[t_prev]) * x0_pred + math.sqrt(1 - ab[t_prev]) * eps_pred
        return x
    return variant


def _model_sees_plan(inputs: Inputs, record: dict) -> str | None:
    calls = record.get("calls")
    if not isinstance(calls, list) or not calls:
        return "it never called model(xt, t, cond)"
    planned = make_timesteps(T_STEPS, inputs["steps"]).tolist()[:len(calls)]
    seen = []
    for call in calls:
        t = call[1] if isinstance(call, list) and len(call) == 3 else None
        if type(t) is not Tensor or t.shape != (inputs["x_T"].shape[0],):
            return (f"it passed the model t = {t.tolist() if type(t) is Tensor else type(t).__name__}; "
                    "expected a (B,) tensor of the step, e.g. torch.full((B,), t)")
        seen.append(t.tolist()[0])
    if seen != planned:
        return (f"the model was called at t = {seen}; the first steps are {planned}\n  hint: "
                f"{SPACING_HINT}")
    return None


SPACING_HINT = ("minidiff's trailing spacing: t_i = round(T - i * T / steps) - 1 for i = 0 .. steps - 1, "
                "so the first step is T - 1 (pure noise) and the last one steps to -1, the clean end")

EX12 = Exercise(
    id="ex12", topic="ddim_sampler", title="DDIM sampling loop", function="ddim_sample", notebook=NOTEBOOK,
    reference=ref.ddim_sample,
    cases=(
        Case("20 steps on images (2, 3, 4, 4), cosine schedule", 3,
             lambda g: _loop_inputs(g, (2, 3, 4, 4), 20, "cosine")),
        Case("a random number of steps (2 to 60) on 2-D points (5, 2), linear schedule", 2,
             lambda g: _loop_inputs(g, (5, 2), randint(g, 2, 61)[0], "linear")),
        Case("7 steps: T / steps is not a whole number, the timesteps are rounded", 2,
             lambda g: _loop_inputs(g, (3, 2), 7, "cosine")),
        Case("steps = 1: one jump from t = T - 1 to the clean end", 1,
             lambda g: _loop_inputs(g, (2, 3, 2, 2), 1, "linear")),
        Case("the model is called with t = the planned steps, as a (B,) tensor", 1,
             lambda g: _loop_inputs(g, (2, 2), 16, "cosine"), check=_model_sees_plan),
        Case("batch size 1, float64 noise gives a float64 sample", 1,
             lambda g: _loop_inputs(g, (1, 2), 10, "linear", torch.float64), tol=(1e-10, 1e-8)),
    ),
    variants=(
        Variant("identity", lambda model, x_T, alpha_bar, steps: x_T, "you return x_T unchanged"),
        Variant("leading_spacing", _ddim_loop(spacing="leading"), SPACING_HINT),
        Variant("linspace_spacing", _ddim_loop(spacing="linspace"), SPACING_HINT),
        Variant("off_by_one", _ddim_loop(t_shift=1), SPACING_HINT),
        Variant("ends_at_t0", _ddim_loop(clean_end=False),
                "the last step goes to t_prev = -1, the clean end (alpha_bar = 1), not to t = 0"),
        Variant("int_t", _ddim_loop(int_t=True),
                "call the model with t as a (B,) tensor: model(x, torch.full((B,), t), None)"),
        Variant("eps_once", _ddim_loop(eps_once=True),
                "call the model at every step, on the current x: its noise prediction changes as x does"),
    ),
    error_hints=((r"'int' object has no attribute|must be Tensor",
                  "call the model with t as a (B,) tensor: model(x, torch.full((B,), t), None)"),
                 (r"out of bounds|index -?\d+ is out of", CLEAN_END_HINT)),
)

# ex13 --------------------------------------------------------------------------------------------


def _dpm_inputs(g: torch.Generator, shape: tuple[int, ...], ts: list[int], schedule: str, first: bool = False,
                dtype: torch.dtype = torch.float32) -> Inputs:
    ab = make_schedule(schedule, T_STEPS).alpha_bar.tolist() + [1.0]  # index -1 is the clean end
    t_last, t, t_prev = ts
    return dict(xt=randn(g, *shape, dtype=dtype), x0_pred=randn(g, *shape, dtype=dtype),
                x0_pred_last=None if first else randn(g, *shape, dtype=dtype),
                alpha_bar_last=0.0 if first else ab[t_last], alpha_bar_t=ab[t], alpha_bar_prev=ab[t_prev])


def _consecutive(g: torch.Generator, steps: int) -> list[int]:
    """Three consecutive timesteps (t_last, t, t_prev) of a trailing plan, none the clean end."""
    ts = make_timesteps(T_STEPS, steps).tolist()
    i = randint(g, 1, steps - 1)[0]
    return ts[i - 1:i + 2]


def _exact_data(g: torch.Generator) -> Inputs:
    """x0_pred = x0_pred_last = the x0 of xt = q_sample(x0, t, eps): the step lands on q_sample at t_prev."""
    inputs = _dpm_inputs(g, (3, 2, 4, 4), _consecutive(g, 20), "cosine")
    x0, eps = inputs["x0_pred"], inputs["xt"]
    inputs.update(xt=math.sqrt(inputs["alpha_bar_t"]) * x0 + math.sqrt(1 - inputs["alpha_bar_t"]) * eps,
                  x0_pred_last=x0.clone(), eps=eps)
    return inputs


def _q_sample_prev(inputs: Inputs) -> Tensor:
    ab_prev = inputs["alpha_bar_prev"]
    return math.sqrt(ab_prev) * inputs["x0_pred"] + math.sqrt(1 - ab_prev) * inputs["eps"]


def _dpm(order: int = 2, std: str = "std", half: bool = True, r_inverted: bool = False,
         clean_end: bool = True, even_steps: bool = False):
    def lam(ab: float) -> float:  # lambda = log(alpha / std), half the log-SNR (Lu et al. 2022)
        return (0.5 if half else 1.0) * math.log(ab / (1 - ab))

    def variant(xt, x0_pred, x0_pred_last, alpha_bar_last, alpha_bar_t, alpha_bar_prev):
        if clean_end and alpha_bar_prev == 1.0:
            return x0_pred
        def noise_level(ab: float) -> float:  # VP's std, or (the mistake) VE's sigma
            return math.sqrt(1 - ab) if std == "std" else math.sqrt((1 - ab) / ab)

        h = (lam(alpha_bar_prev) if alpha_bar_prev < 1 else math.inf) - lam(alpha_bar_t)
        d = x0_pred
        if order == 2 and x0_pred_last is not None:
            r = 1.0 if even_steps else (lam(alpha_bar_t) - lam(alpha_bar_last)) / h
            r = 1 / r if r_inverted else r
            d = (1 + 1 / (2 * r)) * x0_pred - 1 / (2 * r) * x0_pred_last
        return noise_level(alpha_bar_prev) / noise_level(alpha_bar_t) * xt - math.sqrt(alpha_bar_prev) * (
            math.expm1(-h) * d)
    return variant


EX13 = Exercise(
    id="ex13", topic="dpm_solver", title="DPM-Solver++(2M) step", function="dpmpp_2m_step",
    notebook=NOTEBOOK, reference=ref.dpmpp_2m_step,
    cases=(
        Case("a second-order step between consecutive steps of a 20-step plan, images (4, 3, 8, 8)", 3,
             lambda g: _dpm_inputs(g, (4, 3, 8, 8), _consecutive(g, 20), "cosine")),
        Case("with the exact x0 at both steps, q_sample(x0, t) steps to q_sample(x0, t_prev)", 2, _exact_data,
             expected=_q_sample_prev),
        Case("the first step (x0_pred_last = None) is first order", 2,
             lambda g: _dpm_inputs(g, (2, 3, 4, 4), [0, 999, 949], "cosine", first=True)),
        Case("uneven steps: t_last - t differs from t - t_prev, 2-D points (5, 2), linear schedule", 1,
             lambda g: _dpm_inputs(g, (5, 2), [900, 700, 650], "linear")),
        Case("the last step, to the clean end (alpha_bar_prev = 1), returns x0_pred", 1,
             lambda g: _dpm_inputs(g, (2, 2, 4, 4), [99, 49, -1], "cosine")),
        Case("float64 inputs give a float64 result", 1,
             lambda g: _dpm_inputs(g, (2, 2), _consecutive(g, 10), "linear", dtype=torch.float64),
             tol=(1e-10, 1e-8)),
    ),
    variants=(
        Variant("identity", lambda xt, x0_pred, x0_pred_last, alpha_bar_last, alpha_bar_t, alpha_bar_prev: xt,
                "you return xt unchanged"),
        Variant("first_order", _dpm(order=1),
                "the 2M step uses the last step's x0_pred too: "
                "D = (1 + 1/(2r)) x0_pred - 1/(2r) x0_pred_last"),
        Variant("even_steps", _dpm(even_steps=True),
                "r = (lambda_t - lambda_last) / (lambda_prev - lambda_t) is 1 only for even steps in lambda"),
        Variant("r_inverted", _dpm(r_inverted=True),
                "r is the last step over this one: (lambda_t - lambda_last) / (lambda_prev - lambda_t)"),
        Variant("sigma_for_std", _dpm(std="sigma"),
                "xt is scaled by sqrt(1 - alpha_bar_prev) / sqrt(1 - alpha_bar_t), the VP noise levels, not "
                "by the ratio of sigma = sqrt((1 - alpha_bar) / alpha_bar), the VE ones"),
        Variant("full_log_snr", _dpm(half=False),
                "lambda = log(alpha_t / std_t) is half the log-SNR: lambda = 0.5 * log(ab / (1 - ab))"),
        Variant("no_clean_end", _dpm(clean_end=False),
                "at the clean end (alpha_bar_prev = 1) the step returns x0_pred itself"),
    ),
    error_hints=((r"math domain error|division by zero",
                  "at the clean end (alpha_bar_prev = 1) lambda is infinite: return x0_pred there"),
                 (r"NoneType", "on the first step x0_pred_last is None: take a first-order step")),
)

EXERCISES = (EX06, EX07, EX12, EX13)
