"""Shared test set-up: one thread per test process.

The suite runs with two pytest-xdist workers on two cores; letting each worker's PyTorch start
several threads oversubscribes the cores and makes small models many times slower.
"""

import torch

torch.set_num_threads(1)
