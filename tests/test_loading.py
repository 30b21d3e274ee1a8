"""Official checkpoints load in one line; any other config.json is refused (`flextok_hf.loading`).

The official fixture is laid out the two ways official checkpoints come: a `model.safetensors` whose metadata holds the
Hydra config (what the official `save_safetensors` writes), and a folder with the Hydra dict as `config.json` next to a
`model.safetensors` without it (what `PyTorchModelHubMixin` uploads). Each loads with `FlexTokModel.from_pretrained`,
`FlexTokPipeline.from_pretrained` and `pipeline("flextok-tokenize")`, from disk and from the loopback Hub, and must give
the official code's token ids exactly.
"""

import json
import logging
import os
import shutil

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file
from transformers import pipeline

from flextok_hf import FlexTokConfig, FlexTokModel, FlexTokPipeline
from flextok_hf.convert_official import OfficialCheckpointError
from flextok_hf.loading import NotAFlexTokModelError, resolve_flextok_source
from flextok_test_utils import (
    FIXTURE_CKPT,
    FIXTURE_VAE_CONFIG,
    converted_fixture_model,
    fixture_official_config,
    fixture_vae_config,
    reference,
    write_official_checkpoint,
)

LOG_TEXT = "official FlexTok checkpoint"


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """`{"metadata": folder, "config_json": folder}`: the fixture laid out both ways (each with its vae_config.json,
    which gives the tiny VAE's shape; released checkpoints use the default shape or their `hf_hub_path` VAE)."""
    root = tmp_path_factory.mktemp("official")
    metadata = root / "metadata"
    metadata.mkdir()
    shutil.copyfile(FIXTURE_CKPT, metadata / "model.safetensors")
    shutil.copyfile(FIXTURE_VAE_CONFIG, metadata / "vae_config.json")
    config_json = root / "config_json"
    config_json.mkdir()
    (config_json / "config.json").write_text(json.dumps(fixture_official_config(), indent=2))
    save_file(load_file(FIXTURE_CKPT), str(config_json / "model.safetensors"))  # no metadata at all
    shutil.copyfile(FIXTURE_VAE_CONFIG, config_json / "vae_config.json")
    return {"metadata": metadata, "config_json": config_json}


def reference_token_ids(model: FlexTokModel) -> torch.Tensor:
    ref = reference()
    with torch.no_grad():
        return model.encode(ref["images"].to(model.dtype)).token_ids


def assert_is_the_official_model(model: FlexTokModel):
    assert torch.equal(reference_token_ids(model), reference()["token_ids"])
    expected = converted_fixture_model().state_dict()
    state = model.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)


def assert_task_gives_official_ids(task, num_tokens: int = 5):
    """The task's ids for the fixture's reference images (converted back to PIL) equal the official ids."""
    ref = reference()
    images = task.image_processor.postprocess(ref["images"], output_type="pil")
    direct = reference_token_ids(task.model)
    assert torch.equal(direct, ref["token_ids"])
    outputs = task(images, num_tokens=num_tokens)
    processed = task.image_processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = task.model.encode(processed).token_ids[:, :num_tokens]
    assert [o["token_ids"] for o in outputs] == expected.tolist()
    assert task.image_processor.crop_size["height"] == 64  # from the converted config: no preprocessor_config.json


@pytest.mark.parametrize("layout", ["metadata", "config_json"])
def test_official_folder_and_file_load_in_one_line(layouts, layout, caplog):
    folder = layouts[layout]
    with caplog.at_level(logging.WARNING, logger="flextok_hf.loading"):
        model = FlexTokModel.from_pretrained(folder)
    assert LOG_TEXT in caplog.text and "converting it in memory" in caplog.text
    assert_is_the_official_model(model)
    assert not model.training

    # The file itself (its folder's config.json / vae_config.json come along).
    assert_is_the_official_model(FlexTokModel.from_pretrained(folder / "model.safetensors"))

    pipe = FlexTokPipeline.from_pretrained(str(folder))
    assert_is_the_official_model(pipe.flextok)
    assert (pipe.config.num_inference_steps, pipe.config.guidance_scale, pipe.config.adaptive_guidance) == (
        20,
        7.5,
        True,
    )  # the official sampler defaults

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flextok_hf.loading"):
        task = pipeline("flextok-tokenize", model=str(folder))
    assert caplog.text.count(LOG_TEXT) == 1  # converted once (the task's config is read from the header only)
    assert_task_gives_official_ids(task)

    # The config alone: the converted one, read from the header / config.json as data.
    config = FlexTokConfig.from_pretrained(folder)
    assert config.to_dict() == converted_fixture_model().config.to_dict()


