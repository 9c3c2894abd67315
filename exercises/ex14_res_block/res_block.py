"""Exercise 14: the U-Net's residual block, where the time embedding enters.

Taught in notebook 03 (the U-Net denoiser). Grade it with: python -m minidiff grade --only ex14
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUP_SIZES = (32, 16, 8, 4, 2, 1)  # GroupNorm's group count: the first that divides the channels
MIN_GROUP_CHANNELS = 4  # ... into groups of at least 4 channels; 1 group when none does


class ResBlock(nn.Module):
    """Residual block with an added embedding (Ho et al. 2020, appendix B; He et al. 2016).

    Layers, with exactly these names (the grader loads its weights into them by name):
        norm1: GroupNorm over in_ch;   conv1: 3x3 conv, in_ch -> out_ch, padding 1;
        emb_proj: Linear, emb_dim -> out_ch;
        norm2: GroupNorm over out_ch;  conv2: 3x3 conv, out_ch -> out_ch, padding 1;
        skip: 1x1 conv in_ch -> out_ch when in_ch != out_ch, else nn.Identity() (no parameters).
    Every layer has a bias; each GroupNorm has the first count in GROUP_SIZES that divides its channels
    into groups of at least MIN_GROUP_CHANNELS (1 group when none does: 6 channels -> 1, 12 -> 2, 24 -> 4).

    forward(x (B, in_ch, H, W), emb (B, emb_dim)) -> (B, out_ch, H, W):
        h = conv1(silu(norm1(x)))
        h = h + emb_proj(silu(emb)) seen as (B, out_ch, 1, 1), added to every pixel
        h = conv2(silu(norm2(h)))
        return skip(x) + h
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int) -> None:
        super().__init__()
        raise NotImplementedError("ex14 is not started: write ResBlock (taught in notebook 03, the U-Net "
                                  "denoiser)")

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        raise NotImplementedError("ex14 is not started: write ResBlock.forward (taught in notebook 03)")
