"""Exercises on the denoiser: ex04 the sinusoidal timestep embedding, ex05 the training loss, ex14 the
U-Net's ResBlock."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff.grading import references as ref
from minidiff.grading.compare import problem, same, wrong_samples
from minidiff.grading.sandbox import materialise
from minidiff.grading.spec import (
    FLOAT32_TOL,
    T_STEPS,
    Case,
    Exercise,
    Inputs,
    Variant,
    noised,
    randint,
    randn,
)

MAX_PERIOD = 10_000  # Vaswani et al. 2017, sec. 3.5 (minidiff.layers.MAX_PERIOD)
EMBEDDING_TOL = (1e-3, 1e-3)  # sin(t w) with t up to 999 in float32: argument round-off reaches ~1e-4
T_SHIFT_HINT = "t runs from 0 to T - 1 and is used as is: don't add or subtract 1"
T0_HINT = "at t = 0 noise is already added: xt = q_sample(x0, 0, noise) is not x0"
LOSS_DTYPES = (torch.float64,)  # a loss computed in float64 (alpha_bar's dtype) is right too

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
    cases=(
        Case("t = 0, 1, a random step and 999; dim = 32", 4,
             lambda g: dict(t=torch.tensor([0, 1] + randint(g, 2, 999) + [999]), dim=32), EMBEDDING_TOL),
        Case("continuous t in [0, 1000), dim = 8", 2,
             lambda g: dict(t=torch.rand(3, generator=g) * T_STEPS, dim=8), EMBEDDING_TOL),
        Case("dim = 2: a single frequency", 2,
             lambda g: dict(t=torch.tensor([0] + randint(g, 1, 1000, 2)), dim=2), EMBEDDING_TOL),
        Case("batch size 1 at t = T - 1, dim = 16", 2,
             lambda g: dict(t=torch.tensor([999]), dim=16), EMBEDDING_TOL),
    ),
    variants=(
        Variant("zeros", lambda t, dim: torch.zeros(len(t), dim), "you return zeros"),
        Variant("identity", lambda t, dim: t.float()[:, None].expand(len(t), dim),
                "you repeat t itself: embed it as sines and cosines of t times each frequency"),
        Variant("cos_first", lambda t, dim: _embedding(t, dim, order="cos_sin"),
                "put the sines first: [sin(t w_0), ..., sin(t w_{half-1}), cos(t w_0), ..., "
                "cos(t w_{half-1})]"),
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


def _loss_inputs(g: torch.Generator, with_cond: bool = False) -> dict:
    return dict(model=dict(model=dict(w=randn(g, 3), b=randn(g, 3))), x0=randn(g, 4, 3, 8, 8),
                t=torch.tensor([0] + randint(g, 1, 999, 2) + [999]), noise=randn(g, 4, 3, 8, 8),
                alpha_bar=ref.alpha_bar_cosine(T_STEPS), cond=randn(g, 4, 5, 16) if with_cond else None)


def _model_sees_xt(inputs: Inputs, record: dict) -> str | None:
    calls = record.get("calls")
    if not isinstance(calls, list) or not calls:
        return "it never called model(xt, t, cond)"
    xt, t, _ = calls[0] if isinstance(calls[0], list) and len(calls[0]) == 3 else (None, None, None)
    expected = ref.q_sample(inputs["x0"], inputs["t"], inputs["noise"], inputs["alpha_bar"])
    if same(xt, inputs["x0"], FLOAT32_TOL):
        return "it passed x0 to the model\n  hint: the model sees the noisy xt = q_sample(x0, t, noise)"
    if same(xt, noised(inputs["alpha_bar"], inputs["t"] - 1, inputs["x0"], inputs["noise"]), FLOAT32_TOL):
        return f"it passed the model xt at t - 1\n  hint: {T_SHIFT_HINT}"
    found = problem(xt, expected, FLOAT32_TOL, LOSS_DTYPES)
    if found is not None:
        wrong, right = wrong_samples(xt, expected, inputs["t"], FLOAT32_TOL)
        t0 = bool(wrong) and bool(right) and all(inputs["t"][i] == 0 for i in wrong)
        return f"the xt it passed to the model: {found[1]}" + (
            f"\n  wrong only for the samples at t = 0\n  hint: {T0_HINT}" if t0 else "")
    if type(t) is not Tensor or t.shape != inputs["t"].shape or not torch.equal(t.long(), inputs["t"]):
        shown = t.tolist() if type(t) is Tensor else type(t).__name__
        return f"it passed the model t = {shown}; expected {inputs['t'].tolist()}\n  hint: {T_SHIFT_HINT}"
    return None


def _model_sees_cond(inputs: Inputs, record: dict) -> str | None:
    """cond reaches the model unchanged, and the loss is still right (a loss term alone can cancel out)."""
    calls = record.get("calls")
    if not isinstance(calls, list) or not calls:
        return "it never called model(xt, t, cond)"
    cond = calls[0][2] if isinstance(calls[0], list) and len(calls[0]) == 3 else None
    if cond is None:
        return "it called the model without cond\n  hint: pass cond on: call model(xt, t, cond)"
    if not same(cond, inputs["cond"], FLOAT32_TOL):
        return "the cond it passed to the model is not the cond it was given: pass it on unchanged"
    value = record.get("value")
    got = value.get("tensor") if isinstance(value, dict) else None
    found = problem(got, ref.diffusion_loss(**materialise(inputs)).detach(), FLOAT32_TOL, LOSS_DTYPES)
    return None if found is None else f"the loss with cond given: {found[1]}"


def _gradients_flow(inputs: Inputs, record: dict) -> str | None:
    if "backward_error" in record:
        return (f"loss.backward() raised {record['backward_error']}\n  hint: don't use torch.no_grad(), "
                ".detach() or .item(): training needs the gradient")
    grads = record.get("grads")
    args = materialise(inputs)
    ref.diffusion_loss(**args).backward()
    for name, got, want in zip(("w", "b"), grads if isinstance(grads, list) else [None, None],
                               (args["model"].w.grad, args["model"].b.grad)):
        if type(got) is not Tensor:
            return f"the loss has no gradient with respect to the model's parameter {name}"
        found = problem(got, want, FLOAT32_TOL, LOSS_DTYPES)
        if found is not None:
            return f"the gradient of the loss with respect to the model's parameter {name}: {found[1]}"
    return None


def _loss_with(pred_of: str, target_of: str = "noise", shift: int = 0, reduction: str = "mean",
               detach: bool = False, pass_cond: bool = True, l1: bool = False, clean_t0: bool = False):
    def variant(model, x0, t, noise, alpha_bar, cond=None):
        xt = noised(alpha_bar, (t - shift).clamp(min=0), x0, noise) if pred_of == "xt" else x0
        if clean_t0:
            xt = torch.where((t == 0).view(-1, *([1] * (x0.ndim - 1))), x0, xt)  # (B, ...)
        pred = model(xt, t, cond if pass_cond else None)
        target = noise if target_of == "noise" else x0
        loss = (F.l1_loss if l1 else F.mse_loss)(pred, target, reduction=reduction)
        return loss.detach() if detach else loss
    return variant


EX05 = Exercise(
    id="ex05", topic="training_loss", title="training loss", function="diffusion_loss",
    notebook="notebook 03 (the U-Net denoiser)", reference=ref.diffusion_loss,
    cases=(
        Case("loss on images (4, 3, 8, 8), t = 0, two random steps, 999", 3,
             _loss_inputs, dtypes=LOSS_DTYPES),
        Case("the model sees xt = q_sample(x0, t, noise) and t", 3, _loss_inputs, check=_model_sees_xt),
        Case("gradients reach the model's parameters", 2, _loss_inputs, check=_gradients_flow),
        Case("cond is passed on to the model", 2,
             lambda g: _loss_inputs(g, with_cond=True), check=_model_sees_cond),
    ),
    variants=(
        Variant("zeros", lambda model, x0, t, noise, alpha_bar, cond=None: torch.zeros(()),
                "you return zero"),
        Variant("identity", lambda model, x0, t, noise, alpha_bar, cond=None: x0,
                "return the scalar loss, not x0"),
        Variant("target_x0", _loss_with("xt", target_of="x0"),
                "an eps-prediction model is trained to predict the noise: the target is `noise`, not x0"),
        Variant("no_noising", _loss_with("x0"),
                "the model must see the noisy xt = q_sample(x0, t, noise), not x0"),
        Variant("off_by_one", _loss_with("xt", shift=1), T_SHIFT_HINT),
        Variant("no_noise_at_t0", _loss_with("xt", clean_t0=True), T0_HINT),
        Variant("sum", _loss_with("xt", reduction="sum"),
                "average the squared error over all elements (F.mse_loss's default), don't sum it"),
        Variant("detached", _loss_with("xt", detach=True)),
        Variant("no_cond", _loss_with("xt", pass_cond=False), "pass cond on: call model(xt, t, cond)"),
        Variant("l1", _loss_with("xt", l1=True), "use the squared error (MSE), not the absolute error"),
    ),
    error_hints=((r"must match the size of tensor",
                  "alpha_bar[t] has shape (B,): reshape it to (B, 1, ..., 1) so it broadcasts over x0"),),
)


# ex14 --------------------------------------------------------------------------------------------

OUTPUT, PARAMETERS = 0, 1  # what the grader reads from a block: (its output, its number of parameters)
NORM_SPREAD = 0.2  # GroupNorm scales 1 + 0.2 N(0, 1) and shifts 0.2 N(0, 1): not the identity of a fresh init
# The widths graded (6, 12, 24) have 6 channels per GroupNorm group (layers.num_groups), so the added
# embedding shows in the output, and a block with another group count (e.g. one_group) gives other numbers.


def _block_state(g: torch.Generator, in_ch: int, out_ch: int, emb_dim: int) -> dict[str, Tensor]:
    """Random weights under the reference block's parameter names: convolutions scaled by 1 / sqrt(fan-in)."""
    state = {}
    for name, p in ref.res_block(in_ch, out_ch, emb_dim).state_dict().items():
        if name.startswith("norm"):
            state[name] = (1.0 if name.endswith("weight") else 0.0) + NORM_SPREAD * randn(g, *p.shape)
        else:
            fan_in = p[0].numel() if p.ndim > 1 else p.shape[0]
            state[name] = randn(g, *p.shape) / math.sqrt(fan_in)
    return state


