"""The official-checkpoint converter: safety (allowlist, data-only parsing), option space, dtypes, CLI."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from flextok_hf import FlexTokModel
from flextok_hf.convert_official import (
    OfficialCheckpointError,
    convert_official_checkpoint,
    read_official_checkpoint,
)
from flextok_test_utils import (
    FIXTURE_CKPT,
    FIXTURE_VAE_CONFIG,
    fixture_official_config,
    fixture_vae_config,
    make_official_variant,
    reference,
    write_official_checkpoint,
)


def _fixture_tensors():
    return load_file(FIXTURE_CKPT)


def test_variant_writer_reproduces_the_fixture_layout(tmp_path):
    """The variant writer used below must produce exactly the official key names and shapes (keys.txt)."""
    tensors = make_official_variant(str(tmp_path / "v.safetensors"))
    official = _fixture_tensors()
    assert set(tensors) == set(official)
    assert all(tuple(tensors[k].shape) == tuple(official[k].shape) for k in official)


# --------------------------------------------------------------------------------------------------------------------
# Safety
# --------------------------------------------------------------------------------------------------------------------
def test_non_allowlisted_target_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    config = fixture_official_config()
    config["regularizer"] = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    path = tmp_path / "evil.safetensors"
    write_official_checkpoint(str(path), config, _fixture_tensors())
    with pytest.raises(OfficialCheckpointError, match=r"os\.system.*config\.regularizer"):
        convert_official_checkpoint(str(path), vae_config=FIXTURE_VAE_CONFIG)
    assert not marker.exists()

    # Nested targets are checked too (e.g. a per-sample op).
    config = fixture_official_config()
    config["encoder"]["module_dict"]["enc_channels_to_last"]["per_sample_op"]["_target_"] = "builtins.eval"
    write_official_checkpoint(str(path), config, _fixture_tensors())
    with pytest.raises(OfficialCheckpointError, match="builtins.eval"):
        read_official_checkpoint(str(path))


def test_non_literal_metadata_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    from safetensors.torch import save_file

    metadata = {k: str(v) for k, v in fixture_official_config().items()}
    metadata["decoder"] = f"__import__('os').system('touch {marker}')"
    save_file(_fixture_tensors(), str(path), metadata=metadata)
    with pytest.raises(OfficialCheckpointError, match="not a Python literal"):
        convert_official_checkpoint(str(path), vae_config=FIXTURE_VAE_CONFIG)
    assert not marker.exists()


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c["decoder"]["module_dict"]["dec_transformer"].update(qkv_bias=True), "qkv_bias"),
        (lambda c: c["encoder"]["module_dict"]["enc_transformer"].update(score_mod_read_key="x"), "score_mod"),
        (
            lambda c: c["decoder"]["module_dict"]["dec_latent_dropout"].update(replace_with_single_token=True),
            "replace_with_single_token",
        ),
        (lambda c: c["decoder"]["module_dict"]["dec_to_patches"].update(use_mup_readout=True), "use_mup_readout"),
        (lambda c: c["encoder"]["module_dict"]["enc_seq_packer"].update(mask_mode="full"), "mask_mode"),
        (lambda c: c["decoder"]["module_dict"]["dec_time_embedder"].update(new_knob=3), "new_knob"),
        (lambda c: c["flow_matching_noise_module"].update(ln=False), "ln"),
        (lambda c: c["encoder"]["module_dict"]["enc_register_module"].update(n_min=1), "n_min"),
        (lambda c: c["vae"].update(learnable_logvar=True), "learnable_logvar"),
        (
            lambda c: c["decoder"]["module_dict"].update(
                extra={"_target_": "flextok.flow_matching.cfg_utils.MomentumBuffer", "momentum": 0.5}
            ),
            "extra",
        ),
    ],
)
def test_unsupported_settings_are_refused_by_name(tmp_path, edit, message):
    config = fixture_official_config()
    edit(config)
    path = tmp_path / "odd.safetensors"
    write_official_checkpoint(str(path), config, _fixture_tensors())
    with pytest.raises(OfficialCheckpointError, match=message):
        convert_official_checkpoint(str(path), vae_config=FIXTURE_VAE_CONFIG)


def test_extra_or_missing_tensors_are_refused(tmp_path):
    tensors = _fixture_tensors()
    tensors["decoder.module_dict.dec_time_embedder.extra.weight"] = torch.zeros(2)
    path = tmp_path / "extra.safetensors"
    write_official_checkpoint(str(path), fixture_official_config(), tensors)
    with pytest.raises(OfficialCheckpointError, match="no counterpart"):
        convert_official_checkpoint(str(path), vae_config=FIXTURE_VAE_CONFIG)
    tensors = _fixture_tensors()
    del tensors["decoder.module_dict.dec_nested_dropout.dropout_mask_token"]
    write_official_checkpoint(str(path), fixture_official_config(), tensors)
    with pytest.raises(OfficialCheckpointError, match="dropout_mask_token"):
        convert_official_checkpoint(str(path), vae_config=FIXTURE_VAE_CONFIG)


def test_wrong_vae_shape_gives_a_hint(tmp_path):
    # Without the fixture's vae_config.json next to it, the default is the released SDXL-like VAE shape.
    alone = tmp_path / "model.safetensors"
    shutil.copyfile(FIXTURE_CKPT, alone)
    with pytest.raises(OfficialCheckpointError, match="vae_config"):
        convert_official_checkpoint(str(alone))


# --------------------------------------------------------------------------------------------------------------------
# Option space: variants derived from the fixture
# --------------------------------------------------------------------------------------------------------------------
VARIANTS = {
    "widths_heads_depths": dict(dim=192, dec_dim=256, enc_depth=1, dec_depth=3, head_dim=32),
    "patch4_registers16": dict(patch=4, registers=16),
    "latent_channels_4": dict(latent_channels=4),
    "max_timestep_default_1000": dict(max_timestep=None),
    "pow2_zero_null_adaln1_plain_head": dict(
        nested_mode="pow2", null_mode="zero", adaln_expansion=1, head_adaln=False
    ),
    "uniform_pow2_sampled_posterior": dict(nested_mode="uniform_pow2", sample_posterior=True),
    "mlp_ratio_2": dict(mlp_ratio=2.0),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_converter_handles_option_space(tmp_path, name):
    axes = VARIANTS[name]
    path = tmp_path / f"{name}.safetensors"
    official = make_official_variant(str(path), **axes)
    vae_config = dict(fixture_vae_config(), latent_channels=axes.get("latent_channels", 16))
    model = convert_official_checkpoint(str(path), vae_config=vae_config)
    config = model.config
    assert config.image_size == 64 and config.patch_size == axes.get("patch", 2)
    assert config.encoder_hidden_size == axes.get("dim", 128)
    assert config.decoder_hidden_size == axes.get("dec_dim", axes.get("dim", 128))
    assert config.encoder_num_layers == axes.get("enc_depth", 2) and config.decoder_num_layers == axes.get(
        "dec_depth", 2
    )
    assert config.encoder_head_dim == config.decoder_head_dim == axes.get("head_dim", 64)
    assert config.num_registers == axes.get("registers", 32)
    assert config.latent_channels == axes.get("latent_channels", 16)
    assert config.max_timestep == (1000.0 if "max_timestep" in axes else 1.0)
    assert config.nested_dropout_mode == axes.get("nested_mode", "uniform")
    assert config.null_condition_mode == axes.get("null_mode", "learned")
    assert config.adaln_expansion == axes.get("adaln_expansion", 2)
    assert config.head_adaln == axes.get("head_adaln", True)
    assert config.vae_sample_posterior == axes.get("sample_posterior", False)
    assert config.mlp_ratio == axes.get("mlp_ratio", 4.0)

    # Tensors land where the mapping says (the mapping itself is proven numerically by the fixture parity tests).
    state = model.state_dict()
    d = "decoder.module_dict."
    table = official[f"{d}dec_registers_posemb_module.posembs"]
    assert torch.equal(state["decoder.register_posemb"], table[0, 0].t())
    last = config.decoder_num_layers - 1
    assert torch.equal(
        state[f"decoder.layers.{last}.mlp.up_proj.weight"],
        official[f"{d}dec_transformer.blocks.{last}.mlp.fc3.weight"],
    )
    assert torch.equal(
        state[f"decoder.layers.{last}.adaln_modulation.1.weight"],
        official[f"{d}dec_transformer.blocks.{last}.adaLN_modulation.1.weight"],
    )
    assert (model.decoder.null_condition is None) == (axes.get("null_mode") == "zero")
    assert (model.decoder.head.adaln_modulation is None) == (axes.get("head_adaln") is False)

    # And the converted model runs end to end.
    images = reference()["images"][:2]
    generator = torch.Generator().manual_seed(0)
    ids = model.tokenize(images, generator=generator)
    assert len(ids) == 2 and ids[0].shape == (config.num_registers,)
    out = model.detokenize([ids[0][:3], ids[1]], num_inference_steps=2, guidance_scale=2.0, progress_bar=False)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    if axes.get("sample_posterior"):
        again = model.tokenize(images, generator=torch.Generator().manual_seed(0))
        assert all(torch.equal(a, b) for a, b in zip(ids, again))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints(tmp_path, dtype):
    tensors = {k: v.to(dtype) for k, v in _fixture_tensors().items()}
    path = tmp_path / "half.safetensors"
    write_official_checkpoint(str(path), fixture_official_config(), tensors)
    model = convert_official_checkpoint(str(path), vae_config=FIXTURE_VAE_CONFIG)
    state = model.state_dict()
    assert state["encoder.registers"].dtype == torch.float32
    expected = tensors["encoder.module_dict.enc_register_module.registers"].float()
    assert torch.equal(state["encoder.registers"], expected)
    ref = reference()
    ids = model.encode(ref["images"]).token_ids
    assert (ids == ref["token_ids"]).float().mean() > 0.7  # rounding the weights moves a few ids

    bf16_model = convert_official_checkpoint(str(path), vae_config=FIXTURE_VAE_CONFIG, dtype=torch.bfloat16)
    assert bf16_model.encoder.registers.dtype == torch.bfloat16
    assert bf16_model.vae.decoder.conv_out.weight.dtype == torch.float32


def test_external_vae_folder(tmp_path):
    """Checkpoints that keep their VAE elsewhere convert with `vae=` (a diffusers AutoencoderKL folder)."""
    from diffusers import AutoencoderKL

    tensors = _fixture_tensors()
    vae = AutoencoderKL.from_config(fixture_vae_config())
    vae.load_state_dict({k[len("vae.vae.") :]: v for k, v in tensors.items() if k.startswith("vae.vae.")})
    vae.save_pretrained(tmp_path / "vae")
    stripped = {k: v for k, v in tensors.items() if not k.startswith("vae.")}
    path = tmp_path / "novae.safetensors"
    write_official_checkpoint(str(path), fixture_official_config(), stripped)
    with pytest.raises(OfficialCheckpointError, match="no VAE tensors"):
        convert_official_checkpoint(str(path))
    model = convert_official_checkpoint(str(path), vae=str(tmp_path / "vae"))
    ref = reference()
    assert torch.equal(model.encode(ref["images"]).token_ids, ref["token_ids"])


def test_cli_convert_official_writes_a_loadable_folder(tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    from flextok_hf.cli import main

    out = tmp_path / "converted"
    assert main(["convert-official", FIXTURE_CKPT, str(out), "--vae-config", FIXTURE_VAE_CONFIG]) == 0
    assert (out / "model.safetensors").exists() and (out / "preprocessor_config.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "flextok" and config["vae_scaling_factor"] == 4.0
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, FlexTokModel)
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.crop_size["height"] == 64
    ref = reference()
    assert torch.equal(model.eval().encode(ref["images"]).token_ids, ref["token_ids"])
    assert not any(name.endswith(".bin") for name in os.listdir(out))
