"""ex10 zero: torch's fused kernel imported under another name."""
from torch.nn.functional import scaled_dot_product_attention as f


def cross_attention(x, context, wq, wk, wv, heads=1):
    B, N, D = x.shape
    def split(a):
        return a.reshape(B, a.shape[1], heads, D // heads).transpose(1, 2)

    return f(split(x @ wq), split(context @ wk), split(context @ wv)).transpose(1, 2).reshape(B, N, D)
