"""The VAE inference speed-ups (`flextok_hf.modeling_flextok_vae`) and the opt-in `vae_dtype`.

The fast path must match diffusers' plain `AutoencoderKL` (contiguous layout, its own forwards) within 1e-4; bf16 is
checked by PSNR. No timings are asserted (see `examples/benchmarks/bench_vae.py`).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D

from flextok_hf import FlexTokConfig, FlexTokModel, FlexTokPipeline
from flextok_hf.modeling_flextok_vae import (
    FlexTokVAEResnetBlock2D,
    FlexTokVAEUpsample2D,
    disable_vae_fast_inference,
    enable_vae_fast_inference,
    subpixel_upsample_conv,
)
from flextok_test_utils import converted_fixture_model, random_images


def tiny_vae_config(**overrides) -> dict:
    config = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "block_out_channels": [8, 16, 16],
        "layers_per_block": 1,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 4,
        "sample_size": 32,
    }
    config.update(overrides)
    return config


def tiny_vae_model(seed: int = 0, **config_kwargs) -> FlexTokModel:
    """A FlexTokModel around a tiny random VAE (32px, f4), its VAE weights perturbed away from their init."""
    torch.manual_seed(seed)
    config = FlexTokConfig.tiny(image_size=32, vae_config=tiny_vae_config(), vae_scaling_factor=0.7, **config_kwargs)
    model = FlexTokModel(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.vae.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def plain_vae(model: FlexTokModel) -> AutoencoderKL:
    """diffusers' AutoencoderKL with the model's VAE weights, contiguous, untouched forwards (the code path before)."""
    vae = AutoencoderKL.from_config(model.config.vae_config).eval()
    vae.load_state_dict(model.vae.state_dict())
    return vae


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    mse = (image.clamp(-1, 1) - reference.clamp(-1, 1)).double().pow(2).mean().item()
    return 10 * math.log10(4.0 / mse)


# ---------------------------------------------------------------------------------------------------------------------
# The fast path equals the plain one
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 3])
def test_fast_vae_matches_plain_autoencoder(batch):
    model = tiny_vae_model()
    plain = plain_vae(model)
    images = random_images(batch, 32)
    scale = model.config.vae_scaling_factor
    with torch.no_grad():
        expected_latents = plain.encode(images).latent_dist.mode() * scale
        expected_images = plain.decode(expected_latents / scale).sample
    latents = model.encode_latents(images)
    decoded = model.decode_latents(expected_latents)
    assert latents.dtype == decoded.dtype == torch.float32
    assert latents.is_contiguous() and decoded.is_contiguous()
    torch.testing.assert_close(latents, expected_latents, atol=1e-4, rtol=0)
    torch.testing.assert_close(decoded, expected_images, atol=1e-4, rtol=0)


def test_fast_vae_posterior_sample_uses_the_same_draws():
    model = tiny_vae_model(vae_sample_posterior=True)
    plain = plain_vae(model)
    images = random_images(2, 32)
    with torch.no_grad():
        expected = plain.encode(images).latent_dist.sample(torch.Generator().manual_seed(3)) * 0.7
    latents = model.encode_latents(images, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(latents, expected, atol=1e-4, rtol=0)


def test_fixture_vae_fast_path_matches_plain():
    """The official fixture's (perturbed, f8) VAE through `FlexTokModel` vs plain diffusers."""
    model = converted_fixture_model()
    plain = plain_vae(model)
    images = random_images(2, model.config.image_size, seed=1)
    with torch.no_grad():
        expected = plain.encode(images).latent_dist.mode()
        expected_images = plain.decode(expected).sample
    scale = model.config.vae_scaling_factor
    torch.testing.assert_close(model.encode_latents(images) / scale, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.decode_latents(expected * scale), expected_images, atol=1e-4, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_subpixel_upsample_conv_equals_nearest_upsample_then_conv(bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1, bias=bias)
    hidden = torch.randn(2, 6, 5, 7)  # non-square, contiguous input
    with torch.no_grad():
        expected = conv(F.interpolate(hidden, scale_factor=2.0, mode="nearest"))
        output = subpixel_upsample_conv(hidden, conv)
    assert output.shape == (2, 5, 10, 14)
    assert output.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)


def test_enable_and_disable_fast_inference_keep_the_state_dict():
    model = tiny_vae_model()
    vae = model.vae
    keys = list(plain_vae(model).state_dict())
    assert list(vae.state_dict()) == keys
    assert all(type(m) is not Upsample2D and type(m) is not ResnetBlock2D for m in vae.modules())
    assert any(isinstance(m, FlexTokVAEUpsample2D) for m in vae.modules())
    assert any(isinstance(m, FlexTokVAEResnetBlock2D) for m in vae.modules())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in vae.parameters() if p.ndim == 4)
    state = {k: v.clone() for k, v in vae.state_dict().items()}
    disable_vae_fast_inference(vae)
    assert not any(isinstance(m, (FlexTokVAEUpsample2D, FlexTokVAEResnetBlock2D)) for m in vae.modules())
    assert all(p.is_contiguous() for p in vae.parameters())
    enable_vae_fast_inference(enable_vae_fast_inference(vae))  # idempotent
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(value, state[key], atol=0, rtol=0)


def test_autograd_runs_the_diffusers_forward():
    """With gradients enabled (VAE training, feature-matching losses) the swapped modules defer to diffusers."""
    model = tiny_vae_model()
    plain = plain_vae(model)
    latents = torch.randn(2, 4, 8, 8)
    with torch.enable_grad():
        latents_fast = latents.clone().requires_grad_(True)
        latents_plain = latents.clone().requires_grad_(True)
        model.vae.decode(latents_fast).sample.square().mean().backward()
        plain.decode(latents_plain).sample.square().mean().backward()
    torch.testing.assert_close(latents_fast.grad, latents_plain.grad, atol=1e-5, rtol=1e-4)


