"""Exercise 09: CLIP's contrastive loss, which teaches the text encoder what words look like.

Taught in notebook 05 (the text encoder). Grade it with: python -m minidiff grade --only ex09
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def clip_loss(img_emb: Tensor, txt_emb: Tensor, logit_scale: float) -> Tensor:
    """Symmetric InfoNCE over a batch of matching image-caption pairs (Radford et al. 2021, fig. 3).

    logits = exp(logit_scale) * img_emb @ txt_emb.T is a (B, B) matrix; image i goes with caption i.
    The loss is the mean of two cross-entropies: each image picking its caption among the B captions
    (over the rows), and each caption picking its image (over the columns).

    Args:
        img_emb: (B, E) image embeddings, each row of unit length, float32 or float64.
        txt_emb: (B, E) caption embeddings, each row of unit length, the same dtype.
        logit_scale: the log of the inverse temperature (CLIP starts at log(1 / 0.07)).

    Returns:
        scalar loss: a 0-dimensional tensor in the embeddings' dtype (float64 from float32 embeddings
        is graded as right too).
    """
    raise NotImplementedError("ex09 is not started: write clip_loss (taught in notebook 05, the text "
                              "encoder)")
