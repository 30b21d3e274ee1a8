"""Stage-0 VAE training: the loss goes down, the saved VAE loads (diffusers and FlexTok) with its scaling factor."""

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from flextok_hf import FlexTokConfig, FlexTokModel
from flextok_hf.data import load_image_dataset
from flextok_hf.metrics.classifier import FlexTokClassifierConfig, FlexTokImageClassifier
from flextok_hf.training import ImageCollator
from flextok_hf.training.tokenizer import TokenizerModelArguments, build_model
from flextok_hf.training.vae import (
    AutoencoderKLWithLoss,
    ClassifierPerceptualLoss,
    compute_scaling_factor,
    small_vae_config,
    train_vae,
    vae_loss,
)

# A 16x16 f2 VAE (2 latent channels) trained on 8 fixed sklearn digits, one batch per step.
RUN = {
    "dataset": "digits",
    "image_size": 16,
    "block_out_channels": "8,16",
    "latent_channels": 2,
    "norm_num_groups": 4,
    "mid_block_add_attention": False,
    "max_train_samples": 8,
    "per_device_train_batch_size": 8,
    "learning_rate": 3e-3,
    "max_steps": 12,
    "logging_steps": 1,
    "eval_split": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
    "seed": 0,
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("vae")
    trainer = train_vae({**RUN, "output_dir": str(output_dir)})
    return trainer, output_dir


@pytest.mark.slow
def test_training_lowers_the_reconstruction_loss(trained):
    trainer, output_dir = trained
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logs] == list(range(1, 13))
    mse = [entry["mse_loss"] for entry in logs]
    assert all(entry["kl_loss"] >= 0 for entry in logs)
    assert sum(mse[-3:]) / 3 < 0.7 * sum(mse[:3]) / 3, mse
    for entry in logs:
        assert entry["loss"] == pytest.approx(entry["mse_loss"] + 1e-4 * entry["kl_loss"], rel=1e-4)
    history = json.loads((output_dir / "log_history.json").read_text())
    assert any("scaling_factor" in entry for entry in history)
    assert (output_dir / "loss_curve.png").is_file() and (output_dir / "preprocessor_config.json").is_file()


@pytest.mark.slow
def test_saved_vae_loads_with_its_scaling_factor_and_plugs_into_flextok(trained):
    trainer, output_dir = trained
    assert (output_dir / "diffusion_pytorch_model.safetensors").is_file()
    vae = AutoencoderKL.from_pretrained(output_dir).eval()
    assert list(vae.config.block_out_channels) == [8, 16] and vae.config.latent_channels == 2
    assert all(torch.equal(value, trainer.model.vae.state_dict()[key]) for key, value in vae.state_dict().items())

    # scaling_factor = 1 / std of the posterior means of the training images.
    images = load_image_dataset("digits", "train").select(range(8))
    collator = ImageCollator.from_model_config(FlexTokConfig.tiny(image_size=16))
    pixel_values = collator([images[i] for i in range(8)])["pixel_values"]
    with torch.no_grad():
        latents = vae.encode(pixel_values).latent_dist.mode()
    assert vae.config.scaling_factor == pytest.approx(1 / latents.std().item(), rel=1e-4)
    assert compute_scaling_factor(vae, [pixel_values[:5], pixel_values[5:]]) == pytest.approx(
        vae.config.scaling_factor, rel=1e-6
    )

    # train-tokenizer --vae_name_or_path: the model carries the VAE weights and its scaling factor.
    model = build_model(
        TokenizerModelArguments(config="tiny", image_size=16, patch_size=2, vae_name_or_path=str(output_dir))
    )
    assert model.config.vae_scaling_factor == pytest.approx(vae.config.scaling_factor)
    assert model.config.latent_channels == 2 and model.config.latent_size == 8
    assert all(torch.equal(value, model.vae.state_dict()[key]) for key, value in vae.state_dict().items())
    override = build_model(
        TokenizerModelArguments(
            config="tiny", image_size=16, patch_size=2, vae_name_or_path=str(output_dir), vae_scaling_factor=0.5
        )
    )
    assert override.config.vae_scaling_factor == 0.5

    # The same by hand: FlexTokConfig(vae_config=...) + the VAE weights; tokenize and detokenize.
    config = FlexTokConfig.tiny(
        image_size=16, patch_size=2, vae_config=dict(vae.config), vae_scaling_factor=vae.config.scaling_factor
    )
    flextok = FlexTokModel(config).eval()
    flextok.vae.load_state_dict(vae.state_dict())
    with torch.no_grad():
        scaled = flextok.encode_latents(pixel_values)
    # the model runs its VAE channels-last (`modeling_flextok_vae`): same latents up to float rounding
    torch.testing.assert_close(scaled, latents * vae.config.scaling_factor, atol=1e-5, rtol=1e-5)
    assert scaled.std().item() == pytest.approx(1.0, rel=1e-3)
    token_ids = flextok.tokenize(pixel_values[:2])
    assert len(token_ids) == 2 and token_ids[0].shape == (8,)
    decoded = flextok.detokenize([token_ids[0][:3], token_ids[1]], num_inference_steps=2, progress_bar=False)
    assert decoded.shape == (2, 3, 16, 16) and torch.isfinite(decoded).all()


