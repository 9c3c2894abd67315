"""ex14 caught: adds the embedding after the second GroupNorm; names and parameter count are right."""
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, emb_dim):
        super().__init__()
        g = lambda c: next(n for n in (32, 16, 8, 4, 2, 1) if c % n == 0)  # noqa: E731
        self.norm1, self.conv1 = nn.GroupNorm(g(in_ch), in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2, self.conv2 = nn.GroupNorm(g(out_ch), out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.norm2(self.conv1(F.silu(self.norm1(x)))) + self.emb_proj(F.silu(emb))[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(h))
