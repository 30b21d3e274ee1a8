"""Stage-1 tokenizer training with transformers.Trainer: collators, EMA, resume, cached latents, DDP, outputs."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor

from flextok_hf import FlexTokConfig, FlexTokModel
from flextok_hf.data import load_image_dataset
from flextok_hf.training import ImageCollator, LatentCollator, cache_latents, train_tokenizer
from flextok_hf.training.callbacks import EMACallback
from flextok_hf.training.tokenizer import TokenizerModelArguments, build_model, parse_tokenizer_args
from flextok_test_utils import TINY_TOKENIZER_RUN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = TINY_TOKENIZER_RUN


def losses(trainer_or_history):
    history = getattr(getattr(trainer_or_history, "state", None), "log_history", trainer_or_history)
    return [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_image_dataset("digits", "test").select(range(8))


def test_collators_and_latent_cache(digits):
    model = FlexTokModel(FlexTokConfig.tiny())
    collator = ImageCollator.from_model_config(model.config)
    rows = [digits[i] for i in range(4)]
    pixel_values = collator(rows)["pixel_values"]
    assert pixel_values.shape == (4, 3, 16, 16) and pixel_values.dtype == torch.float32
    assert pixel_values.min() >= -1 and pixel_values.max() <= 1 and pixel_values.max() > 0
    assert torch.equal(pixel_values[:, 0], pixel_values[:, 2])  # gray -> RGB

    flipper = ImageCollator.from_model_config(
        model.config, random_flip=True, generator=torch.Generator().manual_seed(0)
    )
    flipped = flipper(rows)["pixel_values"]
    expected_flip = torch.rand(4, generator=torch.Generator().manual_seed(0)) < 0.5
    for i in range(4):
        assert torch.equal(flipped[i], pixel_values[i].flip(-1) if expected_flip[i] else pixel_values[i])

    cached = cache_latents(model, digits, batch_size=3)
    assert "image" not in cached.column_names and {"latents", "label"} <= set(cached.column_names)
    assert isinstance(cached[0]["latents"], np.ndarray) and cached[0]["latents"].dtype == np.float32
    latents = LatentCollator()([cached[i] for i in range(4)])["latents"]
    assert torch.equal(latents, pixel_values)  # pixel space: the cache holds the preprocessed pixels exactly
    half = cache_latents(model, digits, batch_size=8, dtype="float16")
    assert half.features["latents"].dtype == "float16"  # stored in half precision (numpy format reads float32)
    assert np.array_equal(half[0]["latents"], cached[0]["latents"].astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="image_column"):
        cache_latents(model, digits, image_column="pixels")
    with pytest.raises(ValueError, match="dtype"):
        cache_latents(model, digits, dtype="int8")
    with pytest.raises(ValueError, match="'latents' column"):
        LatentCollator()(rows)


def test_arguments_and_model_building(tmp_path):
    model_args, data_args, training_args = parse_tokenizer_args(
        ["--config", "tiny", "--fsq_levels", "8,5,5,5", "--num_registers", "4", "--x0_loss_weight", "0.5",
         "--dataset", "mnist,animal_mnist", "--output_dir", str(tmp_path)]
    )  # fmt: skip
    assert training_args.remove_unused_columns is False and training_args.label_names == []
    assert training_args.use_cpu is (not torch.accelerator.is_available())
    assert isinstance(training_args.bf16, bool) and training_args.report_to in ("none", ["none"], [])
    assert data_args.dataset == "mnist,animal_mnist"
    config = build_model(model_args).config
    assert (config.fsq_levels, config.num_registers, config.x0_loss_weight) == ([8, 5, 5, 5], 4, 0.5)
    with pytest.raises(ValueError, match="config"):
        build_model(TokenizerModelArguments(config="no_such_preset"))
    with pytest.raises(ValueError, match="fsq_levels"):
        build_model(TokenizerModelArguments(fsq_levels="8,x"))
    FlexTokModel(FlexTokConfig.tiny()).save_pretrained(tmp_path / "pretrained")
    with pytest.raises(ValueError, match="num_registers"):
        build_model(TokenizerModelArguments(model_name_or_path=str(tmp_path / "pretrained"), num_registers=4))
    with pytest.raises(ValueError, match="label_names"):
        parse_tokenizer_args({"output_dir": str(tmp_path), "label_names": ["labels"]})

    # The CLI subcommand hands every flag to HfArgumentParser.
    from flextok_hf.commands import train_tokenizer as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    parsed = parser.parse_args(["train-tokenizer", "--config", "no_such_preset", "--output_dir", str(tmp_path)])
    assert parsed.args == ["--config", "no_such_preset", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="no_such_preset"):
        parsed.func(parsed)


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(tmp_path):
    """Gradient accumulation + eval + EMA + grids: a run resumed from its step-3 checkpoint ends exactly like the
    uninterrupted run (losses and EMA); the outputs are all there and load."""
    run = {
        **BASE,
        "max_steps": 6,
        "save_steps": 3,
        "eval_steps": 3,
        "gradient_accumulation_steps": 2,
        "per_device_train_batch_size": 4,
        "eval_split": "test",
        "max_eval_samples": 8,
        "eval_psnr_images": 2,
        "eval_psnr_num_inference_steps": 2,
        "ema_decay": 0.9,
        "num_sample_images": 3,
        "sample_budgets": "1,4,8",
        "sample_every_n_steps": 3,
        "sample_num_inference_steps": 2,
    }
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    full = train_tokenizer({**run, "output_dir": str(full_dir)})
    assert [step for step, _ in losses(full)] == [1, 2, 3, 4, 5, 6]
    assert len({loss for _, loss in losses(full)}) == 6
    assert full.state.global_step == 6

    # Resume a copy of the step-3 checkpoint in a fresh folder.
    shutil.copytree(full_dir / "checkpoint-3", resumed_dir / "checkpoint-3")
    resumed = train_tokenizer(
        {**run, "output_dir": str(resumed_dir), "resume_from_checkpoint": str(resumed_dir / "checkpoint-3")}
    )
    assert losses(resumed) == losses(full)
    for name in ("checkpoint-6/ema.safetensors", "model.safetensors"):
        expected, got = load_file(full_dir / name), load_file(resumed_dir / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[key], got[key]) for key in expected), name
    # The EMA differs from the raw weights, and the final folder holds the EMA.
    raw, ema = load_file(full_dir / "checkpoint-6/model.safetensors"), load_file(full_dir / "model.safetensors")
    ema_shadow = load_file(full_dir / "checkpoint-6/ema.safetensors")
    assert any(not torch.equal(raw[key], ema[key]) for key in ema_shadow)
    assert all(torch.equal(ema[key], ema_shadow[key]) for key in ema_shadow)

    history = json.loads((full_dir / "log_history.json").read_text())
    evals = [entry for entry in history if "eval_psnr" in entry]
    assert [entry["step"] for entry in evals] == [3, 6]
    assert all(np.isfinite(entry["eval_loss"]) and 0 < entry["eval_psnr"] < 100 for entry in evals)
    assert all("eval_psnr_ema" in entry for entry in evals)
    assert any("eval_ema_loss" in entry for entry in history)  # the final evaluation, with the EMA weights
    assert (full_dir / "loss_curve.png").stat().st_size > 0
    assert Image.open(full_dir / "loss_curve.png").size[0] > 100

    assert sorted(os.listdir(full_dir / "samples")) == ["step-000003.png", "step-000006.png"]
    for step in (3, 6):
        grid = Image.open(full_dir / "samples" / f"step-{step:06d}.png")
        assert grid.size == (16 * (1 + 3), 16 * 3)  # columns: original + budgets 1, 4, 8; rows: 3 images
    assert np.asarray(grid)[:, :16].std() > 0

    model = FlexTokModel.from_pretrained(full_dir)
    assert all(torch.equal(model.state_dict()[key], ema[key]) for key in ema)
    processor = AutoImageProcessor.from_pretrained(full_dir)
    assert processor.crop_size == {"height": 16, "width": 16}
    assert processor(Image.new("L", (8, 8)), return_tensors="pt")["pixel_values"].shape == (1, 3, 16, 16)


@pytest.mark.slow
def test_cached_latents_train_like_pixels(tmp_path):
    run = {**BASE, "max_steps": 3, "save_strategy": "no"}
    pixels = train_tokenizer({**run, "output_dir": str(tmp_path / "pixels")})
    cached = train_tokenizer({**run, "output_dir": str(tmp_path / "cached"), "cache_latents": True})
    assert isinstance(cached.data_collator, LatentCollator)
    assert len(losses(pixels)) == 3 and losses(cached) == losses(pixels)
    # Without EMA the final model is the trained model itself (trainer.save_model), with its processor.
    assert not any(isinstance(cb, EMACallback) for cb in cached.callback_handler.callbacks)
    reloaded = FlexTokModel.from_pretrained(tmp_path / "cached")
    assert all(torch.equal(value, cached.model.state_dict()[key]) for key, value in reloaded.state_dict().items())
    assert AutoImageProcessor.from_pretrained(tmp_path / "cached").size == {"shortest_edge": 16}


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    output_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        os.path.join(REPO, "examples", "train_tokenizer.py"),
        "--config", "tiny", "--dataset", "digits", "--max_train_samples", "16", "--per_device_train_batch_size", "4",
        "--max_steps", "2", "--logging_steps", "1", "--eval_split", "none", "--num_sample_images", "0",
        "--ema_decay", "0.9", "--save_strategy", "no", "--disable_tqdm", "true", "--dataloader_num_workers", "0",
        "--output_dir", str(output_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "world_size=2" in result.stdout
    history = json.loads((output_dir / "log_history.json").read_text())
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2]
    model = FlexTokModel.from_pretrained(output_dir)
    assert model.config.num_registers == 8
    assert (output_dir / "preprocessor_config.json").is_file()
