"""Tests for minidiff.layers: hand-computed embeddings, attention against torch's reference MHA."""

import math

import pytest
import torch
from torch import nn

from minidiff.layers import (
    Attention,
    CrossAttention,
    Downsample,
    ResBlock,
    SpatialTransformer,
    Upsample,
    num_groups,
    timestep_embedding,
)


def test_timestep_embedding_hand_computed():
    # dim=4: half=2, frequencies 10000^(-0/2) = 1 and 10000^(-1/2) = 0.01
    emb = timestep_embedding(torch.tensor([0, 1, 10]), 4)
    expected = torch.tensor([
        [0.0, 0.0, 1.0, 1.0],
        [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)],
        [math.sin(10), math.sin(0.1), math.cos(10), math.cos(0.1)],
    ])
    torch.testing.assert_close(emb, expected)


def test_timestep_embedding_float_time_and_custom_period():
    emb = timestep_embedding(torch.tensor([0.5]), 2, max_period=100)
    torch.testing.assert_close(emb, torch.tensor([[math.sin(0.5), math.cos(0.5)]]))


@pytest.mark.parametrize("dim", [0, 3])
def test_timestep_embedding_rejects_odd_dim(dim):
    with pytest.raises(ValueError, match=f"dim={dim}"):
        timestep_embedding(torch.tensor([1]), dim)


def test_num_groups_keeps_four_channels_per_group():
    widths = (256, 128, 64, 48, 32, 24, 12, 8, 6, 3)
    assert [num_groups(c) for c in widths] == [32, 32, 16, 8, 8, 4, 2, 2, 1, 1]


def test_res_block_embedding_survives_the_second_norm_at_width_32():
    """Two embeddings must give two outputs: at one channel per group the block ignored its embedding."""
    torch.manual_seed(0)
    block = ResBlock(32, 32, 8).eval()
    x = torch.randn(1, 32, 4, 4)
    a, b = block(x, torch.randn(1, 8)), block(x, torch.randn(1, 8))
    assert (a - b).abs().max() > 1e-2


def test_resblock_is_skip_plus_residual():
    torch.manual_seed(0)
    block = ResBlock(4, 8, emb_dim=6)
    x, emb = torch.randn(2, 4, 5, 5), torch.randn(2, 6)
    assert block(x, emb).shape == (2, 8, 5, 5)
    nn.init.zeros_(block.conv2.weight)
    nn.init.zeros_(block.conv2.bias)
    torch.testing.assert_close(block(x, emb), block.skip(x))
    assert isinstance(ResBlock(4, 4, 6).skip, nn.Identity)


def test_cross_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    dim, context_dim, heads = 8, 6, 2
    ours = CrossAttention(dim, context_dim, heads)
    nn.init.zeros_(ours.to_out.bias)
    ref = nn.MultiheadAttention(dim, heads, bias=False, kdim=context_dim, vdim=context_dim, batch_first=True)
    ref.q_proj_weight.data.copy_(ours.to_q.weight)
    ref.k_proj_weight.data.copy_(ours.to_k.weight)
    ref.v_proj_weight.data.copy_(ours.to_v.weight)
    ref.out_proj.weight.data.copy_(ours.to_out.weight)
    x, context = torch.randn(3, 5, dim), torch.randn(3, 4, context_dim)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True, False, True, False]])
    ref_out, ref_w = ref(x, context, context, key_padding_mask=~mask, average_attn_weights=False)
    out, weights = ours(x, context, mask, return_weights=True)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_w)
    torch.testing.assert_close(ours(x, context, mask), ref_out)  # fused kernel path


def test_attention_weights_are_distributions_and_mask_zeroes_padding():
    torch.manual_seed(0)
    attn = CrossAttention(8, 6, heads=2)
    x, context = torch.randn(2, 7, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    out, weights = attn(x, context, mask, return_weights=True)
    assert weights.shape == (2, 2, 7, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 7))
    assert torch.all(weights[0, :, :, 3:] == 0)
    # what sits under the mask cannot change the output
    context2 = context.clone()
    context2[0, 3:] = torch.randn(2, 6)
    torch.testing.assert_close(attn(x, context2, mask), out)


def test_self_attention_is_permutation_equivariant():
    torch.manual_seed(0)
    attn = Attention(8, heads=4)
    x, perm = torch.randn(2, 6, 8), torch.randperm(6)
    torch.testing.assert_close(attn(x)[:, perm], attn(x[:, perm]))


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="heads=3"):
        Attention(8, heads=3)


def test_spatial_transformer_records_cross_attention():
    torch.manual_seed(0)
    block = SpatialTransformer(8, context_dim=6, heads=2, level=1)
    x, context = torch.randn(2, 8, 4, 6), torch.randn(2, 3, 6)
    assert block(x, context).shape == x.shape
    block.recorder = []
    block(x, context)
    (level, weights), = block.recorder
    assert level == 1 and weights.shape == (2, 2, 4 * 6, 3)
    with pytest.raises(ValueError, match="context=None"):
        block(x)
    assert SpatialTransformer(8, None, 2)(x).shape == x.shape


def test_resampling_shapes():
    x = torch.randn(2, 4, 8, 12)
    assert Downsample(4)(x).shape == (2, 4, 4, 6)
    assert Upsample(4)(x).shape == (2, 4, 16, 24)
