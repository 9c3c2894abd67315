"""Exercise 10: cross-attention, where each pixel reads from the words of the prompt.

Taught in notebook 06 (conditioning and guidance). Grade it with: python -m minidiff grade --only ex10
Write it with torch only: minidiff is the answer key, and code that imports it (or uses torch's
fused attention, F.scaled_dot_product_attention or nn.MultiheadAttention) is flagged.
"""

import math

import torch
from torch import Tensor


def cross_attention(x: Tensor, context: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, heads: int = 1) -> Tensor:
    """Multi-head attention with queries from x and keys and values from context (Vaswani et al. 2017, eq. 1).

    1. q = x @ wq (B, N, D); k = context @ wk and v = context @ wv (B, L, D).
    2. Split the last dimension into `heads` heads of width d = D // heads: (B, heads, N or L, d).
    3. In each head: softmax(q @ k^T / sqrt(d)) over the L context tokens, then times v: (B, heads, N, d).
    4. Concatenate the heads back: (B, N, D). (No output projection.)

    Args:
        x: (B, N, D) queries' source, e.g. N = H * W pixels.
        context: (B, L, D_c) keys' and values' source, e.g. L text tokens.
        wq: (D, D); wk, wv: (D_c, D) projection matrices, used as x @ wq.
        heads: number of heads, dividing D.

    Returns:
        (B, N, D), x's dtype.
    """
    raise NotImplementedError("ex10 is not started: write cross_attention "
                              "(taught in notebook 06, conditioning and guidance)")
