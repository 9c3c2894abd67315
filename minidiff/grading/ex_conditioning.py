"""Exercises on text conditioning: ex08 classifier-free guidance, ex09 the CLIP loss, ex10 cross-attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from minidiff.grading import references as ref
from minidiff.grading.spec import Case, Exercise, Variant, randn, uniform, unit_rows

CLIP_TEMPERATURE = 0.07  # Radford et al. 2021, sec. 2.5: CLIP's initial temperature
MATCHED_TEMPERATURE = 0.2  # logits scaled by 5: matched pairs then have a small loss that is not 0 in float32

# ex08 --------------------------------------------------------------------------------------------


def _cfg_inputs(g: torch.Generator, shape: tuple[int, ...], guidance_scale: float) -> dict:
    return dict(eps_uncond=randn(g, *shape), eps_cond=randn(g, *shape), guidance_scale=guidance_scale)


SIGN_HINT = ("guidance starts at the unconditional prediction and moves towards the conditional one: "
             "eps_uncond + guidance_scale * (eps_cond - eps_uncond); check the sign and the order")

EX08 = Exercise(
    id="ex08", topic="guidance", title="classifier-free guidance", function="cfg_combine",
    notebook="notebook 06 (conditioning and guidance)", reference=ref.cfg_combine,
    cases=(
        Case("a random guidance_scale in [1.5, 10) on images (4, 3, 8, 8)", 3,
             lambda g: _cfg_inputs(g, (4, 3, 8, 8), uniform(g, 1.5, 10.0))),
        Case("guidance_scale = 0 gives the unconditional prediction", 2,
             lambda g: _cfg_inputs(g, (2, 3, 4, 4), 0.0)),
        Case("guidance_scale = 1 gives the conditional prediction", 2,
             lambda g: _cfg_inputs(g, (2, 3, 4, 4), 1.0)),
        Case("a random guidance_scale in (0, 1) on 2-D points (5, 2)", 2,
             lambda g: _cfg_inputs(g, (5, 2), uniform(g, 0.05, 0.95))),
        Case("batch size 1", 1, lambda g: _cfg_inputs(g, (1, 3, 4, 4), uniform(g, 1.5, 10.0))),
    ),
    variants=(
        Variant("zeros", lambda eps_uncond, eps_cond, guidance_scale: torch.zeros_like(eps_cond),
                "you return zeros"),
        Variant("returns_cond", lambda eps_uncond, eps_cond, guidance_scale: eps_cond,
                "you return eps_cond unchanged: guidance extrapolates away from eps_uncond"),
        Variant("sign_flipped", lambda eps_uncond, eps_cond, guidance_scale:
                eps_uncond - guidance_scale * (eps_cond - eps_uncond), SIGN_HINT),
        Variant("swapped", lambda eps_uncond, eps_cond, guidance_scale:
                eps_cond + guidance_scale * (eps_uncond - eps_cond), SIGN_HINT),
        Variant("w_plus_one", lambda eps_uncond, eps_cond, guidance_scale:
                eps_uncond + (guidance_scale + 1) * (eps_cond - eps_uncond),
                "minidiff's guidance_scale is the weight w in eps_uncond + w * (eps_cond - eps_uncond), so "
                "that "
                "w = 1 means no guidance (Stable Diffusion's convention), not Ho & Salimans' w + 1"),
        Variant("average", lambda eps_uncond, eps_cond, guidance_scale: (eps_uncond + eps_cond) / 2,
                "use guidance_scale: eps_uncond + guidance_scale * (eps_cond - eps_uncond)"),
        Variant("scaled_cond", lambda eps_uncond, eps_cond, guidance_scale: guidance_scale * eps_cond,
                "scale the difference eps_cond - eps_uncond, not eps_cond itself"),
    ),
)

# ex09 --------------------------------------------------------------------------------------------


def _clip(directions: str = "both", use_exp: bool = True, use_scale: bool = True, combine: str = "mean"):
    def variant(img_emb: Tensor, txt_emb: Tensor, logit_scale: float) -> Tensor:
        scale = (math.exp(logit_scale) if use_exp else logit_scale) if use_scale else 1.0
        logits = scale * img_emb @ txt_emb.T  # (B, B)
        labels = torch.arange(len(img_emb))  # (B,) image i goes with caption i
        loss_i, loss_t = F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)
        if directions == "images":
            return loss_i
        return (loss_i + loss_t) / 2 if combine == "mean" else loss_i + loss_t
    return variant


def _clip_inputs(g: torch.Generator, batch: int, dim: int, temperature: float, matched: bool = False,
                 dtype: torch.dtype = torch.float32) -> dict:
    img = unit_rows(g, batch, dim, dtype=dtype)
    return dict(img_emb=img, txt_emb=img.clone() if matched else unit_rows(g, batch, dim, dtype=dtype),
                logit_scale=math.log(1.0 / temperature))  # CLIP's logit_scale (Radford et al. 2021, sec. 2.5)


LOSS_DTYPES = (torch.float64,)  # a loss computed in float64 from float32 embeddings is right too


EX09 = Exercise(
    id="ex09", topic="clip_loss", title="contrastive (CLIP) loss", function="clip_loss",
    notebook="notebook 05 (the text encoder)", reference=ref.clip_loss,
    cases=(
        Case("B = 8 random pairs, logit_scale = log(1 / 0.07)", 3,
             lambda g: _clip_inputs(g, 8, 16, CLIP_TEMPERATURE), dtypes=LOSS_DTYPES),
        Case("matching pairs at logit_scale = log(5): a smaller loss", 3,
             lambda g: _clip_inputs(g, 6, 16, MATCHED_TEMPERATURE, matched=True), dtypes=LOSS_DTYPES),
        Case("logit_scale = 0, i.e. temperature 1", 2,
             lambda g: _clip_inputs(g, 5, 4, 1.0), dtypes=LOSS_DTYPES),
        Case("float64 embeddings give a float64 loss", 2,
             lambda g: _clip_inputs(g, 4, 8, CLIP_TEMPERATURE, dtype=torch.float64), tol=(1e-10, 1e-9)),
    ),
    variants=(
        Variant("zeros", lambda img_emb, txt_emb, logit_scale: torch.zeros(()), "you return zero"),
        Variant("identity", lambda img_emb, txt_emb, logit_scale: img_emb, "return the scalar loss"),
        Variant("one_direction", _clip(directions="images"),
                "average both directions: cross-entropy over the rows (image -> caption) and over the "
                "columns "
                "(caption -> image)"),
        Variant("no_exp", _clip(use_exp=False),
                "logit_scale is the log of the inverse temperature: multiply the logits by exp(logit_scale)"),
        Variant("no_scale", _clip(use_scale=False), "multiply the similarities by exp(logit_scale)"),
        Variant("sum_directions", _clip(combine="sum"), "take the mean of the two directions, not their sum"),
    ),
)

# ex10 --------------------------------------------------------------------------------------------


def _attention(scale: str = "head", softmax_dim: int = -1, split_heads: bool = True, swap_kv: bool = False,
               self_attention: bool = False):
    def variant(x: Tensor, context: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, heads: int = 1) -> Tensor:
        source = x if self_attention else context
        q, k, v = x @ wq, source @ wk, source @ wv  # (B, N, D), (B, L, D), (B, L, D)
        if swap_kv:
            k, v = v, k
        h = heads if split_heads else 1
        q, k, v = (rearrange(a, "b n (h d) -> b h n d", h=h) for a in (q, k, v))  # (B, h, n, d)
        scores = q @ k.transpose(-1, -2)  # (B, h, N, L)
        if scale != "none":
            scores = scores / math.sqrt(q.shape[-1] if scale == "head" else wq.shape[1])
        out = scores.softmax(dim=softmax_dim) @ v  # (B, h, N, d)
        return rearrange(out, "b h n d -> b n (h d)")  # (B, N, D)
    return variant


def _attention_inputs(g: torch.Generator, batch: int, n: int, length: int, heads: int, dim: int = 8,
                      context_dim: int = 12, dtype: torch.dtype = torch.float32) -> dict:
    return dict(x=randn(g, batch, n, dim, dtype=dtype),
                context=randn(g, batch, length, context_dim, dtype=dtype),
                wq=randn(g, dim, dim, dtype=dtype) / math.sqrt(dim),
                wk=randn(g, context_dim, dim, dtype=dtype) / math.sqrt(context_dim),
                wv=randn(g, context_dim, dim, dtype=dtype) / math.sqrt(context_dim), heads=heads)


EX10 = Exercise(
    id="ex10", topic="cross_attention", title="cross-attention", function="cross_attention",
    notebook="notebook 06 (conditioning and guidance)", reference=ref.cross_attention,
    cases=(
        Case("one head: x (2, 16, 8), context (2, 5, 12)", 3, lambda g: _attention_inputs(g, 2, 16, 5, 1)),
        Case("two heads: x (2, 6, 8), context (2, 4, 12)", 3, lambda g: _attention_inputs(g, 2, 6, 4, 2)),
        Case("a single context token: every query gets its value", 2,
             lambda g: _attention_inputs(g, 3, 4, 1, 2)),
        Case("batch size 1, four heads, float64", 2,
             lambda g: _attention_inputs(g, 1, 5, 3, 4, dtype=torch.float64), tol=(1e-10, 1e-9)),
    ),
    variants=(
        Variant("zeros", lambda x, context, wq, wk, wv, heads=1: torch.zeros_like(x), "you return zeros"),
        Variant("identity", lambda x, context, wq, wk, wv, heads=1: x, "you return x unchanged"),
        Variant("no_scale", _attention(scale="none"), "divide the scores q k^T by sqrt(d), d = D // heads"),
        Variant("scale_by_model_dim", _attention(scale="model"),
                "divide by sqrt(d) with d = D // heads, the width of one head, not sqrt(D)"),
        Variant("softmax_over_queries", _attention(softmax_dim=-2),
                "take the softmax over the context tokens (the last dimension of the scores), so that each "
                "query's weights sum to 1"),
        Variant("ignores_heads", _attention(split_heads=False),
                "split q, k and v into `heads` heads of width D // heads, attend in each, then concatenate"),
        Variant("keys_values_swapped", _attention(swap_kv=True),
                "keys (context @ wk) decide where to look, values (context @ wv) what is read"),
        Variant("self_attention", _attention(self_attention=True),
                "cross-attention takes keys and values from the context, queries from x"),
    ),
    error_hints=((r"cannot be multiplied|size mismatch",
                  "q = x @ wq (B, N, D), k = context @ wk and v = context @ wv (B, L, D); "
                  "scores q @ k.transpose(-1, -2) are (B, N, L)"),),
    forbidden=("torch.nn.functional.scaled_dot_product_attention",
               "torch._C._nn.scaled_dot_product_attention",
               "torch.nn.MultiheadAttention", "torch.nn.modules.activation.MultiheadAttention",
               "torch.nn.functional.multi_head_attention_forward",
               "torch.ops.aten.scaled_dot_product_attention",
               "torch.ops.aten._scaled_dot_product_attention_math",
               "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu"),
)

EXERCISES = (EX08, EX09, EX10)