def test_loss_terms_and_perceptual_gradient():
    vae = AutoencoderKL.from_config(
        small_vae_config(image_size=32, block_out_channels=(8, 8), latent_channels=2, norm_num_groups=4)
    )
    classifier = FlexTokImageClassifier(FlexTokClassifierConfig(widths=[8, 16], num_labels=2))
    perceptual = ClassifierPerceptualLoss(classifier)
    pixel_values = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    output = vae_loss(
        vae, pixel_values, kl_weight=0.1, l1_weight=0.5, perceptual_weight=2.0, perceptual_loss=perceptual
    )
    expected = output.mse_loss + 0.1 * output.kl_loss + 0.5 * output.l1_loss + 2.0 * output.perceptual_loss
    assert torch.allclose(output.loss, expected) and output.perceptual_loss > 0
    output.perceptual_loss.backward()
    assert vae.decoder.conv_out.weight.grad.abs().sum() > 0  # the perceptual term trains the VAE ...
    assert all(p.grad is None for p in classifier.parameters())  # ... not the frozen classifier
    assert perceptual(pixel_values, pixel_values).item() == 0
    # Eval mode uses the posterior mean: deterministic.
    with torch.no_grad():
        a = vae_loss(vae, pixel_values, sample_posterior=False).loss
        b = vae_loss(vae, pixel_values, sample_posterior=False).loss
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="perceptual_loss"):
        vae_loss(vae, pixel_values, perceptual_weight=1.0)
    with pytest.raises(ValueError, match="perceptual_loss"):
        AutoencoderKLWithLoss(vae, perceptual_weight=1.0)
    with pytest.raises(ValueError, match="kl_weight"):
        AutoencoderKLWithLoss(vae, kl_weight=-0.1)
    wrapped = AutoencoderKLWithLoss(vae, perceptual_weight=1.0, perceptual_loss=perceptual)
    assert all(key.startswith("vae.") for key in wrapped.state_dict())  # the classifier is not part of it
    with pytest.raises(ValueError, match="norm_num_groups"):
        small_vae_config(block_out_channels=(8, 12), norm_num_groups=8)
    with pytest.raises(ValueError, match="kl_weight"):
        train_vae({**RUN, "kl_weight": -1.0, "output_dir": "unused"})


@pytest.mark.slow
def test_evaluation_and_exact_resume(tmp_path):
    run = {**RUN, "max_steps": 4, "save_steps": 2, "save_strategy": "steps", "eval_split": "test",
           "max_eval_samples": 8, "eval_steps": 2, "scaling_num_samples": 4}  # fmt: skip
    full = train_vae({**run, "output_dir": str(tmp_path / "full")})
    evals = [entry for entry in full.state.log_history if "eval_psnr" in entry]
    assert [entry["step"] for entry in evals] == [2, 4, 4]  # two during training, one final
    assert all(entry["eval_psnr"] == pytest.approx(10 * np.log10(4 / entry["eval_mse_loss"])) for entry in evals)
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    resumed = train_vae(
        {
            **run,
            "output_dir": str(tmp_path / "resumed"),
            "resume_from_checkpoint": str(tmp_path / "resumed" / "checkpoint-2"),
        }
    )

    def losses(trainer):
        return [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]

    assert losses(resumed) == losses(full) and len(losses(full)) == 4
    a, b = (AutoencoderKL.from_pretrained(tmp_path / name) for name in ("full", "resumed"))
    assert all(torch.equal(value, b.state_dict()[key]) for key, value in a.state_dict().items())


def test_cli_subcommand_hands_flags_to_the_parser(tmp_path):
    import argparse

    from flextok_hf.commands import train_vae as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    parsed = parser.parse_args(["train-vae", "--block_out_channels", "8,12", "--output_dir", str(tmp_path)])
    assert parsed.args == ["--block_out_channels", "8,12", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="norm_num_groups"):
        parsed.func(parsed)
