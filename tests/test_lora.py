"""LoRA fine-tuning: target modules, training changes the outputs but not the base, adapter-only saving, reloading
with `PeftModel.from_pretrained` / `load_adapter` / `load_lora`, and merging."""

import json
import re

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from flextok_hf import FlexTokConfig, FlexTokModel
from flextok_hf.training.lora import (
    LORA_METADATA_NAME,
    add_lora,
    budget_psnr,
    budget_rf_loss,
    finetune_lora,
    load_lora,
    lora_target_modules,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def trained_like_base() -> FlexTokModel:
    """A tiny model whose zero-initialized parts (adaLN gates, readouts) are nonzero, as after training; with the gates
    at zero the decoder blocks, and hence their adapters, would have no effect."""
    torch.manual_seed(0)
    model = FlexTokModel(FlexTokConfig.tiny())
    with torch.no_grad():
        for param in model.parameters():
            if param.abs().sum() == 0:
                param.normal_(0.0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    trained_like_base().save_pretrained(path)
    return path


def fixed_inputs(config, batch=4):
    generator = torch.Generator().manual_seed(5)
    shape = (batch, config.latent_channels, config.latent_size, config.latent_size)
    return dict(
        pixel_values=torch.rand(batch, 3, 16, 16, generator=generator) * 2 - 1,
        noise=torch.randn(shape, generator=generator),
        sigmas=torch.tensor([0.1, 0.4, 0.7, 0.95])[:batch],
        keep_k=torch.tensor([1, 3, 8, 8])[:batch],
        null_condition_mask=torch.zeros(batch, dtype=torch.bool),
    )


@torch.no_grad()
def outputs(model, config):
    model.eval()
    result = model(**fixed_inputs(config))
    return result.velocity, result.token_ids


def adapted_modules(model) -> list[str]:
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A")]


def test_target_modules_cover_the_projections_only():
    decoder_only = adapted_modules(add_lora(trained_like_base()))
    assert len(decoder_only) == 2 * 7  # 2 decoder blocks x (q, k, v, o, gate, up, down)
    assert all(".decoder.layers." in name for name in decoder_only)
    both = adapted_modules(add_lora(trained_like_base(), encoder=True, mlp=False))
    assert len(both) == 2 * 4 + 2 * 4 and any(".encoder.layers." in name for name in both)
    assert not any(part in name for name in both for part in ("mlp", "to_codes", "from_codes", "head", "adaln"))
    mlp_only = lora_target_modules(attention=False)
    assert re.fullmatch(mlp_only, "decoder.layers.11.mlp.up_proj")
    assert not re.fullmatch(mlp_only, "decoder.layers.11.attn.q_proj")
    assert not re.fullmatch(mlp_only, "encoder.layers.0.mlp.up_proj")
    with pytest.raises(ValueError, match="attention"):
        lora_target_modules(attention=False, mlp=False)
    with pytest.raises(TypeError, match="FlexTokModel"):
        add_lora(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_finetune_save_reload_and_merge(base_dir, tmp_path):
    config = FlexTokModel.from_pretrained(base_dir).config
    before_velocity, before_ids = outputs(FlexTokModel.from_pretrained(base_dir), config)
    output_dir = tmp_path / "lora"
    trainer = finetune_lora(
        {
            "model_name_or_path": str(base_dir), "dataset": "digits", "max_train_samples": 16,
            "per_device_train_batch_size": 8, "max_steps": 3, "learning_rate": 2e-2, "logging_steps": 1,
            "lora_r": 4, "lora_encoder": True, "eval_split": "test", "max_eval_samples": 8, "eval_psnr_images": 2,
            "eval_psnr_num_inference_steps": 2, "num_sample_images": 2, "sample_num_inference_steps": 2,
            "ema_decay": 0.5, "save_strategy": "no", "disable_tqdm": True, "dataloader_num_workers": 0,
            "seed": 0, "output_dir": str(output_dir),
            "bf16": False,  # accelerate wraps forward in autocast when on; the reload comparison is in fp32
        }
    )  # fmt: skip
    tuned = trainer.model
    assert isinstance(tuned, PeftModel)
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2, 3]
    assert any("eval_ema_psnr" in entry for entry in trainer.state.log_history)
    velocity, token_ids = outputs(tuned, config)
    assert not torch.allclose(velocity, before_velocity, atol=1e-4)  # training changed the outputs

    # The base weights are untouched: the frozen layers inside the PeftModel equal the saved base.
    base_state = FlexTokModel.from_pretrained(base_dir).state_dict()
    inner = {name.replace(".base_layer", ""): value for name, value in tuned.get_base_model().state_dict().items()}
    assert all(torch.equal(value, inner[name]) for name, value in base_state.items())

    # Only the adapter is saved (safetensors), plus flextok_lora.json naming the base.
    files = {path.name for path in output_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", LORA_METADATA_NAME} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin", "adapter_model.bin"}
    assert all("lora_" in key for key in load_file(output_dir / "adapter_model.safetensors"))
    metadata = json.loads((output_dir / LORA_METADATA_NAME).read_text())
    assert metadata["base_model_name_or_path"] == str(base_dir) and metadata["lora"]["lora_encoder"] is True

    # Reloads give identical outputs: peft, transformers' load_adapter, and load_lora (base path from the JSON).
    reloaded = PeftModel.from_pretrained(FlexTokModel.from_pretrained(base_dir), output_dir)
    native = FlexTokModel.from_pretrained(base_dir)
    native.load_adapter(str(output_dir))
    for model in (reloaded, native, load_lora(output_dir)):
        got_velocity, got_ids = outputs(model, config)
        assert torch.equal(got_velocity, velocity) and torch.equal(got_ids, token_ids)

    merged = load_lora(output_dir, merge=True)
    assert type(merged) is FlexTokModel and not adapted_modules(merged)
    merged_velocity, merged_ids = outputs(merged, config)
    assert torch.allclose(merged_velocity, velocity, atol=1e-5) and torch.equal(merged_ids, token_ids)
    merged.save_pretrained(tmp_path / "merged")  # a normal checkpoint
    assert torch.equal(outputs(FlexTokModel.from_pretrained(tmp_path / "merged"), config)[0], merged_velocity)

    scores = budget_psnr(merged, fixed_inputs(config)["pixel_values"], [1, 8], num_inference_steps=2)
    assert set(scores) == {1, 8} and all(0 < value < 100 for value in scores.values())
    losses = budget_rf_loss(merged, fixed_inputs(config)["pixel_values"], [1, 8])
    assert set(losses) == {1, 8, "null"} and all(value > 0 for value in losses.values())
    assert losses == budget_rf_loss(merged, fixed_inputs(config)["pixel_values"], [1, 8])  # fixed draws
    with pytest.raises(ValueError, match="base_model"):
        load_lora(tmp_path / "merged")


def test_cli_subcommand_hands_flags_to_the_parser(tmp_path):
    import argparse

    from flextok_hf.commands import finetune_lora as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    argv = ["finetune-lora", "--model_name_or_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path)]
    parsed = parser.parse_args(argv)
    assert parsed.args == argv[1:]
    with pytest.raises(OSError):  # no model there
        parsed.func(parsed)