def test_weights_loaded_later_are_prepared_again():
    """`load_state_dict` / `.to()` with a contiguous layout or another dtype: encode/decode restore the fast setup."""
    model = tiny_vae_model()
    model.vae.to(memory_format=torch.contiguous_format)
    model.to(torch.bfloat16)  # the VAE follows config.vae_dtype (float32) again when it runs
    latents = model.encode_latents(random_images(1, 32))
    assert latents.dtype == torch.float32 and model.vae.dtype == torch.float32
    assert model.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------------------------------
# vae_dtype
# ---------------------------------------------------------------------------------------------------------------------
def test_bf16_vae_is_close_to_float32():
    model = tiny_vae_model()
    images = random_images(2, 32)
    latents = model.encode_latents(images)
    decoded = model.decode_latents(latents)
    model.set_vae_dtype(torch.bfloat16)
    assert model.config.vae_dtype == "bfloat16" and model.vae.dtype == torch.bfloat16
    latents_bf16 = model.encode_latents(images)
    decoded_bf16 = model.decode_latents(latents)
    assert latents_bf16.dtype == decoded_bf16.dtype == torch.float32
    assert psnr(decoded_bf16, decoded) > 35
    assert (latents_bf16 - latents).abs().max() < 0.1 * latents.abs().max()


def test_vae_dtype_round_trips_through_from_pretrained_and_save(tmp_path):
    model = tiny_vae_model()
    model.save_pretrained(tmp_path / "fp32")
    loaded = FlexTokModel.from_pretrained(tmp_path / "fp32", vae_dtype="bfloat16")
    assert loaded.config.vae_dtype == "bfloat16" and loaded.vae.dtype == torch.bfloat16
    assert loaded.encoder.registers.dtype == torch.float32
    loaded.save_pretrained(tmp_path / "bf16")
    again = FlexTokModel.from_pretrained(tmp_path / "bf16")
    assert again.config.vae_dtype == "bfloat16" and again.vae.dtype == torch.bfloat16
    assert FlexTokConfig.from_pretrained(tmp_path / "bf16").vae_dtype == "bfloat16"
    back = FlexTokModel.from_pretrained(tmp_path / "bf16", vae_dtype=torch.float32)
    assert back.config.vae_dtype == "float32" and back.vae.dtype == torch.float32
    # default: float32, whatever dtype the rest of the model is loaded in
    default = FlexTokModel.from_pretrained(tmp_path / "fp32", dtype=torch.bfloat16)
    assert default.config.vae_dtype == "float32" and default.vae.dtype == torch.float32
    assert default.encode_latents(random_images(1, 32)).dtype == torch.float32


def test_pipeline_from_pretrained_accepts_vae_dtype(tmp_path):
    model = tiny_vae_model()
    FlexTokPipeline.from_flextok(model).save_pretrained(tmp_path / "pipe")
    model.save_pretrained(tmp_path / "model")
    for path in (tmp_path / "pipe", tmp_path / "model"):
        pipe = FlexTokPipeline.from_pretrained(path, vae_dtype="bfloat16")
        assert pipe.flextok.config.vae_dtype == "bfloat16" and pipe.flextok.vae.dtype == torch.bfloat16


def test_config_normalises_vae_dtype():
    assert FlexTokConfig.tiny().vae_dtype == "float32"
    config = FlexTokConfig.tiny(vae_dtype=torch.bfloat16)
    assert config.vae_dtype == "bfloat16"
    assert FlexTokConfig.from_dict(config.to_dict()).vae_dtype == "bfloat16"
    assert FlexTokConfig.tiny(vae_dtype="torch.float16").vae_dtype == "float16"


@pytest.mark.parametrize("bad", ["int8", "bf16", "half", torch.float64, 16, None])
def test_bad_vae_dtype_raises_a_clear_error(bad, tmp_path):
    with pytest.raises(ValueError, match=r"`vae_dtype` must be one of \('float32', 'bfloat16', 'float16'\)"):
        FlexTokConfig.tiny(vae_dtype=bad)
    model = tiny_vae_model()
    with pytest.raises(ValueError, match="`vae_dtype`"):
        model.set_vae_dtype(bad)
    assert model.config.vae_dtype == "float32"
    if bad is not None:  # `vae_dtype=None` in from_pretrained means "leave as saved"
        model.save_pretrained(tmp_path)
        with pytest.raises(ValueError, match="`vae_dtype`"):
            FlexTokModel.from_pretrained(tmp_path, vae_dtype=bad)
        with pytest.raises(ValueError, match="`vae_dtype`"):
            FlexTokPipeline.from_pretrained(tmp_path, vae_dtype=bad)


def test_pixel_space_model_accepts_vae_dtype():
    model = FlexTokModel(FlexTokConfig.tiny(vae_dtype="bfloat16")).eval()
    images = random_images(1, 16)
    assert model.set_vae_dtype("float32") is model
    torch.testing.assert_close(model.decode_latents(model.encode_latents(images)), images)


def test_meta_weights_are_left_alone():
    """Not materialized (meta / offloaded) weights: only the forwards are swapped; layout and dtype wait for use."""
    with torch.device("meta"):
        model = FlexTokModel(FlexTokConfig.tiny(image_size=32, vae_config=tiny_vae_config(), vae_dtype="bfloat16"))
    assert model.vae.dtype == torch.float32 and model.vae.decoder.conv_in.weight.is_meta
    assert any(isinstance(m, FlexTokVAEUpsample2D) for m in model.vae.modules())
