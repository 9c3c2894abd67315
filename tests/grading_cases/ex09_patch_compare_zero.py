"""ex09 zero: tries to patch the grader's compare function and the sandbox's result writer."""
import sys

import torch


def _patch():
    for name, module in list(sys.modules.items()):
        if hasattr(module, "problem"):
            module.problem = lambda *a, **k: None
        if name == "__main__" and hasattr(module, "_plain"):
            module._plain = lambda value: dict(type="Tensor", tensor=torch.tensor(2.0))


_patch()


def clip_loss(img_emb, txt_emb, logit_scale):
    return torch.zeros(())
