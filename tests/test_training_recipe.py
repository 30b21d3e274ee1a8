"""The CPU training recipe levers (warm start, late nested dropout, uniform sigma, register norm, feature matching) and
the token-reliance diagnostic."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from flextok_hf import FlexTokConfig
from flextok_hf.diagnostics import flatten_token_reliance, token_reliance
from flextok_hf.training import train_tokenizer
from flextok_hf.training.recipe import FlexTokRecipe
from flextok_hf.training.tokenizer import FlexTokTrainer, TokenizerTrainingArguments
from flextok_test_utils import TINY_TOKENIZER_RUN, random_images, tiny_model

BASE = {**TINY_TOKENIZER_RUN, "seed": 5}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------------------------------------------------
# Objective options of the model
# ---------------------------------------------------------------------------------------------------------------------
def test_uniform_sigma_fraction_replays_documented_draws():
    model = tiny_model(uniform_sigma_fraction=0.5).train()
    sigmas = model.sample_sigmas(4096, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    normal = torch.randn(4096, generator=generator)
    uniform = torch.rand(4096, generator=generator)
    pick = torch.rand(4096, generator=generator) < 0.5
    expected = torch.where(pick, uniform, torch.sigmoid(normal))
    assert torch.equal(sigmas, expected)
    assert 0.4 < pick.float().mean() < 0.6
    # The default (0) keeps the paper's logit-normal draw: same stream, nothing else drawn.
    paper = tiny_model().sample_sigmas(8, torch.Generator().manual_seed(1))
    assert torch.equal(paper, torch.sigmoid(torch.randn(8, generator=torch.Generator().manual_seed(1))))
    with pytest.raises(ValueError, match="uniform_sigma_fraction"):
        FlexTokConfig.tiny(uniform_sigma_fraction=1.5)


def test_normalize_registers_layer_norms_the_register_tokens():
    model = tiny_model(normalize_registers=True).eval()
    decoder = model.decoder
    codes = torch.rand(2, model.config.num_registers, len(model.config.fsq_levels)) * 2 - 1
    keep_k = torch.tensor([8, 8])
    registers = decoder.embed_registers(codes, keep_k, None)
    projected = decoder.from_codes(codes)
    expected = F.layer_norm(projected, projected.shape[-1:], eps=model.config.layer_norm_eps) + decoder.register_posemb
    torch.testing.assert_close(registers, expected)
    plain = tiny_model().eval()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain.decoder.embed_registers(codes, keep_k, None), registers)


def test_forward_replays_the_same_draws_through_the_sampling_methods():
    """forward() without draws == forward() given the draws of sample_sigmas / sample_keep_k / the null mask."""
    model = tiny_model(uniform_sigma_fraction=0.3).train()
    images = random_images(6, 16)
    out = model(pixel_values=images, generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    noise = torch.randn(out.noise.shape, generator=generator)
    sigmas = model.sample_sigmas(6, generator)
    keep_k = model.sample_keep_k(6, generator)
    null = model.sample_null_condition_mask(6, generator)
    replay = model(pixel_values=images, noise=noise, sigmas=sigmas, keep_k=keep_k, null_condition_mask=null)
    assert torch.equal(out.sigmas, sigmas) and torch.equal(out.keep_k, keep_k)
    assert torch.equal(out.null_condition_mask, null)
    torch.testing.assert_close(out.loss, replay.loss)


# ---------------------------------------------------------------------------------------------------------------------
# The step-dependent recipe
# ---------------------------------------------------------------------------------------------------------------------
def test_recipe_phases():
    model = tiny_model(null_condition_dropout_prob=0.5, nested_dropout_mode="uniform").train()
    K = model.config.num_registers
    recipe = FlexTokRecipe(
        deterministic_steps=10, deterministic_anneal_steps=10, deterministic_fraction=0.2, nested_dropout_start_step=15
    )
    assert recipe.is_active and not FlexTokRecipe().is_active
    assert [recipe.deterministic_share(s) for s in (0, 9, 10, 15, 20, 100)] == pytest.approx([1, 1, 1, 0.6, 0.2, 0.2])

    warm = recipe.draws(model, step=3, batch_size=64, generator=torch.Generator().manual_seed(0))
    assert torch.all(warm["sigmas"] == 1.0) and torch.all(warm["keep_k"] == K)
    assert not warm["null_condition_mask"].any()

    # Annealing (share 0.6), nested dropout still off: k = K everywhere, sigma = 1 for the deterministic ones, and
    # the model's own draws for the rest, replayable from the same generator in the documented order.
    mid = recipe.draws(model, step=14, batch_size=512, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    sigmas, _ = model.sample_sigmas(512, generator), model.sample_keep_k(512, generator)
    null = model.sample_null_condition_mask(512, generator)
    deterministic = torch.rand(512, generator=generator) < 0.68  # share at step 14: 1 - 0.4 * 0.8
    assert torch.equal(mid["sigmas"], torch.where(deterministic, torch.ones(512), sigmas))
    assert torch.equal(mid["null_condition_mask"], null & ~deterministic)
    assert torch.all(mid["keep_k"] == K)
    assert 0.6 < deterministic.float().mean() < 0.76

    late = recipe.draws(model, step=50, batch_size=512, generator=torch.Generator().manual_seed(2))
    det = late["sigmas"] == 1.0
    assert 0.12 < det.float().mean() < 0.28
    assert torch.all(late["keep_k"][det] == K) and late["keep_k"][~det].float().mean() < K - 1  # nested dropout on
    assert late["null_condition_mask"][~det].any() and not late["null_condition_mask"][det].any()

    # With deterministic_nested_dropout the deterministic samples keep their k once nested dropout is on (not before).
    nd = FlexTokRecipe(**{**vars(recipe), "deterministic_nested_dropout": True})
    for step, expect_all_k in ((12, True), (50, False)):
        draws = nd.draws(model, step=step, batch_size=512, generator=torch.Generator().manual_seed(2))
        det = draws["sigmas"] == 1.0
        assert bool(torch.all(draws["keep_k"][det] == K)) == expect_all_k

    with pytest.raises(ValueError, match="deterministic_fraction"):
        FlexTokRecipe(deterministic_fraction=1.5)
    with pytest.raises(ValueError, match="deterministic_steps"):
        FlexTokRecipe(deterministic_steps=-1)


@pytest.mark.slow
def test_trainer_applies_the_recipe_and_the_feature_matching_term(tmp_path):
    """The trainer's loss at a warm-start step equals the model's loss with sigma = 1, k = K, no null condition, plus
    `weight * MSE(features(x0_hat), features(x0))`."""
    torch.manual_seed(0)
    model = tiny_model(x0_loss_weight=1.0).train()
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 5))
    args = TokenizerTrainingArguments(
        output_dir=str(tmp_path), report_to="none", eval_strategy="no", deterministic_steps=5
    )
    trainer = FlexTokTrainer(
        model=model, args=args, recipe=args.recipe(), feature_network=network, feature_matching_weight=0.5
    )
    images = random_images(4, 16)
    torch.manual_seed(7)
    loss, outputs = trainer.compute_loss(model, {"pixel_values": images}, return_outputs=True)
    assert torch.all(outputs.sigmas == 1) and torch.all(outputs.keep_k == 8) and not outputs.null_condition_mask.any()
    replay = model(
        pixel_values=images,
        noise=outputs.noise,
        sigmas=outputs.sigmas,
        keep_k=outputs.keep_k,
        null_condition_mask=outputs.null_condition_mask,
    )
    x0_hat = outputs.noise - outputs.velocity  # sigma = 1: x_t - v
    feature = F.mse_loss(network(x0_hat), network(images))
    torch.testing.assert_close(loss, replay.loss + 0.5 * feature)
    assert trainer._loss_terms["feature_loss"][0].item() == pytest.approx(feature.item(), rel=1e-5)
    loss.backward()  # the term reaches the decoder
    assert model.decoder.head.proj.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_resume_of_a_multi_phase_schedule_reproduces_the_uninterrupted_run(tmp_path):
    run = {
        **BASE,
        "max_steps": 8,
        "save_steps": 4,
        "x0_loss_weight": 1.0,
        "uniform_sigma_fraction": 0.2,
        "deterministic_steps": 2,
        "deterministic_anneal_steps": 4,
        "deterministic_fraction": 0.25,
        "nested_dropout_start_step": 5,
    }
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    full = train_tokenizer({**run, "output_dir": str(full_dir)})
    steps = [(entry["step"], entry["loss"]) for entry in full.state.log_history if "loss" in entry]
    assert [step for step, _ in steps] == list(range(1, 9))
    assert steps[0][1] != steps[-1][1]
    shutil.copytree(full_dir / "checkpoint-4", resumed_dir / "checkpoint-4")
    resumed = train_tokenizer(
        {**run, "output_dir": str(resumed_dir), "resume_from_checkpoint": str(resumed_dir / "checkpoint-4")}
    )
    assert [(e["step"], e["loss"]) for e in resumed.state.log_history if "loss" in e] == steps
    expected, got = load_file(full_dir / "model.safetensors"), load_file(resumed_dir / "model.safetensors")
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    # A run without the recipe trains differently from the first step on.
    plain = train_tokenizer({**BASE, "max_steps": 2, "save_strategy": "no", "output_dir": str(tmp_path / "plain")})
    assert [e["loss"] for e in plain.state.log_history if "loss" in e][0] != steps[0][1]
    config = json.loads((full_dir / "config.json").read_text())
    assert config["uniform_sigma_fraction"] == 0.2


# ---------------------------------------------------------------------------------------------------------------------
# The diagnostic
# ---------------------------------------------------------------------------------------------------------------------
def test_diagnostic_reports_no_gap_for_a_decoder_that_ignores_its_registers():
    model = tiny_model(seed=1)
    with torch.no_grad():
        for parameter in model.decoder.parameters():  # a "trained" decoder: random, non-zero adaLN and head
            parameter.add_(torch.randn_like(parameter) * 0.05)
        for parameter in model.encoder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    images = random_images(8, 16, seed=2)
    assert len(torch.stack(model.tokenize(images)).unique(dim=0)) > 1  # the codes do differ between images
    reading = token_reliance(model, pixel_values=images, sigmas=(0.5, 1.0))
    assert abs(reading["gap"]) > 1e-4
    with torch.no_grad():
        model.decoder.from_codes.weight.zero_()  # the decoder can no longer see what the codes say
    model.train()
    ignoring = token_reliance(model, pixel_values=images, sigmas=(0.5, 1.0))
    assert model.training  # restored
    assert ignoring["gap"] == 0.0
    assert set(ignoring["per_sigma"]) == {0.5, 1.0}
    for losses in ignoring["per_sigma"].values():
        assert losses["true"] == losses["shuffled"] and losses["null"] > 0
    logs = flatten_token_reliance(ignoring)
    assert logs["eval_reliance_gap"] == 0.0 and "eval_rf_shuffled@0.5" in logs
    with pytest.raises(ValueError, match="sigmas"):
        token_reliance(model, pixel_values=images, sigmas=(0.0,))
    with pytest.raises(ValueError, match="at least 2"):
        token_reliance(model, pixel_values=images[:1])
    with pytest.raises(ValueError, match="num_tokens"):
        token_reliance(model, pixel_values=images, num_tokens=9)


@pytest.mark.slow
def test_training_logs_the_diagnostic(tmp_path):
    run = {
        **BASE,
        "max_steps": 2,
        "save_strategy": "no",
        "eval_split": "test",
        "max_eval_samples": 8,
        "eval_steps": 2,
        "eval_psnr_images": 4,
        "eval_psnr_num_inference_steps": 1,
        "output_dir": str(tmp_path),
    }
    trainer = train_tokenizer(run)
    evals = [entry for entry in trainer.state.log_history if "eval_reliance_gap" in entry]
    assert evals and all("eval_rf_true@1" in entry and "eval_rf_null@0.5" in entry for entry in evals)
    off = train_tokenizer({**run, "eval_diagnostic": False, "output_dir": str(tmp_path / "off")})
    assert not any("eval_reliance_gap" in entry for entry in off.state.log_history)
