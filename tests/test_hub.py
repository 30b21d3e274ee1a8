"""Model cards and Hub publishing (`flextok_hf.hub`, `flextok-hf push`), against the loopback fake Hub."""

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from transformers import AutoImageProcessor, AutoModelForCausalLM

from flextok_hf import (
    FlexTokARConfig,
    FlexTokARForCausalLM,
    FlexTokImageProcessor,
    FlexTokModel,
    FlexTokPipeline,
)
from flextok_hf.hub import (
    FlexTokModelCard,
    infer_card_kind,
    metric_columns,
    model_card_from_folder,
    push_to_hub,
    render_model_card,
    training_summary_and_table,
)
from flextok_test_utils import random_images, tiny_model

TRAIN_COMMAND = "flextok-hf train-tokenizer --config tiny --dataset digits --max_steps 200"


@pytest.fixture(autouse=True)
def _no_unknown_routes(fake_hub):
    """Every Hub call of a test must be one the fake Hub implements."""
    before = len(fake_hub.unhandled)
    yield
    assert fake_hub.unhandled[before:] == []


def rate_distortion() -> dict:
    """A rate-distortion report in the `<metric>_mean` / `<metric>_std` layout, with one missing value."""
    rows = []
    for k in (1, 2, 4, 8):
        rows.append(
            {
                "budget": k,
                "psnr_mean": 11.0 + 1.25 * math.log2(k),
                "psnr_std": 0.05 * k,
                "mae_mean": 0.4 / k,
                "ssim_mean": 0.1 * k,
                "fd_classifier_mean": 80.0 / k,
                "recon_accuracy_mean": None if k == 1 else 0.1 * k,
                "per_seed": {"psnr": [11.0, 11.1]},
            }
        )
    return {"dataset": "mnist", "split": "test", "num_samples": 32, "seeds": [0, 1], "per_budget": rows}


def log_history() -> list[dict]:
    history = [{"step": s, "epoch": s / 50, "loss": 2.0 / s, "grad_norm": 1.0} for s in range(5, 205, 5)]
    history += [{"step": s, "epoch": s / 50, "eval_loss": 1.0 / s, "eval_runtime": 0.5} for s in (100, 200)]
    history.append({"step": 200, "epoch": 4.0, "train_runtime": 90.0, "train_loss": 0.05, "total_flos": 1.0})
    return history


def write_run_files(folder, with_metrics: bool = True) -> None:
    """What a training + evaluation run leaves next to the model."""
    folder.mkdir(parents=True, exist_ok=True)
    if with_metrics:
        (folder / "rate_distortion.json").write_text(json.dumps(rate_distortion()))
        PIL.Image.new("RGB", (12, 8), (200, 30, 30)).save(folder / "rate_distortion.png")
    (folder / "log_history.json").write_text(json.dumps(log_history()))
    PIL.Image.new("RGB", (8, 8), (30, 30, 200)).save(folder / "loss_curve.png")


def expected_eval_results(report: dict) -> dict:
    """`(metric type, config) -> value` for every non-missing per-budget mean of the report."""
    expected = {}
    for row in report["per_budget"]:
        for key, value in row.items():
            if key.endswith("_mean") and value is not None:
                expected[(key[: -len("_mean")], f"num_tokens={row['budget']}")] = value
    return expected


def tiny_prior(seed: int = 0) -> FlexTokARForCausalLM:
    torch.manual_seed(seed)
    # The FlexTok codebook (64,000 ids) with tied id embedding / output head: half the bytes to push and pull.
    config = FlexTokARConfig.from_preset(
        "tiny", codebook_size=64000, max_num_tokens=8, num_classes=4, tie_word_embeddings=True
    )
    return FlexTokARForCausalLM(config).eval()


