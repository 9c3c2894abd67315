"""ex03 zero: writes garbage bytes into every file descriptor it holds (stdout, stderr, pipes)."""
import os

import torch

GARBAGE = bytes(range(256)) * 64


def q_sample(x0, t, noise, alpha_bar):
    for fd in range(64):
        try:
            os.write(fd, GARBAGE)
        except OSError:
            pass
    return torch.zeros_like(x0)
