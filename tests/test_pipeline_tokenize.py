"""The transformers task `pipeline("flextok-tokenize")`."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

import flextok_hf  # noqa: F401  (registers the task)
from flextok_hf import FlexTokImageProcessor
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
