"""Rate-distortion evaluation, the linear probe on FSQ codes, the report writers and `flextok-hf evaluate`."""

import json
import os

import numpy as np
import pytest
import torch

from flextok_hf import FlexTokFlowScheduler, FlexTokImageProcessor
from flextok_hf.data import load_image_dataset
from flextok_hf.evaluation import (
    REPORT_FILES,
    default_budgets,
    evaluate_rate_distortion,
    linear_probe_from_ids,
    write_report,
)
from flextok_hf.metrics.classifier import load_default_classifier
from flextok_hf.quantizer_fsq import FlexTokFSQ
from flextok_test_utils import tiny_model

FD_KEY = "fd_flextok_classifier_mnist-animal_mnist"


def test_default_budgets():
    assert default_budgets(8) == [1, 2, 4, 8]
    assert default_budgets(6) == [1, 2, 4, 6]
    assert default_budgets(1) == [1]


@pytest.fixture(scope="module")
def mnist_rows():
    return load_image_dataset("mnist", "test").select(range(6))


@pytest.fixture(scope="module")
def rate_distortion(mnist_rows):
    model = tiny_model(image_size=32)  # K = 8 registers
    settings = dict(num_inference_steps=2, guidance_scale=2.0, adaptive_guidance=True, progress_bar=False)
    results = evaluate_rate_distortion(model, mnist_rows, seeds=(0, 1), batch_size=10, **settings)
    # The same images with one seed and another batch size: noise depends only on (seed, image).
    single = evaluate_rate_distortion(model, mnist_rows, seeds=(1,), batch_size=7, **settings)
    return model, results, single


def test_rate_distortion_results(rate_distortion, mnist_rows):
    model, results, single = rate_distortion
    assert results["budgets"] == [1, 2, 4, 8] and results["seeds"] == [0, 1]
    assert results["num_samples"] == 6 and results["fd_key"] == FD_KEY
    assert [row["budget"] for row in results["per_budget"]] == [1, 2, 4, 8]
    for row in results["per_budget"]:
        for key in ("psnr", "mae", "ssim", FD_KEY, "recon_accuracy"):
            assert len(row["per_seed"][key]) == 2
            values = np.asarray(row["per_seed"][key])
            assert row[key] == pytest.approx(values.mean())
            assert row[f"{key}_std"] == pytest.approx(values.std(ddof=1))
        assert 0 <= row["mae"] <= 2 and -1 <= row["ssim"] <= 1 and row[FD_KEY] >= 0
        assert 0 <= row["recon_accuracy"] <= 1
        assert row["psnr_std"] > 0  # different seeds give different reconstructions
        for key in ("psnr", "mae", "ssim", FD_KEY, "recon_accuracy"):
            assert single["per_budget"][results["budgets"].index(row["budget"])]["per_seed"][key][0] == pytest.approx(
                row["per_seed"][key][1], rel=1e-5, abs=1e-6
            )
    # The originals' accuracy is the shipped classifier's accuracy on the processed images.
    classifier = load_default_classifier()
    pixel_values = FlexTokImageProcessor.from_model_config(model.config)(
        list(mnist_rows["image"]), return_tensors="pt"
    )
    targets = torch.tensor(list(mnist_rows["label"]))  # "digit d" is label d
    expected = (classifier.classify(pixel_values["pixel_values"]) == targets).float().mean().item()
    assert results["original_accuracy"] == pytest.approx(expected)