def test_official_checkpoints_through_the_hub(layouts, fake_hub, tmp_path):
    api = HfApi()
    repos = {}
    for layout, folder in layouts.items():
        repo_id = f"fake-user/official-tiny-{layout}"
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder))
        repos[layout] = repo_id
    # What PyTorchModelHubMixin uploads: the Hydra dict (without a top-level `_target_`) as config.json and weights
    # whose metadata is only {"format": "pt"}.
    mixin = tmp_path / "mixin"
    mixin.mkdir()
    config = {k: v for k, v in fixture_official_config().items() if k != "_target_"}
    (mixin / "config.json").write_text(json.dumps(config))
    save_file(load_file(FIXTURE_CKPT), str(mixin / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(FIXTURE_VAE_CONFIG, mixin / "vae_config.json")
    api.create_repo("fake-user/official-tiny-mixin", exist_ok=True)
    api.upload_folder(repo_id="fake-user/official-tiny-mixin", folder_path=str(mixin))
    repos["mixin"] = "fake-user/official-tiny-mixin"

    for repo_id in repos.values():
        assert_is_the_official_model(FlexTokModel.from_pretrained(repo_id))
    assert_is_the_official_model(FlexTokPipeline.from_pretrained(repos["metadata"]).flextok)
    assert_is_the_official_model(FlexTokPipeline.from_pretrained(repos["mixin"]).flextok)
    assert_task_gives_official_ids(pipeline("flextok-tokenize", model=repos["config_json"]))


def test_vae_shape_from_the_hub_repo_named_in_the_metadata(fake_hub, tmp_path):
    """Without a vae_config.json, the VAE's shape comes from the `hf_hub_path` repo (config only; the weights are
    the checkpoint's)."""
    from diffusers import AutoencoderKL

    vae_repo = "fake-user/official-tiny-vae"
    vae_config = {k: v for k, v in fixture_vae_config().items() if not k.startswith("_")}
    AutoencoderKL.from_config(vae_config).push_to_hub(vae_repo)
    config = fixture_official_config()
    config["vae"]["hf_hub_path"] = vae_repo
    path = tmp_path / "model.safetensors"
    write_official_checkpoint(str(path), config, load_file(FIXTURE_CKPT))
    assert_is_the_official_model(FlexTokModel.from_pretrained(path))


# --------------------------------------------------------------------------------------------------------------------
# Refusals: never read as a FlexTokConfig full of defaults
# --------------------------------------------------------------------------------------------------------------------
def _loaders():
    return {
        "FlexTokConfig": lambda path: FlexTokConfig.from_pretrained(path),
        "FlexTokModel": lambda path: FlexTokModel.from_pretrained(path),
        "FlexTokPipeline": lambda path: FlexTokPipeline.from_pretrained(path),
        "task": lambda path: pipeline("flextok-tokenize", model=path),
    }


@pytest.mark.parametrize(
    "config,found",
    [
        ({"model_type": "bert", "hidden_size": 32}, "model_type 'bert'"),
        ({"image_size": 32, "num_registers": 8}, "keys ['image_size', 'num_registers']"),
    ],
)
def test_a_foreign_config_json_is_refused_by_every_loader(tmp_path, config, found):
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    for name, load in _loaders().items():
        with pytest.raises(NotAFlexTokModelError, match="neither a FlexTok config") as error:
            load(str(tmp_path))
        assert found in str(error.value), name


def test_folders_that_hold_no_flextok_model_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotAFlexTokModelError, match="no config.json"):
        FlexTokModel.from_pretrained(empty)
    with pytest.raises(FileNotFoundError, match="No such file or folder"):
        FlexTokPipeline.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(NotAFlexTokModelError, match="not valid JSON"):
        pipeline("flextok-tokenize", model=str(tmp_path / "broken"))
    other = tmp_path / "other_pipeline"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline", "vae": ["diffusers", "X"]}))
    with pytest.raises(NotAFlexTokModelError, match="without a `flextok` component"):
        FlexTokModel.from_pretrained(other)
    official_without_weights = tmp_path / "official_config_only"
    official_without_weights.mkdir()
    (official_without_weights / "config.json").write_text(json.dumps(fixture_official_config()))
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        FlexTokPipeline.from_pretrained(str(official_without_weights))


def test_official_config_json_is_read_as_data_and_allowlisted(tmp_path):
    marker = tmp_path / "pwned"
    config = fixture_official_config()
    config["regularizer"] = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(load_file(FIXTURE_CKPT), str(tmp_path / "model.safetensors"))
    assert resolve_flextok_source(tmp_path).kind == "official"
    for load in _loaders().values():
        with pytest.raises(OfficialCheckpointError, match=r"os\.system"):
            load(str(tmp_path))
    assert not marker.exists()


def test_truncated_checkpoint_is_reported_as_such(tmp_path):
    data = open(FIXTURE_CKPT, "rb").read()
    for length in (5, len(data) // 2):  # a cut header, and cut tensor data
        (tmp_path / "model.safetensors").write_bytes(data[:length])
        with pytest.raises(OfficialCheckpointError, match="truncated"):
            FlexTokModel.from_pretrained(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"PK\x03\x04 a zip / pickled torch file")
    with pytest.raises(OfficialCheckpointError, match="not safetensors"):
        FlexTokPipeline.from_pretrained(str(tmp_path / "model.safetensors"))


def test_config_of_a_pipeline_folder_is_its_flextok_part():
    from flextok_hf.pretrained import pretrained_path

    folder = pretrained_path("text2image")
    config = FlexTokConfig.from_pretrained(folder)
    assert config.to_dict() == FlexTokConfig.from_pretrained(os.path.join(folder, "flextok")).to_dict()
    assert (config.model_type, config.image_size, config.num_registers) == ("flextok", 32, 32)
