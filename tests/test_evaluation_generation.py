"""Classifier accuracy of generations per budget (`flextok_hf.evaluation_generation`, `flextok-hf evaluate-generation`)."""

import json

import pytest
import torch

from flextok_hf import cli
from flextok_hf.data import load_image_dataset
from flextok_hf.evaluation_generation import (
    conditions_from_dataset,
    evaluate_conditional_generation,
    write_generation_report,
)
from flextok_hf.metrics.classifier import FlexTokClassifierConfig, FlexTokImageClassifier, load_default_classifier
from flextok_hf.pipeline_flextok_text2image import FlexTokClassToImagePipeline, FlexTokText2ImagePipeline
from flextok_test_utils import tiny_model
from test_pipeline_flextok_text2image import FSQ_LEVELS, STEPS, tiny_prior, tiny_text_encoder


@pytest.fixture(scope="module")
def class_pipe():
    pipe = FlexTokClassToImagePipeline.from_components(
        tiny_prior("class"), tiny_model(fsq_levels=FSQ_LEVELS), num_inference_steps=STEPS, decoder_guidance_scale=2.0
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    config = FlexTokClassifierConfig(
        image_size=16, widths=[4, 8], hidden_size=8, id2label={0: "cat", 1: "dog", 2: "zebra"}
    )
    return FlexTokImageClassifier(config).eval()


def test_accuracy_matches_classifying_the_same_generations(class_pipe, classifier):
    conditions, targets = [0, 1, 2], [0, 1, 1]
    results = evaluate_conditional_generation(
        class_pipe, conditions, targets, classifier, budgets=[1, 8], num_images_per_condition=2, seed=3
    )
    assert [row["budget"] for row in results["per_budget"]] == [1, 8]
    assert results["chance"] == pytest.approx(1 / 3)
    for row in results["per_budget"]:
        # The same generations, made and classified by hand.
        images = class_pipe(
            class_labels=conditions,
            num_tokens=row["budget"],
            num_images_per_label=2,
            generator=torch.Generator().manual_seed(3),
            output_type="raw",
        ).images.clamp(-1, 1)
        predicted = classifier.classify(images).view(3, 2)
        expected = (predicted == torch.tensor(targets)[:, None]).float().mean(dim=1)
        assert row["per_condition"] == pytest.approx(expected.tolist())
        assert row["class_accuracy"] == pytest.approx(expected.mean().item())


def test_conditions_from_dataset_map_captions_to_classifier_labels():
    classifier = load_default_classifier()
    digits = load_image_dataset("digits", "test")
    captions, targets = conditions_from_dataset(digits, classifier)
    assert len(captions) == 10 and len(set(captions)) == 10
    by_caption = dict(zip(captions, targets))
    assert classifier.config.id2label[by_caption["handwritten digit seven"]] == "digit 7"
    animals = load_image_dataset("animal_mnist", "test")
    captions, targets = conditions_from_dataset(animals, classifier)
    assert classifier.config.id2label[dict(zip(captions, targets))["a giraffe"]] == "giraffe"
    labels, label_targets = conditions_from_dataset(animals, classifier, condition_column="label")
    assert sorted(labels) == list(range(10)) and sorted(label_targets) == list(range(10, 20))
    with pytest.raises(ValueError, match="no column 'prompt'"):
        conditions_from_dataset(digits, classifier, condition_column="prompt")


def test_bad_arguments_are_named(class_pipe, classifier):
    with pytest.raises(ValueError, match="target_label_ids"):
        evaluate_conditional_generation(class_pipe, [0, 1], [0], classifier)
    with pytest.raises(ValueError, match="budgets"):
        evaluate_conditional_generation(class_pipe, [0], [0], classifier, budgets=[9])
    with pytest.raises(ValueError, match="num_images_per_condition"):
        evaluate_conditional_generation(class_pipe, [0], [0], classifier, num_images_per_condition=0)


def test_report_and_command_on_a_saved_text_pipeline(tmp_path, class_pipe, classifier):
    results = evaluate_conditional_generation(class_pipe, [0, 2], [0, 2], classifier, budgets=[2], seed=0)
    paths = write_generation_report(results, tmp_path / "report")
    markdown = open(paths["md"]).read()
    assert f"| 2 | {results['per_budget'][0]['class_accuracy']:.3f} |" in markdown
    assert f"| `2` | {results['per_budget'][0]['per_condition'][1]:.2f} |" in markdown
    assert json.load(open(paths["json"]))["per_budget"][0]["budget"] == 2

    text_encoder, tokenizer = tiny_text_encoder()
    pipe = FlexTokText2ImagePipeline.from_components(
        tiny_prior("text"), class_pipe.flextok, text_encoder, tokenizer, num_inference_steps=STEPS
    )
    pipe.save_pretrained(tmp_path / "pipe")
    argv = ["evaluate-generation", "--model", str(tmp_path / "pipe"), "--dataset", "digits", "--budgets", "1,4"]
    argv += ["--num-images", "1", "--num-inference-steps", "2", "--output-dir", str(tmp_path / "eval")]
    assert cli.main(argv) == 0
    report = json.load(open(tmp_path / "eval" / "generation_accuracy.json"))
    assert len(report["conditions"]) == 10 and "handwritten digit three" in report["conditions"]
    assert [row["budget"] for row in report["per_budget"]] == [1, 4]
    assert all(0.0 <= row["class_accuracy"] <= 1.0 for row in report["per_budget"])
    assert (tmp_path / "eval" / "generation_accuracy.png").stat().st_size > 0


def test_command_samples_with_the_pipeline_stored_defaults(tmp_path, class_pipe):
    text_encoder, tokenizer = tiny_text_encoder()
    stored = dict(prior_guidance_scale=2.0, decoder_guidance_scale=1.5, num_inference_steps=2, adaptive_guidance=False)
    pipe = FlexTokText2ImagePipeline.from_components(
        tiny_prior("text"), class_pipe.flextok, text_encoder, tokenizer, **stored
    )
    pipe.save_pretrained(tmp_path / "pipe")
    argv = ["evaluate-generation", "--model", str(tmp_path / "pipe"), "--dataset", "digits", "--budgets", "2"]
    argv += ["--num-images", "1", "--decoder-guidance-scale", "1.0", "--output-dir", str(tmp_path / "eval")]
    assert cli.main(argv) == 0
    report = json.load(open(tmp_path / "eval" / "generation_accuracy.json"))
    assert report["sampling"] == {**stored, "decoder_guidance_scale": 1.0}
    assert report["sampling_source"] == {
        "prior_guidance_scale": "pipeline",
        "decoder_guidance_scale": "--decoder-guidance-scale",
        "num_inference_steps": "pipeline",
        "adaptive_guidance": "pipeline",
    }
    markdown = open(tmp_path / "eval" / "generation_accuracy.md").read()
    assert (
        "prior_guidance_scale=2.0, decoder_guidance_scale=1.0, num_inference_steps=2, adaptive_guidance=False"
        in markdown
    )