def test_write_report(rate_distortion, tmp_path):
    _, results, _ = rate_distortion
    results = dict(
        results,
        linear_probe={
            "budgets": [1, 8],
            "accuracy": [0.25, 0.5],
            "train_accuracy": [0.3, 0.9],
            "majority_baseline": 0.2,
            "num_train": 10,
            "num_test": 6,
        },
    )
    paths = write_report(results, tmp_path / "report")
    assert sorted(os.listdir(tmp_path / "report")) == sorted(REPORT_FILES)
    assert json.loads(open(paths["json"]).read())["per_budget"][2]["budget"] == 4
    table = [line for line in open(paths["md"]).read().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header + one row per budget
    assert FD_KEY in table[0] and "linear probe" in table[0]
    assert table[1].startswith("| 1 | ") and table[1].endswith(" 0.250 |") and table[2].endswith(" – |")
    with open(paths["png"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rate_distortion_rejects_bad_budgets(mnist_rows):
    model = tiny_model()
    with pytest.raises(ValueError, match="budgets"):
        evaluate_rate_distortion(model, mnist_rows, budgets=[0, 2])
    with pytest.raises(ValueError, match="budgets"):
        evaluate_rate_distortion(model, mnist_rows, budgets=[16])


def _random_ids(generator, num, num_registers, codebook):
    return torch.randint(0, codebook, (num, num_registers), generator=generator)


def _quadrant_labels(quantizer, ids, position):
    """4 classes from the signs of the first two code dims of token `position` (linear in the codes)."""
    codes = quantizer.ids_to_codes(ids[:, position])
    return ((codes[:, 0] >= 0).long() + 2 * (codes[:, 1] >= 0).long()).numpy()


def test_linear_probe_reads_the_label_from_the_right_token():
    quantizer = FlexTokFSQ([8, 8, 8, 5, 5, 5])
    generator = torch.Generator().manual_seed(0)
    train = _random_ids(generator, 400, 4, quantizer.codebook_size)
    test = _random_ids(generator, 200, 4, quantizer.codebook_size)
    first = linear_probe_from_ids(
        train, _quadrant_labels(quantizer, train, 0), test, _quadrant_labels(quantizer, test, 0), quantizer
    )
    assert first["budgets"] == [1, 2, 4] and first["num_train"] == 400 and first["num_test"] == 200
    assert min(first["accuracy"]) > 0.9
    # Label in the second token: invisible with k = 1 (its codes are zeroed), visible from k = 2 on.
    second = linear_probe_from_ids(
        train, _quadrant_labels(quantizer, train, 1), test, _quadrant_labels(quantizer, test, 1), quantizer
    )
    assert abs(second["accuracy"][0] - 0.25) < 0.12
    assert second["accuracy"][1] > 0.9


def test_linear_probe_is_at_chance_for_independent_labels():
    quantizer = FlexTokFSQ([8, 5, 5])
    generator = torch.Generator().manual_seed(1)
    train = _random_ids(generator, 400, 8, quantizer.codebook_size)
    test = _random_ids(generator, 400, 8, quantizer.codebook_size)
    labels = torch.randint(0, 2, (800,), generator=generator).numpy()
    result = linear_probe_from_ids(train, labels[:400], test, labels[400:], quantizer, budgets=[1, 8])
    for accuracy in result["accuracy"]:
        assert abs(accuracy - 0.5) < 0.1
    with pytest.raises(ValueError, match="token_ids_train"):
        linear_probe_from_ids(train[:, 0], labels[:400], test, labels[400:], quantizer)


def test_evaluate_command_writes_report(tmp_path, monkeypatch):
    from flextok_hf import cli

    model = tiny_model()  # 16x16: MNIST is resized by the saved processor
    model.save_pretrained(tmp_path / "model")
    FlexTokImageProcessor.from_model_config(model.config).save_pretrained(tmp_path / "model")
    output = tmp_path / "eval"
    argv = ["evaluate", "--model", str(tmp_path / "model"), "--dataset", "mnist", "--num-samples", "4"]
    argv += ["--budgets", "1,8", "--seeds", "0", "--num-inference-steps", "1", "--guidance-scale", "1"]
    argv += [
        "--linear-probe",
        "--probe-train-samples",
        "60",
        "--probe-test-samples",
        "20",
        "--output-dir",
        str(output),
    ]
    assert cli.main(argv) == 0
    assert sorted(os.listdir(output)) == sorted(REPORT_FILES)
    results = json.loads((output / "rate_distortion.json").read_text())
    assert [row["budget"] for row in results["per_budget"]] == [1, 8]
    assert results["linear_probe"]["budgets"] == [1, 8] and len(results["linear_probe"]["accuracy"]) == 2
    assert results["image_size"] == 16 and results["dataset"] == "mnist (test)"
    table = [line for line in (output / "rate_distortion.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 3


def test_evaluate_command_samples_with_the_pipeline_stored_defaults(tmp_path):
    """A pipeline's stored decoder settings are the defaults (here a class-to-image pipeline's decoder settings, which
    differ from `FlexTokPipeline`'s 20 steps / 7.5 / APG); flags override them one by one; the report says which."""
    from flextok_hf import FlexTokARConfig, FlexTokARForCausalLM, FlexTokClassToImagePipeline, cli

    model = tiny_model(seed=2)
    torch.manual_seed(0)
    prior = FlexTokARForCausalLM(
        FlexTokARConfig.from_preset("tiny", codebook_size=model.config.codebook_size, max_num_tokens=8, num_classes=2)
    )
    stored = dict(num_inference_steps=2, decoder_guidance_scale=1.5, adaptive_guidance=False)
    stored_pipe = FlexTokClassToImagePipeline.from_components(prior, model, **stored)
    stored_pipe.scheduler = FlexTokFlowScheduler.from_config(stored_pipe.scheduler.config, shift=2.0)
    stored_pipe.save_pretrained(tmp_path / "pipe")
    base = ["evaluate", "--model", str(tmp_path / "pipe"), "--dataset", "mnist", "--num-samples", "2"]
    base += ["--budgets", "2", "--seeds", "0", "--batch-size", "2"]

    assert cli.main([*base, "--output-dir", str(tmp_path / "stored")]) == 0
    report = json.loads((tmp_path / "stored" / "rate_distortion.json").read_text())
    assert (report["num_inference_steps"], report["guidance_scale"], report["adaptive_guidance"]) == (2, 1.5, False)
    assert set(report["sampling_source"].values()) == {"pipeline"}
    assert report["scheduler"] == "FlexTokFlowScheduler (shift=2)"  # the stored sampler decodes
    markdown = (tmp_path / "stored" / "rate_distortion.md").read_text()
    assert "2 steps of FlexTokFlowScheduler (shift=2), guidance scale 1.5 (CFG)" in markdown
    # The numbers are those of sampling with these settings.
    direct = evaluate_rate_distortion(
        model, "mnist", budgets=[2], num_samples=2, seeds=[0], batch_size=2, num_inference_steps=2,
        guidance_scale=1.5, adaptive_guidance=False, scheduler=FlexTokFlowScheduler(shift=2.0),
    )  # fmt: skip
    assert report["per_budget"][0]["psnr"] == pytest.approx(direct["per_budget"][0]["psnr"], abs=1e-6)

    argv = [*base, "--guidance-scale", "1.25", "--adaptive-guidance", "--output-dir", str(tmp_path / "flags")]
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "flags" / "rate_distortion.json").read_text())
    assert (report["num_inference_steps"], report["guidance_scale"], report["adaptive_guidance"]) == (2, 1.25, True)
    assert report["sampling_source"] == {
        "num_inference_steps": "pipeline",
        "guidance_scale": "--guidance-scale",
        "adaptive_guidance": "--[no-]adaptive-guidance",
        "scheduler": "pipeline",
    }