def _block_inputs(g: torch.Generator, batch: int, in_ch: int, out_ch: int, emb_dim: int,
                  size: tuple[int, int] = (6, 6), run: bool = True) -> Inputs:
    forward = dict(state=_block_state(g, in_ch, out_ch, emb_dim),
                   args=[randn(g, batch, in_ch, *size), randn(g, batch, emb_dim)]) if run else {}
    return dict(in_ch=in_ch, out_ch=out_ch, emb_dim=emb_dim, forward=forward)


class _WrongBlock(nn.Module):
    """The reference block's layers with one of the usual mistakes in how they are wired."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, mistake: str) -> None:
        super().__init__()
        self.mistake = mistake
        self.norm1 = nn.GroupNorm(1 if mistake == "one_group" else ref.layers.num_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, in_ch if mistake == "emb_before_norm1" else out_ch)
        self.norm2 = nn.GroupNorm(ref.layers.num_groups(out_ch), out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        always = mistake == "skip_conv_always"
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch or always else nn.Identity()
        if mistake == "no_skip_projection":
            self.skip = nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        e = self.emb_proj(emb if self.mistake == "no_emb_silu" else F.silu(emb))  # (B, C)
        e = e[:, :, None, None]  # (B, C, 1, 1)
        if self.mistake == "emb_before_norm1":
            h = self.conv1(F.silu(self.norm1(x + e)))  # (B, out_ch, H, W)
        else:
            h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        if self.mistake not in ("emb_after_norm2", "emb_before_norm1"):
            h = h + e
        h = self.norm2(h)
        h = h + e if self.mistake == "emb_after_norm2" else h
        h = self.conv2(h if self.mistake == "no_silu2" else F.silu(h))  # (B, out_ch, H, W)
        if self.mistake == "no_residual":
            return h
        skip = self.skip(x)
        if skip.shape[1] != h.shape[1]:  # no_skip_projection: pad or cut the channels to make it fit
            skip = F.pad(skip, (0, 0, 0, 0, 0, h.shape[1] - skip.shape[1]))  # (B, out_ch, H, W)
        return skip + h


def _wrong_block(mistake: str):
    return lambda in_ch, out_ch, emb_dim: _WrongBlock(in_ch, out_ch, emb_dim, mistake)


NAMES_HINT = ("name the layers as the stub says (norm1, conv1, emb_proj, norm2, conv2, skip): the grader "
              "loads its weights into your block by these names")

EX14 = Exercise(
    id="ex14", topic="res_block", title="ResBlock with time embedding", function="ResBlock",
    notebook="notebook 03 (the U-Net denoiser)", reference=ref.res_block,
    cases=(
        Case("12 -> 24 channels, emb_dim 16, x (2, 12, 6, 6): the output", 3,
             lambda g: _block_inputs(g, 2, 12, 24, 16), output=OUTPUT),
        Case("24 -> 24 channels (the skip is the identity), emb_dim 8: the output", 2,
             lambda g: _block_inputs(g, 2, 24, 24, 8), output=OUTPUT),
        Case("batch size 1, 6 -> 12 channels, x (1, 6, 5, 7): the output", 1,
             lambda g: _block_inputs(g, 1, 6, 12, 4, size=(5, 7)), output=OUTPUT),
        Case("the number of parameters of an 8 -> 16 block, emb_dim 12", 2,
             lambda g: _block_inputs(g, 1, 8, 16, 12, run=False), output=PARAMETERS),
        Case("the number of parameters of a 16 -> 16 block, emb_dim 32", 2,
             lambda g: _block_inputs(g, 1, 16, 16, 32, run=False), output=PARAMETERS),
    ),
    variants=(
        Variant("emb_before_norm1", _wrong_block("emb_before_norm1"),
                "add the projected embedding after the first convolution, to its out_ch channels"),
        Variant("emb_after_norm2", _wrong_block("emb_after_norm2"),
                "add the embedding before the second GroupNorm, so that it normalises the sum"),
        Variant("no_emb_silu", _wrong_block("no_emb_silu"), "apply SiLU to emb before emb_proj"),
        Variant("no_silu2", _wrong_block("no_silu2"), "GroupNorm -> SiLU -> conv, twice"),
        Variant("one_group", _wrong_block("one_group"),
                "GroupNorm's group count is the largest of 32, 16, 8, 4, 2, 1 that divides the channels"),
        Variant("no_residual", _wrong_block("no_residual"), "return skip(x) + h: the block is residual"),
        Variant("no_skip_projection", _wrong_block("no_skip_projection"),
                "when in_ch != out_ch the skip is a 1x1 convolution from in_ch to out_ch"),
        Variant("skip_conv_always", _wrong_block("skip_conv_always"),
                "when in_ch == out_ch the skip is the identity, with no parameters"),
    ),
    error_hints=((r"Missing key|Unexpected key", NAMES_HINT),
                 (r"size mismatch", "emb_proj maps emb_dim to out_ch; conv1 maps in_ch to out_ch"),
                 (r"must match the size of tensor", "emb_proj(silu(emb)) is (B, out_ch): view it as "
                  "(B, out_ch, 1, 1) to add it to every pixel")),
)

EXERCISES = (EX04, EX05, EX14)
