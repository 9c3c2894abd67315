"""ex10 zero: nn.MultiheadAttention doing the work, imported from torch.nn.modules.activation."""
import torch
from torch.nn.modules.activation import MultiheadAttention


def cross_attention(x, context, wq, wk, wv, heads=1):
    D = x.shape[-1]
    C = context.shape[-1]
    attn = MultiheadAttention(D, heads, bias=False, kdim=C, vdim=C, batch_first=True)
    with torch.no_grad():
        attn.q_proj_weight.copy_(wq.T)
        attn.k_proj_weight.copy_(wk.T)
        attn.v_proj_weight.copy_(wv.T)
        attn.out_proj.weight.copy_(torch.eye(D))
        return attn(x, context, context, need_weights=False)[0]
