"""ex10 full: einsum, with the student's own helper that happens to be called scaled_dot_product_attention."""
import math

import torch


def scaled_dot_product_attention(q, k, v):
    scores = torch.einsum("bhnd,bhld->bhnl", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhnl,bhld->bhnd", scores.softmax(-1), v)


def cross_attention(x, context, wq, wk, wv, heads=1):
    B, N, D = x.shape
    def split(a):
        return a.reshape(B, a.shape[1], heads, D // heads).transpose(1, 2)

    out = scaled_dot_product_attention(split(x @ wq), split(context @ wk), split(context @ wv))
    return out.transpose(1, 2).reshape(B, N, D)
