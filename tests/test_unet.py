"""Tests for minidiff.unet: shapes, input errors, zero init, text conditioning, overfitting a batch."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from minidiff.layers import SpatialTransformer
from minidiff.unet import PREDICTION_TYPES, PRESETS, UNet, UNetConfig

TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), heads=2,
            text_dim=8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread, and far faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(seed: int = 0, **overrides) -> UNet:
    torch.manual_seed(seed)
    return UNet(UNetConfig(**{**TINY, **overrides})).eval()


def randomise_output(model: UNet) -> UNet:
    """Replace the zero-initialised last conv by random weights so the output depends on the input."""
    nn.init.normal_(model.conv_out.weight, std=0.1)
    return model


def inputs(b=2, c=3, h=8, w=8, L=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    xt, t = torch.randn(b, c, h, w, generator=g), torch.randint(0, 1000, (b,), generator=g)
    return xt, t, torch.randn(b, L, d, generator=g)


@pytest.mark.parametrize("c,h,w", [(3, 32, 32), (4, 8, 8), (3, 32, 64), (3, 16, 8)])
def test_output_shape_equals_input_shape(c, h, w):
    model = randomise_output(make(in_channels=c))
    xt, t, cond = inputs(c=c, h=h, w=w)
    assert model(xt, t, cond).shape == xt.shape


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_keeps_shape(name):
    cfg = UNetConfig.from_preset(name, base_channels=8, heads=2, text_dim=8)
    model = UNet(cfg).eval()
    size = 2 * cfg.downsample_factor
    xt, t, cond = inputs(c=cfg.in_channels, h=size, w=2 * size)
    assert model(xt, t, cond).shape == xt.shape
    assert model.prediction_type == cfg.prediction_type == "eps"
    assert cfg.out_channels == cfg.in_channels


def test_preset_names():
    assert {"cpu-pixel", "cpu-latent", "gpu-pixel", "gpu-latent"} <= set(PRESETS)
    assert PRESETS["cpu-latent"].in_channels == 4 and PRESETS["cpu-pixel"].in_channels == 3


def test_preset_overrides_keep_out_channels_equal_to_in_channels():
    assert UNetConfig.from_preset("cpu-pixel", in_channels=4).out_channels == 4
    assert UNetConfig.from_preset("cpu-pixel", out_channels=6).out_channels == 6


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="cpu-latent.*cpu-pixel"):
        UNetConfig.from_preset("cpu-huge")
    with pytest.raises(ValueError, match="base_chanels"):
        UNetConfig.from_preset("cpu-pixel", base_chanels=8)


@pytest.mark.parametrize("field,value,message", [
    ("prediction_type", "score", "prediction_type='score'.*'eps', 'x0', 'v'"),
    ("channel_mults", (), "channel_mults=()"),
    ("attention_levels", (2,), r"attention_levels=\(2,\).*\(0, 1\)"),
    ("heads", 3, "heads=3 must divide every level width"),
    ("num_res_blocks", 0, "num_res_blocks=0"),
    ("dropout", 1.0, "dropout=1.0"),
    ("text_layers", -1, "text_layers=-1 must be >= 0"),
])
def test_bad_config_is_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**{**TINY, field: value})


def test_config_survives_a_json_round_trip():
    cfg = UNetConfig.from_preset("gpu-latent", prediction_type="v")
    again = UNetConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and again.channel_mults == (1, 2, 2)
    assert UNetConfig(**{**TINY, "text_dim": 0}).text_dim is None


@pytest.mark.parametrize("h,w,message", [
    (30, 32, "height 30 is not a multiple of 8 .*allowed: .*24, 32, 40"),
    (32, 33, "width 33 is not a multiple of 8"),
])
def test_bad_size_is_a_value_error_listing_allowed_sizes(h, w, message):
    model = make(channel_mults=(1, 2, 2, 2), attention_levels=(3,))
    xt, t, cond = inputs(h=h, w=w)
    with pytest.raises(ValueError, match=message):
        model(xt, t, cond)


def test_bad_inputs_are_named():
    model = make()
    xt, t, cond = inputs()
    with pytest.raises(ValueError, match="4 channels.*in_channels=3"):
        model(torch.randn(2, 4, 8, 8), t, cond)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(xt[0], t, cond)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)"):
        model(xt, t[:1], cond)
    with pytest.raises(ValueError, match="needs cond.*empty prompt"):
        model(xt, t, None)
    with pytest.raises(ValueError, match="text_dim.*got \\(2, 5, 6\\)"):
        model(xt, t, cond[..., :6])
    with pytest.raises(ValueError, match="unconditional"):
        make(text_dim=None)(xt, t, cond)


def test_output_is_exactly_zero_at_init():
    model = make()
    xt, t, cond = inputs()
    assert torch.equal(model(xt, t, cond), torch.zeros_like(xt))


def test_unconditional_model_and_float_time():
    model = randomise_output(make(text_dim=None))
    xt, t, _ = inputs()
    assert model(xt, t.float() / 1000, None).shape == xt.shape
    assert not any(isinstance(m, SpatialTransformer) and m.cross_attn is not None for m in model.modules())


def test_output_depends_on_time_and_on_every_text_token():
    model = randomise_output(make())
    xt, t, cond = inputs()
    out = model(xt, t, cond)
    assert not torch.allclose(model(xt, t + 1, cond), out)
    # change only tokens 1.. (not the pooled token 0): only cross-attention can see this
    cond2 = cond.clone()
    cond2[:, 1:] = torch.randn_like(cond2[:, 1:])
    assert not torch.allclose(model(xt, t, cond2), out)


def test_single_cond_broadcasts_over_batch():
    model = randomise_output(make())
    xt, t, cond = inputs(b=3)
    torch.testing.assert_close(model(xt, t, cond[:1]), model(xt, t, cond[:1].expand(3, -1, -1)))


def test_record_attention_gives_distributions_per_level():
    model = randomise_output(make(channel_mults=(1, 2), attention_levels=(0, 1)))
    xt, t, cond = inputs(h=8, w=16)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    with model.record_attention() as records:
        out = model(xt, t, cond, cond_mask=mask)
    # down: 1 per level; mid: 1; up: num_res_blocks + 1 = 2 per level
    assert [level for level, _ in records] == [0, 1, 1, 1, 1, 0, 0]
    for level, weights in records:
        assert weights.shape == (2, 2, (8 >> level) * (16 >> level), 5)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
        assert torch.all(weights[0, :, :, 3:] == 0)
    # recording does not change the output
    torch.testing.assert_close(model(xt, t, cond, cond_mask=mask), out)
    model(xt, t, cond)
    assert len(records) == 7  # recording stops at the end of the with block


def test_masked_tokens_do_not_change_the_output():
    model = randomise_output(make())
    xt, t, cond = inputs()
    mask = torch.tensor([[True, True, False, False, False]] * 2)
    cond2 = cond.clone()
    cond2[:, 2:] = torch.randn_like(cond2[:, 2:])
    torch.testing.assert_close(model(xt, t, cond2, cond_mask=mask), model(xt, t, cond, cond_mask=mask))


def test_all_zero_cond_rows_are_padding_by_default():
    """Rows that encode_prompts zeroes (padding) get no attention: the output equals that of the cond cut
    to its real tokens; with mask_padding=False they draw attention like any token."""
    model = randomise_output(make())
    xt, t, cond = inputs()
    cond[:, 3:] = 0  # (2, 5, 8): tokens 3, 4 are padding
    with model.record_attention() as records:
        out = model(xt, t, cond)
    assert all(torch.all(w[..., 3:] == 0) for _, w in records)
    torch.testing.assert_close(out, model(xt, t, cond[:, :3]))
    unmasked = randomise_output(make(mask_padding=False))
    with unmasked.record_attention() as records:
        unmasked(xt, t, cond)
    assert all(w[..., 3:].sum(-1).min() > 0.1 for _, w in records)  # 2 of 5 keys, all equal to 0: ~40%
    zeros = torch.zeros_like(cond)  # no real token at all: <bos> (token 0) is still attended, no NaN
    assert torch.isfinite(model(xt, t, zeros)).all()


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_prediction_type_attribute(prediction_type):
    assert make(prediction_type=prediction_type).prediction_type == prediction_type


def test_tiny_unet_overfits_a_fixed_batch():
    model = make().train()
    xt, t, cond = inputs(b=8, h=8, w=8, L=4)
    target = torch.randn(xt.shape, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(60):
        loss = (model(xt, t, cond) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]


def randomise_refiner(model: UNet) -> UNet:
    """Give the zero-initialised text refiner random residual branches, so it changes cond."""
    for block in model.text_refiner:
        for layer in (block.proj, block.mlp[-1]):
            nn.init.normal_(layer.weight, std=0.3)
    return model


def test_text_refiner_starts_as_the_identity_of_a_trained_unet():
    """A refiner added to a U-Net's weights (train --init) leaves every output exactly as it was."""
    old, new = make(), make(text_layers=2)
    fresh = {k: v for k, v in new.state_dict().items() if k.startswith("text_refiner.")}
    assert fresh and set(new.state_dict()) - set(old.state_dict()) == set(fresh)
    # built last, the refiner leaves every other layer's random init as it was under the same seed
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in old.state_dict().items())
    randomise_output(old)
    new.load_state_dict({**old.state_dict(), **fresh})
    xt, t, cond = inputs()
    cond[:, 3:] = 0
    assert torch.equal(new(xt, t, cond), old(xt, t, cond))
    with pytest.raises(ValueError, match="text_layers=1 must be >= 0; a refiner"):
        UNetConfig(**{**TINY, "text_dim": None, "text_layers": 1})


