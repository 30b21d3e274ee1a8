"""The transformers task `pipeline("flextok-tokenize")`."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

import flextok_hf  # noqa: F401  (registers the task)
from flextok_hf import FlexTokImageProcessor, FlexTokModel
from flextok_test_utils import tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    model = tiny_model()
    model.save_pretrained(path)
    FlexTokImageProcessor.from_model_config(model.config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return pipeline("flextok-tokenize", model=str(model_dir), device="cpu")


def _image(seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).convert(mode)


def test_single_image_matches_the_model(tokenizer, model_dir):
    out = tokenizer(_image())
    assert set(out) == {"token_ids", "num_tokens"} and out["num_tokens"] == 8 and len(out["token_ids"]) == 8
    processor = FlexTokImageProcessor.from_pretrained(model_dir)
    direct = tokenizer.model.tokenize(processor(_image(), return_tensors="pt")["pixel_values"])[0]
    assert out["token_ids"] == direct.tolist()


def test_list_gray_rgba_and_truncation(tokenizer):
    images = [_image(0), _image(1, "L"), _image(2, "RGBA"), _image(3, "P")]
    outs = tokenizer(images, num_tokens=3, batch_size=2)
    assert len(outs) == 4 and all(o["num_tokens"] == 3 and len(o["token_ids"]) == 3 for o in outs)
    full = tokenizer(images[1])
    assert outs[1]["token_ids"] == full["token_ids"][:3]
    # RGBA is composited onto white before tokenizing.
    rgba = _image(2, "RGBA")
    white = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    assert tokenizer(rgba)["token_ids"] == tokenizer(white)["token_ids"]


def test_dataset_column(tokenizer):
    import datasets
    from transformers.pipelines.pt_utils import KeyDataset

    images = [_image(i) for i in range(5)]
    ds = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    outs = list(tokenizer(KeyDataset(ds, "image"), batch_size=2, num_tokens=4))
    assert len(outs) == 5
    assert [o["token_ids"] for o in outs] == [tokenizer(im)["token_ids"][:4] for im in images]


def test_bad_inputs(tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"num_tokens.*\[1, 8\]"):
        tokenizer(_image(), num_tokens=0)
    with pytest.raises(ValueError, match=r"num_tokens.*\[1, 8\]"):
        tokenizer(_image(), num_tokens=9)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot read image file"):
        tokenizer(str(broken))
    with pytest.raises(TypeError, match="images"):
        tokenizer(torch.zeros(2, dtype=torch.complex64))


# --------------------------------------------------------------------------------------------------------------------
# Where the task's model comes from (see flextok_hf.loading)
# --------------------------------------------------------------------------------------------------------------------
def _expected_ids(model, image, num_tokens=None):
    """The model's ids for `image` preprocessed as its config says (no preprocessor_config.json involved)."""
    pixel_values = FlexTokImageProcessor.from_model_config(model.config)(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return model.tokenize(pixel_values)[0][:num_tokens].tolist()


def test_no_model_is_the_shipped_default():
    from flextok_hf import FlexTokPipeline
    from flextok_hf.pretrained import pretrained_path

    task = pipeline("flextok-tokenize")
    shipped = FlexTokPipeline.from_pretrained(pretrained_path("tokenizer"))
    state, expected = task.model.state_dict(), shipped.flextok.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)
    assert task.image_processor.crop_size["height"] == shipped.flextok.config.image_size
    image = _image(4)
    out = task(image, num_tokens=4)
    assert out["token_ids"] == shipped.tokenize(image, num_tokens=4)[0].tolist()


@pytest.fixture(scope="module")
def saved_sources(tmp_path_factory):
    """One tiny model saved as a bare model folder (no preprocessor_config.json), a FlexTokPipeline folder and a
    class-to-image pipeline folder (its `flextok` part is the model)."""
    from flextok_hf import FlexTokARConfig, FlexTokARForCausalLM, FlexTokClassToImagePipeline, FlexTokPipeline

    root = tmp_path_factory.mktemp("sources")
    model = tiny_model(seed=3)
    model.save_pretrained(root / "model")
    FlexTokPipeline.from_flextok(model).save_pretrained(root / "pipeline")
    torch.manual_seed(0)
    prior_config = FlexTokARConfig.from_preset(
        "tiny", codebook_size=model.config.codebook_size, max_num_tokens=8, num_classes=2, tie_word_embeddings=True
    )
    prior = FlexTokARForCausalLM(prior_config).eval()
    FlexTokClassToImagePipeline.from_components(prior, model).save_pretrained(root / "class2image")
    assert not (root / "model" / "preprocessor_config.json").exists()
    return model, {name: root / name for name in ("model", "pipeline", "class2image")}


@pytest.mark.parametrize("kind", ["model", "pipeline", "class2image"])
def test_model_and_pipeline_folders(saved_sources, kind):
    model, folders = saved_sources
    task = pipeline("flextok-tokenize", model=str(folders[kind]))
    assert task.image_processor.crop_size["height"] == model.config.image_size  # built from the model config
    image = _image(5)
    assert task(image, num_tokens=6)["token_ids"] == _expected_ids(model, image, 6)


def test_hub_ids_of_model_and_pipeline_folders(saved_sources, fake_hub):
    from huggingface_hub import HfApi

    model, folders = saved_sources
    api, image = HfApi(), _image(6)
    for kind, folder in folders.items():
        repo_id = f"fake-user/tokenize-task-{kind}"
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder))
        task = pipeline("flextok-tokenize", model=repo_id)
        assert task(image)["token_ids"] == _expected_ids(model, image), kind
        # Offline, what was downloaded loads from the cache; what was not is reported as such.
        cached = FlexTokModel.from_pretrained(repo_id, local_files_only=True)
        assert _expected_ids(cached, image) == _expected_ids(model, image), kind
    with pytest.raises(OSError, match="could not be downloaded from the Hub"):
        FlexTokModel.from_pretrained("fake-user/tokenize-task-never-downloaded", local_files_only=True)


def test_a_saved_preprocessor_config_is_preferred(model_dir):
    saved = FlexTokImageProcessor.from_pretrained(model_dir)
    saved.resample = 0  # NEAREST instead of the default bicubic: visible only if the saved file is used
    saved.save_pretrained(model_dir / "nearest")
    tokenizer = pipeline("flextok-tokenize", model=str(model_dir), device="cpu")
    assert tokenizer.image_processor.resample != 0
    import shutil

    shutil.copyfile(model_dir / "nearest" / "preprocessor_config.json", model_dir / "preprocessor_config.json")
    try:
        assert pipeline("flextok-tokenize", model=str(model_dir)).image_processor.resample == 0
    finally:
        FlexTokImageProcessor.from_model_config(tiny_model().config).save_pretrained(model_dir)


def test_other_tasks_config_resolution_is_unchanged(model_dir, tmp_path):
    """`pipeline()`'s AutoConfig resolves FlexTok sources for "flextok-tokenize" only; other calls are AutoConfig's."""
    import json

    import transformers.pipelines as pipelines_module
    from transformers import AutoConfig, BertConfig

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    resolver = pipelines_module.AutoConfig
    assert isinstance(resolver.from_pretrained(str(tmp_path), _from_pipeline="feature-extraction"), BertConfig)
    assert resolver.register == AutoConfig.register
    with pytest.raises(ValueError, match="not a FlexTok model"):
        resolver.from_pretrained(str(tmp_path), _from_pipeline="flextok-tokenize")
    assert resolver.from_pretrained(str(model_dir), _from_pipeline="flextok-tokenize").model_type == "flextok"
