"""REPA: teachers (tiny random ViT / DINOv2-with-registers / classifier), the loss term, its gradients, the off switch,
and `train-tokenizer --repa_teacher`."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel, ViTConfig, ViTImageProcessor, ViTModel

from flextok_hf import FlexTokConfig, FlexTokModel
from flextok_hf.metrics.classifier import FlexTokClassifierConfig, FlexTokImageClassifier
from flextok_hf.training import REPATeacher, train_tokenizer

FEATURES = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_vit(image_size=16, patch_size=4) -> ViTModel:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=FEATURES,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return ViTModel(config, add_pooling_layer=False)


def images(batch=4, size=16, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def draws(batch, config, seed=1):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, config.latent_channels, config.latent_size, config.latent_size)
    return dict(
        noise=torch.randn(shape, generator=generator),
        sigmas=torch.rand(batch, generator=generator) * 0.9 + 0.05,
        keep_k=torch.tensor([1, 2, 8, 5])[:batch],
        null_condition_mask=torch.zeros(batch, dtype=torch.bool),
    )


def test_vit_teacher_features_match_the_patch_tokens():
    vit = tiny_vit()
    teacher = REPATeacher(vit)
    pixel_values = images(size=32)  # resized to the ViT's 16x16 input
    features = teacher(pixel_values)
    assert features.shape == (4, 16, FEATURES) and not features.requires_grad
    assert teacher.feature_dim == FEATURES and teacher.grid_size == 4 and not teacher.training
    assert all(not p.requires_grad for p in vit.parameters())
    # Dropping the CLS token of the normed output, after resizing and ImageNet normalization.
    expected = vit(pixel_values=teacher.preprocess(pixel_values)).last_hidden_state[:, 1:]
    assert torch.allclose(features, expected)
    resized = torch.nn.functional.interpolate(pixel_values, size=(16, 16), mode="bicubic", antialias=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    manual = ((resized.clamp(-1, 1) + 1) / 2 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(teacher.preprocess(pixel_values), manual, atol=1e-6)
    # An intermediate layer: hidden_states[1] (after the first block), without the CLS token.
    first = REPATeacher(vit, layer=1)(pixel_values)
    hidden = vit(pixel_values=teacher.preprocess(pixel_values), output_hidden_states=True).hidden_states[1]
    assert torch.allclose(first, hidden[:, 1:])
    teacher.train()
    assert not teacher.training and not vit.training  # stays in eval mode
    with pytest.raises(ValueError, match="layer"):
        REPATeacher(vit, layer="cls")
    with pytest.raises(ValueError, match="pixel_values"):
        teacher(torch.zeros(2, 16, 16))
    with pytest.raises(TypeError, match="model_name_or_path_or_module"):
        REPATeacher(3)


def test_teacher_from_folder_uses_its_processor_and_drops_registers(tmp_path):
    tiny_vit().save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 24, "width": 24}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        tmp_path / "vit"
    )
    teacher = REPATeacher(str(tmp_path / "vit"))
    assert teacher.image_size == 24 and teacher.grid_size == 6  # position embeddings interpolated to 6x6
    assert torch.equal(teacher.image_mean.flatten(), torch.full((3,), 0.5))
    assert teacher(images()).shape == (4, 36, FEATURES)

    config = Dinov2WithRegistersConfig(
        image_size=16, patch_size=4, hidden_size=FEATURES, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_register_tokens=4,
    )  # fmt: skip
    dinov2 = Dinov2WithRegistersModel(config)
    teacher = REPATeacher(dinov2)
    features = teacher(images())
    tokens = dinov2(pixel_values=teacher.preprocess(images())).last_hidden_state
    assert tokens.shape[1] == 1 + 4 + 16 and features.shape == (4, 16, FEATURES)
    assert torch.allclose(features, tokens[:, 5:])  # CLS + 4 registers dropped


def test_classifier_teacher_uses_its_feature_map():
    classifier = FlexTokImageClassifier(FlexTokClassifierConfig(widths=[8, 16, 24], num_labels=3)).eval()
    teacher = REPATeacher(classifier)
    assert teacher.feature_dim == 24 and teacher.grid_size == 4 and teacher.image_size == 32
    pixel_values = images(size=32)
    hidden = pixel_values
    for stage in classifier.stages:
        hidden = stage(hidden)
    assert torch.allclose(teacher(pixel_values), hidden.flatten(2).transpose(1, 2))
    middle = REPATeacher(classifier, layer=1)
    assert middle(images(size=16)).shape == (4, 64, 16)  # 16 px upsampled to 32 -> 8x8 map of stage 1
    with pytest.raises(ValueError, match="layer"):
        REPATeacher(classifier, layer=3)


def test_repa_loss_term_and_gradients():
    config = FlexTokConfig.tiny(repa_layer=0, repa_feature_dim=FEATURES, repa_projector_dim=48)
    torch.manual_seed(0)
    model = FlexTokModel(config).train()
    teacher = REPATeacher(tiny_vit())
    pixel_values = images()
    output = model(pixel_values, repa_target=teacher(pixel_values), **draws(4, config))
    assert output.repa_loss is not None and -1 < output.repa_loss.item() < 1
    assert torch.allclose(output.loss, output.rf_loss + config.repa_loss_weight * output.repa_loss)
    output.repa_loss.backward()
    grads = {name: param.grad for name, param in model.named_parameters()}
    assert all(grads[name] is not None and grads[name].abs().sum() > 0 for name in grads if "repa_projector" in name)

    def touched(prefix):
        return any(g is not None and g.abs().sum() > 0 for name, g in grads.items() if name.startswith(prefix))

    # The REPA term reaches the decoder up to block repa_layer (and what feeds it), not the blocks after it.
    assert touched("decoder.layers.0.") and touched("decoder.patch_embed.") and touched("decoder.time_embed.")
    assert not touched("decoder.layers.1.") and not touched("decoder.head.")
    # A [B, F, h, w] target on another grid is resized to the decoder's 4x4 patch grid.
    grid_target = teacher(pixel_values).transpose(1, 2).reshape(4, FEATURES, 4, 4)
    upsampled = torch.nn.functional.interpolate(grid_target, size=(8, 8), mode="nearest")
    with torch.no_grad():
        assert torch.allclose(
            model(pixel_values, repa_target=upsampled, **draws(4, config)).repa_loss,
            model(pixel_values, repa_target=grid_target, **draws(4, config)).repa_loss,
            atol=1e-5,
        )


def test_repa_off_changes_nothing():
    torch.manual_seed(0)
    plain = FlexTokModel(FlexTokConfig.tiny()).eval()
    torch.manual_seed(0)
    with_projector = FlexTokModel(FlexTokConfig.tiny(repa_layer=1, repa_feature_dim=FEATURES)).eval()
    assert plain.repa_projector is None and not any("repa" in name for name in plain.state_dict())
    # The same weights (building the projector draws from the RNG, so the same seed alone does not give them).
    missing, unexpected = with_projector.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("repa_projector.") for key in missing)
    with torch.no_grad():
        a = plain(images(), **draws(4, plain.config))
        b = with_projector(images(), **draws(4, plain.config))
    assert a.repa_loss is None and b.repa_loss is None
    assert torch.equal(a.velocity, b.velocity) and torch.equal(a.loss, b.loss)
    assert torch.equal(a.token_ids, b.token_ids)
    with pytest.raises(ValueError, match="repa_layer"):
        plain(images(), repa_target=torch.zeros(4, 16, FEATURES))


@pytest.mark.slow
def test_train_tokenizer_with_repa_teacher(tmp_path):
    tiny_vit().save_pretrained(tmp_path / "teacher")
    run = {
        "config": "tiny", "dataset": "digits", "max_train_samples": 16, "per_device_train_batch_size": 8,
        "max_steps": 2, "logging_steps": 1, "eval_split": "none", "num_sample_images": 0, "ema_decay": 0.9,
        "save_strategy": "no", "disable_tqdm": True, "dataloader_num_workers": 0, "seed": 0,
        "repa_teacher": str(tmp_path / "teacher"), "repa_layer": 0, "repa_projector_dim": 48,
        "repa_loss_weight": 0.25, "output_dir": str(tmp_path / "out"),
    }  # fmt: skip
    trainer = train_tokenizer(run)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(-1 < entry["repa_loss"] < 1 and entry["rf_loss"] > 0 for entry in logs)
    for entry in logs:  # the logged loss is the weighted sum of the logged terms
        assert entry["loss"] == pytest.approx(entry["rf_loss"] + 0.25 * entry["repa_loss"], rel=1e-4)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["repa_layer"], config["repa_feature_dim"], config["repa_projector_dim"]) == (0, FEATURES, 48)
    saved = load_file(tmp_path / "out" / "model.safetensors")
    expected = FlexTokModel(FlexTokConfig.tiny(repa_layer=0, repa_feature_dim=FEATURES, repa_projector_dim=48))
    assert set(saved) == set(expected.state_dict())  # the projector is saved, the teacher is not
    assert any(key.startswith("repa_projector.") for key in saved)
    assert not any("embeddings" in key or "encoder.layer." in key for key in saved)
    assert FlexTokModel.from_pretrained(tmp_path / "out").repa_projector is not None

    with pytest.raises(ValueError, match="repa_teacher"):
        train_tokenizer({**run, "repa_teacher": None, "output_dir": str(tmp_path / "no_teacher")})
    with pytest.raises(ValueError, match="cache_latents"):
        train_tokenizer({**run, "cache_latents": True, "output_dir": str(tmp_path / "cached")})