def test_text_refiner_mixes_words_but_never_padding():
    """Trained (here: random) refiner blocks let a token's features depend on the other words, but
    padding stays padding: masked or all-zero rows change nothing and get no attention."""
    model = randomise_refiner(randomise_output(make(text_layers=1)))
    xt, t, cond = inputs()
    refined = []
    model.text_refiner[0].register_forward_hook(lambda m, i, o: refined.append(o))
    cond2 = cond.clone()
    cond2[:, 2] = torch.randn_like(cond2[:, 2])  # change word 2 only
    model(xt, t, cond), model(xt, t, cond2)
    assert not torch.allclose(refined[0][:, 1], refined[1][:, 1])  # word 1 now sees word 2
    mask = torch.tensor([[True, True, False, False, False]] * 2)
    cond3 = cond.clone()
    cond3[:, 2:] = torch.randn_like(cond3[:, 2:])
    torch.testing.assert_close(model(xt, t, cond3, cond_mask=mask), model(xt, t, cond, cond_mask=mask))
    cond[:, 3:] = 0
    with model.record_attention() as records:
        out = model(xt, t, cond)
    assert all(torch.all(w[..., 3:] == 0) for _, w in records)
    torch.testing.assert_close(out, model(xt, t, cond[:, :3]))


def test_text_refiner_learns_from_the_denoising_loss():
    """Zero-initialised, the refiner is the identity, yet its last layers get a gradient at once."""
    model = randomise_output(make(text_layers=1)).train()
    xt, t, cond = inputs()
    model(xt, t, cond).square().mean().backward()
    block = model.text_refiner[0]
    assert block.proj.weight.grad.abs().sum() > 0 and block.mlp[-1].weight.grad.abs().sum() > 0