def tiny_pipeline(seed: int = 0) -> FlexTokPipeline:
    pipe = FlexTokPipeline.from_flextok(tiny_model(seed), num_inference_steps=2, guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assert_same_flextok_outputs(a: FlexTokModel, b: FlexTokModel) -> None:
    pixel_values = random_images(2, a.config.image_size, seed=3)
    with torch.no_grad():
        encoded_a, encoded_b = a.encode(pixel_values), b.encode(pixel_values)
        assert torch.equal(encoded_a.token_ids, encoded_b.token_ids)
        noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
        t, keep_k = torch.tensor([0.3, 0.9]), torch.tensor([2, 8])
        velocity_a = a.predict_velocity(noise, t, encoded_a.quants, keep_k)
        velocity_b = b.predict_velocity(noise, t, encoded_b.quants, keep_k)
    assert torch.equal(velocity_a, velocity_b)


def assert_same_pipeline_images(a: FlexTokPipeline, b: FlexTokPipeline) -> None:
    images = [
        PIL.Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 24, 3), dtype=np.uint8)) for i in (0, 1)
    ]
    out_a = a(images, num_tokens=[2, 8], generator=torch.Generator().manual_seed(0), output_type="np")
    out_b = b(images, num_tokens=[2, 8], generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.array_equal(out_a.images, out_b.images)
    assert all(torch.equal(x, y) for x, y in zip(out_a.token_ids, out_b.token_ids))


def assert_same_prior_samples(a, b) -> None:
    kwargs = dict(class_labels=torch.tensor([0, 3]), guidance_scale=2.0)
    tokens_a = a.generate_image_tokens(**kwargs, generator=torch.Generator().manual_seed(5))
    tokens_b = b.generate_image_tokens(**kwargs, generator=torch.Generator().manual_seed(5))
    assert tokens_a.shape == (2, 8) and torch.equal(tokens_a, tokens_b)


# ------------------------------------------------------------------------------------------------------ push_to_hub
def test_push_model_with_card_in_one_commit_and_reload(fake_hub, tmp_path):
    repo_id = "fake-user/hub-flextok-card"
    write_run_files(tmp_path / "run")
    model = tiny_model()
    card = render_model_card(
        "tokenizer",
        model_name="FlexTok tiny (digits)",
        description="A 16x16 pixel-space FlexTok for tests.",
        datasets=["digits"],
        tags=["mnist-like"],
        metrics=tmp_path / "run" / "rate_distortion.json",
        rate_distortion_plot=tmp_path / "run" / "rate_distortion.png",
        training_command=TRAIN_COMMAND,
        training_log=tmp_path / "run" / "log_history.json",
        loss_curve_plot=tmp_path / "run" / "loss_curve.png",
        repo_id=repo_id,
    )
    info = push_to_hub(model, repo_id, card=card, commit_message="Add tiny FlexTok")

    files = set(fake_hub.list_files(repo_id))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= files
    assert {"rate_distortion.png", "loss_curve.png"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    for name in ("rate_distortion.png", "loss_curve.png"):
        assert fake_hub.read_file(repo_id, name) == (tmp_path / "run" / name).read_bytes()
    commits = HfApi().list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["Add tiny FlexTok", "initial commit"]
    assert info.oid == commits[0].commit_id and repo_id in info.commit_url

    reloaded = FlexTokModel.from_pretrained(repo_id).eval()
    assert_same_flextok_outputs(model, reloaded)

    processor = AutoImageProcessor.from_pretrained(repo_id)
    assert isinstance(processor, FlexTokImageProcessor)
    assert processor.crop_size["height"] == model.config.image_size
    image = PIL.Image.fromarray(np.random.default_rng(7).integers(0, 256, (30, 22, 3), dtype=np.uint8))
    local = FlexTokImageProcessor.from_model_config(model.config)
    assert torch.equal(
        processor(image, return_tensors="pt")["pixel_values"], local(image, return_tensors="pt")["pixel_values"]
    )

    loaded = ModelCard.load(repo_id)
    data = loaded.data
    assert data.library_name == "flextok_hf" and data.license == "apache-2.0"
    assert data.pipeline_tag == "image-to-image" and data.datasets == ["digits"]
    assert {"flextok", "image-tokenizer", "mnist-like"} <= set(data.tags)
    assert data.model_name == "FlexTok tiny (digits)"
    got = {(r.metric_type, r.metric_config): r.metric_value for r in data.eval_results}
    assert got == expected_eval_results(rate_distortion())
    assert {(r.task_type, r.dataset_type, r.dataset_split) for r in data.eval_results} == {
        ("image-to-image", "mnist", "test")
    }
    text = loaded.text
    assert "| Tokens | PSNR (dB) ↑ | MAE ↓ | SSIM ↑ | FD (classifier) ↓ | Recon. accuracy ↑ |" in text
    assert "| 8 | 14.75 ± 0.40 | 0.05 | 0.8 | 10.00 | 0.8 |" in text
    assert "| 1 | 11.000 ± 0.050 | 0.4 | 0.1 | 80.00 | – |" in text
    assert "](rate_distortion.png)" in text and "](loss_curve.png)" in text
    assert f'FlexTokPipeline.from_pretrained("{repo_id}")' in text
    assert TRAIN_COMMAND in text and "| 200 | 4.00 | 0.01 | 0.005 |" in text


def test_inherited_push_to_hub_keeps_a_card_pushed_first(fake_hub):
    """transformers' and diffusers' `push_to_hub` keep the repo's card (adding tags), so push the flextok card first."""
    repo_id = "fake-user/hub-inherited-model"
    model = tiny_model(seed=1)
    card = render_model_card("tokenizer", model_name="Inherited", description="Pushed with model.push_to_hub.")
    HfApi().create_repo(repo_id)
    card.push_to_hub(repo_id)
    model.push_to_hub(repo_id)
    assert_same_flextok_outputs(model, FlexTokModel.from_pretrained(repo_id).eval())
    data = ModelCard.load(repo_id).data
    assert data.library_name == "flextok_hf" and "image-tokenizer" in data.tags

    pipe = tiny_pipeline(seed=2)
    HfApi().create_repo("fake-user/hub-inherited-pipeline")
    render_model_card("tokenizer", model_name="Pipe", description="").push_to_hub("fake-user/hub-inherited-pipeline")
    pipe.push_to_hub("fake-user/hub-inherited-pipeline")
    assert_same_pipeline_images(pipe, FlexTokPipeline.from_pretrained("fake-user/hub-inherited-pipeline"))
    assert ModelCard.load("fake-user/hub-inherited-pipeline").data.library_name == "flextok_hf"

    prior = tiny_prior()
    prior.push_to_hub("fake-user/hub-inherited-prior")
    assert_same_prior_samples(prior, AutoModelForCausalLM.from_pretrained("fake-user/hub-inherited-prior").eval())


def test_push_pipeline_and_prior_render_cards_from_what_they_save(fake_hub):
    pipe = tiny_pipeline(seed=3)
    push_to_hub(pipe, "fake-user/hub-pipeline")
    files = fake_hub.list_files("fake-user/hub-pipeline")
    assert {"model_index.json", "flextok/model.safetensors", "scheduler/scheduler_config.json", "README.md"} <= set(
        files
    )
    assert_same_pipeline_images(pipe, FlexTokPipeline.from_pretrained("fake-user/hub-pipeline"))
    card = ModelCard.load("fake-user/hub-pipeline")
    assert card.data.library_name == "flextok_hf" and card.data.pipeline_tag == "image-to-image"
    assert card.data.model_name == "hub-pipeline" and "`flextok` (FlexTokModel)" in card.text
    assert "flextok: Token budget:** 1 to 8 tokens" in card.text
    assert 'FlexTokPipeline.from_pretrained("fake-user/hub-pipeline")' in card.text

    prior = tiny_prior(seed=1)
    push_to_hub(prior, "fake-user/hub-prior", private=True)
    assert HfApi().model_info("fake-user/hub-prior").private
    assert_same_prior_samples(prior, AutoModelForCausalLM.from_pretrained("fake-user/hub-prior").eval())
    card = ModelCard.load("fake-user/hub-prior")
    assert card.data.pipeline_tag is None and "image-token-prior" in card.data.tags
    assert "**Codebook / max tokens:** 64,000 ids / 8" in card.text
    assert f"**Parameters:** {sum(p.numel() for p in prior.parameters()) / 1e6:.2f}M" in card.text
    assert 'AutoModelForCausalLM.from_pretrained("fake-user/hub-prior")' in card.text


# ------------------------------------------------------------------------------------------------------ CLI
def _cli(monkeypatch, argv: list[str]) -> int:
    from flextok_hf import cli

    return cli.main(argv)


def test_push_cli_publishes_a_run_folder_with_its_card(fake_hub, tmp_path, monkeypatch, capsys):
    run = tmp_path / "tiny-run"
    model = tiny_model(seed=4)
    model.save_pretrained(run)
    write_run_files(run)
    (run / "training_command.txt").write_text(TRAIN_COMMAND + "\n")
    (run / "TRAINING.md").write_text("Trained on one CPU core for three minutes.\n")
    model.save_pretrained(run / "checkpoint-100")
    (run / "checkpoint-100" / "optimizer.pt").write_bytes(b"not published")
    (run / "training_args.bin").write_bytes(b"not published")
    repo_id = "fake-user/hub-cli-run"

    code = _cli(monkeypatch, ["push", str(run), "--repo-id", repo_id, "--dataset", "digits", "--tag", "tiny"])
    assert code == 0 and f"{repo_id}" in capsys.readouterr().out
    files = set(fake_hub.list_files(repo_id))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= files
    assert {"rate_distortion.json", "rate_distortion.png", "log_history.json", "loss_curve.png"} <= files
    assert not any(f.startswith("checkpoint-") or f.endswith(".bin") for f in files)
    assert not (run / "README.md").exists() and not (run / "preprocessor_config.json").exists()  # folder untouched

    assert_same_flextok_outputs(model, FlexTokModel.from_pretrained(repo_id).eval())
    assert isinstance(AutoImageProcessor.from_pretrained(repo_id), FlexTokImageProcessor)
    card = ModelCard.load(repo_id)
    assert card.data.model_name == "hub-cli-run" and card.data.datasets == ["digits"]
    assert "tiny" in card.data.tags and card.data.library_name == "flextok_hf"
    assert {(r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results} == expected_eval_results(
        rate_distortion()
    )
    assert TRAIN_COMMAND in card.text and "three minutes" in card.text
    assert "**Image size:** 16×16" in card.text and "**Token budget:** 1 to 8 tokens" in card.text

    # A README.md already in the folder is published as it is; --no-card pushes no card at all.
    (run / "README.md").write_text("---\nlicense: mit\n---\n\n# Hand-written card\n")
    assert _cli(monkeypatch, ["push", str(run), "--repo-id", "fake-user/hub-cli-own-card"]) == 0
    assert ModelCard.load("fake-user/hub-cli-own-card").text.strip() == "# Hand-written card"
    (run / "README.md").unlink()
    assert _cli(monkeypatch, ["push", str(run), "--repo-id", "fake-user/hub-cli-no-card", "--no-card"]) == 0
    assert "README.md" not in fake_hub.list_files("fake-user/hub-cli-no-card")


# ------------------------------------------------------------------------------------------------------ cards offline
def test_card_from_folder_reads_evaluation_layout_and_kind(tmp_path):
    """evaluation.py's layout (`psnr`, `psnr_std` in `per_budget`, report in eval/) and the prior kind."""
    prior = tiny_prior()
    prior.save_pretrained(tmp_path / "prior")
    report = {"dataset": "/data/digits", "per_budget": [{"budget": 2, "psnr": 9.5, "psnr_std": 0.25, "ssim": 0.3}]}
    (tmp_path / "prior" / "eval").mkdir()
    (tmp_path / "prior" / "eval" / "rate_distortion.json").write_text(json.dumps(report))
    card = model_card_from_folder(tmp_path / "prior", description="Prior.")
    assert isinstance(card, FlexTokModelCard) and card.assets == {}
    assert card.data.library_name == "flextok_hf" and card.data.model_name == "prior"
    assert [(r.metric_type, r.metric_value, r.dataset_type) for r in card.data.eval_results] == [
        ("psnr", 9.5, "digits"),
        ("ssim", 0.3, "digits"),
    ]
    assert "| 2 | 9.50 ± 0.25 | 0.3 |" in card.text and "generate_image_tokens" in card.text
    card = model_card_from_folder(tmp_path / "prior", kind="class2image", model_name="Renamed", license="mit")
    assert card.data.model_name == "Renamed" and card.data.license == "mit" and card.data.pipeline_tag is None
    assert "FlexTokClassToImagePipeline" in card.text
    for class_name, kind in (
        ("FlexTokText2ImagePipeline", "text2image"),
        ("FlexTokClassToImagePipeline", "class2image"),
    ):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
        assert infer_card_kind(tmp_path / kind) == kind
        assert f'{class_name}.from_pretrained("u/m")' in model_card_from_folder(tmp_path / kind, repo_id="u/m").text


def test_metric_columns_and_training_table():
    rows = [{"budget": 1, "psnr_mean": 10.0, "psnr_std": 1.0, "note": "x", "flag": True, "fd_x": None}]
    rows.append({"budget": 2, "psnr_mean": 12.0, "psnr_std": 1.0, "note": "y", "flag": False, "fd_x": 3.0})
    assert metric_columns(rows) == [("psnr", "psnr_mean", "psnr_std"), ("fd_x", "fd_x", None)]

    summary, table = training_summary_and_table(log_history(), max_rows=6)
    assert summary == "Training run: 200 steps, 4.00 epochs, 1.5 min, mean training loss 0.05."
    steps = [int(line.split("|")[1]) for line in table.splitlines()[2:]]
    assert len(steps) == 6 and steps[0] == 5 and steps[-1] == 200 and 100 in steps  # eval steps are kept
    assert "eval_runtime" not in table and "grad_norm" not in table
    assert training_summary_and_table({"log_history": log_history()}, max_rows=6) == (summary, table)


def test_bad_arguments_raise_errors_naming_them(fake_hub, tmp_path):
    with pytest.raises(ValueError, match="`kind`"):
        render_model_card("vae", model_name="x", description="")
    with pytest.raises(ValueError, match="`rate_distortion_plot`"):
        render_model_card("tokenizer", model_name="x", description="", rate_distortion_plot=tmp_path / "missing.png")
    with pytest.raises(ValueError, match="`metrics` has no per-budget rows"):
        render_model_card("tokenizer", model_name="x", description="", metrics={"psnr": 3.0})
    with pytest.raises(ValueError, match="`model_name`"):
        render_model_card("tokenizer", model_name=" ", description="")
    with pytest.raises(TypeError, match="`tags`"):
        render_model_card("tokenizer", model_name="x", description="", tags=[1])
    with pytest.raises(ValueError, match="Cannot tell what"):
        model_card_from_folder(tmp_path)
    with pytest.raises(TypeError, match="`obj_or_folder`"):
        push_to_hub(object(), "fake-user/never")
    with pytest.raises(ValueError, match="`obj_or_folder`"):
        push_to_hub(tmp_path / "missing", "fake-user/never")
    with pytest.raises(ValueError, match="`repo_id`"):
        push_to_hub(tmp_path, "a/b/c")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="pickled weights"):
        push_to_hub(tmp_path, "fake-user/never")
    with pytest.raises(TypeError, match="`card`"):
        push_to_hub(tmp_path, "fake-user/never", card=True)
    assert not HfApi().repo_exists("fake-user/never")
