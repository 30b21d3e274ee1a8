"""The default models shipped in `flextok_hf/pretrained/`: they load offline, work, and the showcase command runs."""

import os

import PIL.Image
import pytest
import torch

from flextok_hf import FlexTokPipeline, FlexTokText2ImagePipeline, cli
from flextok_hf.data import load_image_dataset
from flextok_hf.metrics.classifier import load_default_classifier
from flextok_hf.pretrained import PRETRAINED_DIR, load_default_text2image_pipeline, pretrained_path

# Set from the shipped model's measurements (TRAINING.md: gap ~0.95, class kept 0.94-0.97 at K tokens and 0.70-0.76 at 4,
# PSNR(K) - PSNR(1) >= 8 dB on held-out images; generations on target 98 % at 8 tokens), with margin for the few images
# and the one decoder seed used here (measured on these 24 images: 0.92 at K, 0.58 at 4 tokens; 8 of 8 generations).
GAP_THRESHOLD = 0.5
MIN_ACCURACY_AT_K = 0.75
MIN_ACCURACY_AT_4 = 0.4
MIN_GENERATION_ACCURACY_AT_8 = 0.6


@pytest.fixture(scope="module")
def tokenizer():
    pipe = FlexTokPipeline.from_pretrained(pretrained_path("tokenizer"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_weights_are_safetensors_and_small():
    files = [os.path.join(root, name) for root, _, names in os.walk(PRETRAINED_DIR) for name in names]
    weights = [path for path in files if path.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    assert weights == []
    total = sum(os.path.getsize(path) for path in files if path.endswith(".safetensors"))
    assert 0 < total < 50 * 2**20
    for name in ("tokenizer", "text2image", "classifier"):
        assert os.path.isfile(os.path.join(pretrained_path(name), "README.md"))


def test_tokenizer_reconstructions_are_recognisable_and_improve_with_tokens(tokenizer):
    classifier = load_default_classifier()
    rows = []
    for name in ("mnist", "animal_mnist"):
        data = load_image_dataset(name, "test").shuffle(seed=0).select(range(12))
        mapping = classifier.label_ids_for(data.features["label"].names)
        rows += [(image, mapping[label]) for image, label in zip(data["image"], data["label"])]
    images, labels = [image for image, _ in rows], torch.tensor([label for _, label in rows])
    pixels = tokenizer.preprocess(images).float()
    max_tokens = tokenizer.flextok.config.num_registers
    ids = tokenizer.tokenize(images)
    assert all(i.shape == (max_tokens,) for i in ids)
    assert all(0 <= int(i.min()) and int(i.max()) < tokenizer.flextok.config.codebook_size for i in ids)

    def reconstruct(k):
        out = tokenizer.detokenize([i[:k] for i in ids], generator=torch.Generator().manual_seed(0), output_type="pt")
        return out * 2 - 1  # [0, 1] -> [-1, 1]

    full, first = reconstruct(max_tokens), reconstruct(1)
    accuracy = (classifier.classify(full) == labels).float().mean().item()
    assert accuracy >= MIN_ACCURACY_AT_K, accuracy
    accuracy_at_4 = (classifier.classify(reconstruct(4)) == labels).float().mean().item()
    assert accuracy_at_4 >= MIN_ACCURACY_AT_4, accuracy_at_4
    mse_full = ((full - pixels) ** 2).mean().item()
    mse_first = ((first - pixels) ** 2).mean().item()
    assert mse_full < 0.3 * mse_first, (mse_full, mse_first)  # PSNR(K) - PSNR(1) > 5 dB


def test_shipped_decoder_reads_its_tokens(tokenizer):
    """The token-reliance diagnostic: with the images' own registers the RF loss is far below the loss with another
    image's registers (a decoder that ignores its tokens shows no gap: tests/test_training_recipe.py)."""
    from flextok_hf.diagnostics import token_reliance

    data = load_image_dataset("mnist", "test").select(range(16))
    pixels = tokenizer.preprocess(list(data["image"])).float()
    report = token_reliance(tokenizer.flextok, pixel_values=pixels)
    assert report["gap"] > GAP_THRESHOLD, report
    for losses in report["per_sigma"].values():
        assert losses["true"] < losses["shuffled"]


def test_text2image_generates_the_requested_size_and_budget():
    pipe = load_default_text2image_pipeline()
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe, FlexTokText2ImagePipeline)
    out = pipe(
        ["handwritten digit seven", "a giraffe"],
        num_tokens=4,
        num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(0),
    )
    size = pipe.flextok.config.image_size
    assert len(out.images) == 4 and all(image.size == (size, size) for image in out.images)
    assert len(out.token_ids) == 4 and all(ids.shape == (4,) for ids in out.token_ids)


def test_text2image_generations_show_the_prompted_class_from_8_tokens():
    pipe = load_default_text2image_pipeline()
    pipe.set_progress_bar_config(disable=True)
    classifier = load_default_classifier()
    prompts = {"handwritten digit seven": "digit 7", "handwritten digit two": "digit 2", "a giraffe": "giraffe"}
    prompts["an elephant"] = "elephant"
    out = pipe(
        list(prompts),
        num_tokens=8,
        num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    label_ids = {name: index for index, name in classifier.config.id2label.items()}
    expected = torch.tensor([label_ids[name] for name in prompts.values() for _ in range(2)])
    accuracy = (classifier.classify(out.images * 2 - 1) == expected).float().mean().item()
    assert accuracy >= MIN_GENERATION_ACCURACY_AT_8, accuracy


def test_showcase_command_writes_both_grids(tmp_path, capsys):
    argv = ["showcase", "--out", str(tmp_path), "--prompts", "a giraffe", "--num-images", "2", "--scale", "3"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "reconstructions.png" in printed and "generations.png" in printed
    config = FlexTokPipeline.from_pretrained(pretrained_path("tokenizer")).flextok.config
    cell = 3 * config.image_size  # upscaled 3x (nearest)
    num_columns = 1 + len(FlexTokPipeline.from_pretrained(pretrained_path("tokenizer")).default_budgets())
    with PIL.Image.open(tmp_path / "generations.png") as grid:
        # a label column on the left and a label row on top, then one row per prompt of 2 cells
        assert 2 * cell < grid.size[0] < 2 * cell + 400 and cell < grid.size[1] < cell + 60
    with PIL.Image.open(tmp_path / "reconstructions.png") as grid:
        assert num_columns * cell < grid.size[0] < num_columns * cell + 400
        assert 4 * cell < grid.size[1] < 4 * cell + 80  # 4 bundled images
        pixels = grid.convert("L")
        # the label strips hold dark text on white; the cells are mostly dark (MNIST-style images)
        assert min(pixels.crop((0, 0, grid.size[0], 20)).getdata()) < 100
