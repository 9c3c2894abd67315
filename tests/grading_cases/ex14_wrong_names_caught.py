"""ex14 caught: a right block with its own layer names: outputs cannot be graded, the parameter count can."""
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, emb_dim):
        super().__init__()
        g = lambda c: next(n for n in (32, 16, 8, 4, 2, 1) if c % n == 0)  # noqa: E731
        self.gn1, self.c1 = nn.GroupNorm(g(in_ch), in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time = nn.Linear(emb_dim, out_ch)
        self.gn2, self.c2 = nn.GroupNorm(g(out_ch), out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.c1(F.silu(self.gn1(x))) + self.time(F.silu(emb))[:, :, None, None]
        return self.shortcut(x) + self.c2(F.silu(self.gn2(h)))
