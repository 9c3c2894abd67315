"""Exercises on the denoiser: ex04 the sinusoidal timestep embedding, ex05 the training loss."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff.grading import references as ref
from minidiff.grading.compare import same
from minidiff.grading.context import Context, matches_reference
from minidiff.grading.spec import Exercise, Failure, Test, Variant, generator, noised, randn

MAX_PERIOD = 10_000  # Vaswani et al. 2017, sec. 3.5 (minidiff.layers.MAX_PERIOD)
EMBEDDING_TOL = (1e-3, 1e-3)  # sin(t w) with t up to 999 in float32: argument round-off reaches ~1e-4
T_SHIFT_HINT = "t runs from 0 to T - 1 and is used as is: don't add or subtract 1"

# ex04 --------------------------------------------------------------------------------------------


def _embedding(t: Tensor, dim: int, order: str = "sin_cos", shift: int = 0, t_shift: float = 0.0) -> Tensor:
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32)  # (half,)
    freqs = torch.exp(-math.log(MAX_PERIOD) * i / (half - shift))  # (half,)
    args = (t.float() + t_shift)[:, None] * freqs[None, :]  # (B, half)
    if order == "cos_sin":
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)
    if order == "interleaved":
        return torch.stack([torch.sin(args), torch.cos(args)], dim=-1).reshape(len(t), dim)  # (B, dim)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (B, dim)


EX04 = Exercise(
    id="ex04", topic="timestep_embedding", title="timestep embedding", function="timestep_embedding",
    notebook="notebook 03 (the U-Net denoiser)", reference=ref.timestep_embedding,
    tests=(
        matches_reference("t = [0, 1, 10, 999], dim = 32", 4,
                          lambda: dict(t=torch.tensor([0, 1, 10, 999]), dim=32), EMBEDDING_TOL),
        matches_reference("continuous t = [0.5, 250.25], dim = 8", 3,
                          lambda: dict(t=torch.tensor([0.5, 250.25]), dim=8), EMBEDDING_TOL),
        matches_reference("dim = 2: a single frequency", 3,
                          lambda: dict(t=torch.tensor([0, 5, 999]), dim=2), EMBEDDING_TOL),
    ),
    variants=(
        Variant("zeros", lambda t, dim: torch.zeros(len(t), dim), "you return zeros"),
        Variant("identity", lambda t, dim: t.float()[:, None].expand(len(t), dim),
                "you repeat t itself: embed it as sines and cosines of t times each frequency"),
        Variant("cos_first", lambda t, dim: _embedding(t, dim, order="cos_sin"),
                "put the sines first: [sin(t w_0), ..., sin(t w_{half-1}), cos(t w_0), ..., cos(t w_{half-1})]"),
        Variant("interleaved", lambda t, dim: _embedding(t, dim, order="interleaved"),
                "concatenate all sines, then all cosines; don't interleave them"),
        Variant("half_minus_one", lambda t, dim: _embedding(t, dim, shift=1),
                "the exponent is -log(10000) * i / half with half = dim // 2 (as in Stable Diffusion), "
                "not i / (half - 1) (as in the original DDPM code)"),
        Variant("off_by_one", lambda t, dim: _embedding(t, dim, t_shift=1.0), T_SHIFT_HINT),
        Variant("float64", lambda t, dim: _embedding(t, dim).double(),
                "return float32: the embedding feeds float32 layers"),
    ),
)

# ex05 --------------------------------------------------------------------------------------------


class _Denoiser(nn.Module):
    """A tiny deterministic 'eps model' that records what it was called with."""

    label = "model"  # how a call description names it

    def __init__(self, channels: int, seed: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(channels, generator=generator(seed)))
        self.b = nn.Parameter(torch.randn(channels, generator=generator(seed + 1)))
        self.calls: list[tuple[Tensor, Tensor]] = []

    def forward(self, xt: Tensor, t: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        self.calls.append((xt.detach().clone(), torch.as_tensor(t).detach().clone()))
        per_channel = (1, -1) + (1,) * (xt.ndim - 2)  # (1, C, 1, ..., 1)
        per_sample = (-1,) + (1,) * (xt.ndim - 1)  # (B, 1, ..., 1)
        out = xt * self.w.view(per_channel) + self.b.view(per_channel) + 1e-3 * t.to(xt.dtype).view(per_sample)
        if cond is not None:
            out = out + cond.mean(dim=(1, 2)).to(xt.dtype).view(per_sample)  # (B, 1, ..., 1)
        return out


def _loss_inputs(with_cond: bool = False) -> dict:
    return dict(model=_Denoiser(3, seed=51), x0=randn(4, 3, 8, 8, seed=52), t=torch.tensor([0, 10, 500, 999]),
                noise=randn(4, 3, 8, 8, seed=53), alpha_bar=ref.alpha_bar_cosine(1000),
                cond=randn(4, 5, 16, seed=54) if with_cond else None)


def _model_sees_xt(ctx: Context) -> None:
    inputs = _loss_inputs()
    ctx.call(inputs)
    model, call = inputs["model"], ctx.describe(inputs)
    if not model.calls:
        raise Failure(f"{call} never called model(xt, t, cond)")
    xt, t = model.calls[0]
    fresh = _loss_inputs()
    expected = ref.q_sample(fresh["x0"], fresh["t"], fresh["noise"], fresh["alpha_bar"])
    if same(xt, fresh["x0"], 1e-6, 1e-5):
        raise Failure(f"{call} passed x0 to the model\n  hint: the model sees the noisy xt = q_sample(x0, t, noise)")
    if same(xt, noised(fresh["alpha_bar"], fresh["t"] - 1, fresh["x0"], fresh["noise"]), 1e-6, 1e-5):
        raise Failure(f"{call} passed the model xt at t - 1\n  hint: {T_SHIFT_HINT}")
    ctx.expect_close(xt, expected, inputs, what=f"the xt that {call} passed to the model")
    if not torch.equal(t.long(), fresh["t"]):
        raise Failure(f"{call} passed the model t = {t.tolist()}; expected {fresh['t'].tolist()}\n"
                      f"  hint: {T_SHIFT_HINT}")


def _gradients_flow(ctx: Context) -> None:
    inputs = _loss_inputs()
    loss = ctx.call(inputs)
    call = ctx.describe(inputs)
    if not isinstance(loss, Tensor) or not loss.requires_grad:
        raise Failure(f"{call} returned a loss that does not depend on the model's parameters\n"
                      "  hint: don't use torch.no_grad(), .detach() or .item(): training needs the gradient")
    try:
        loss.backward()
    except Exception as error:  # noqa: BLE001 - e.g. a loss that is not a scalar
        raise Failure(f"{call}: loss.backward() raised {type(error).__name__}: {error}") from None
    fresh = _loss_inputs()
    ctx.exercise.reference(*[fresh[p] for p in ctx.exercise.params]).backward()
    model = inputs["model"]
    for name in ("w", "b"):
        grad = getattr(model, name).grad
        if grad is None:
            raise Failure(f"{call}: the loss has no gradient with respect to the model's parameter {name}")
        ctx.expect_close(grad, getattr(fresh["model"], name).grad, inputs,
                         what=f"the gradient of {call} with respect to the model's parameter {name}")


def _loss_with(pred_of: str, target_of: str = "noise", shift: int = 0, reduction: str = "mean", detach: bool = False,
               pass_cond: bool = True, l1: bool = False):
    def variant(model, x0, t, noise, alpha_bar, cond=None):
        xt = noised(alpha_bar, t - shift, x0, noise) if pred_of == "xt" else x0
        pred = model(xt, t, cond if pass_cond else None)
        target = noise if target_of == "noise" else x0
        loss = (F.l1_loss if l1 else F.mse_loss)(pred, target, reduction=reduction)
        return loss.detach() if detach else loss
    return variant


EX05 = Exercise(
    id="ex05", topic="training_loss", title="training loss", function="diffusion_loss",
    notebook="notebook 03 (the U-Net denoiser)", reference=ref.diffusion_loss,
    tests=(
        matches_reference("loss on images (4, 3, 8, 8), t = [0, 10, 500, 999]", 3, _loss_inputs),
        Test("the model sees xt = q_sample(x0, t, noise) and t", 3, _model_sees_xt),
        Test("gradients reach the model's parameters", 2, _gradients_flow),
        matches_reference("cond is passed on to the model", 2, lambda: _loss_inputs(with_cond=True)),
    ),
    variants=(
        Variant("zeros", lambda model, x0, t, noise, alpha_bar, cond=None: torch.zeros(()), "you return zero"),
        Variant("identity", lambda model, x0, t, noise, alpha_bar, cond=None: x0, "return the scalar loss, not x0"),
        Variant("target_x0", _loss_with("xt", target_of="x0"),
                "an eps-prediction model is trained to predict the noise: the target is `noise`, not x0"),
        Variant("no_noising", _loss_with("x0"), "the model must see the noisy xt = q_sample(x0, t, noise), not x0"),
        Variant("off_by_one", _loss_with("xt", shift=1), T_SHIFT_HINT),
        Variant("sum", _loss_with("xt", reduction="sum"),
                "average the squared error over all elements (F.mse_loss's default), don't sum it"),
        Variant("detached", _loss_with("xt", detach=True)),
        Variant("no_cond", _loss_with("xt", pass_cond=False), "pass cond on: call model(xt, t, cond)"),
        Variant("l1", _loss_with("xt", l1=True), "use the squared error (MSE), not the absolute error"),
    ),
    error_hints=((r"must match the size of tensor",
                  "alpha_bar[t] has shape (B,): reshape it to (B, 1, ..., 1) so it broadcasts over x0"),),
)

EXERCISES = (EX04, EX05)
