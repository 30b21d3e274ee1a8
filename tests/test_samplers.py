"""Decoder sampler options: FlexTok's Euler grid (with `shift`) and diffusers' flow-matching Heun, swapped on
`pipe.scheduler`: selectable, saved with the pipeline, reproducible, and the loop's decoder calls."""

import json

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from flextok_hf import FlexTokClassToImagePipeline, FlexTokFlowHeunScheduler, FlexTokFlowScheduler, FlexTokPipeline
from flextok_hf.scheduling_flextok import describe_scheduler, load_flow_scheduler
from flextok_test_utils import FIXTURE_CKPT, FIXTURE_VAE_CONFIG, tiny_model, tiny_prior

STEPS = 3
# (class, shift): the official grid, shifted grids (towards the data end / the noise end), diffusers' Euler and Heun
SAMPLERS = [
    (FlexTokFlowScheduler, 1.0),
    (FlexTokFlowScheduler, 0.5),
    (FlexTokFlowScheduler, 2.0),
    (FlexTokFlowScheduler, 0.33),  # rounds sigma = 1 to 1 + 1e-7 unless clamped
    (FlexTokFlowHeunScheduler, 1.0),
    (FlexTokFlowHeunScheduler, 0.5),
    (FlexTokFlowHeunScheduler, 0.33),
    (FlowMatchEulerDiscreteScheduler, 1.0),
    (FlowMatchHeunDiscreteScheduler, 1.0),
    (FlowMatchHeunDiscreteScheduler, 0.33),
]
IDS = [f"{cls.__name__}-shift{shift:g}" for cls, shift in SAMPLERS]


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture()
def pipe(model):
    pipe = FlexTokPipeline.from_flextok(model, num_inference_steps=STEPS, guidance_scale=2.0, adaptive_guidance=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def token_ids(model):
    ids = FlexTokPipeline.from_flextok(model).tokenize(torch.rand(2, 3, 16, 16), num_tokens=[2, 8])
    return ids


def select(pipe, cls, shift):
    pipe.scheduler = cls.from_config(pipe.scheduler.config, shift=shift)
    return pipe


def decode(pipe, token_ids, seed=0, **kwargs):
    return pipe.detokenize(token_ids, generator=seeded(seed), output_type="pt", **kwargs)


@pytest.mark.parametrize(("cls", "shift"), SAMPLERS, ids=IDS)
def test_sampler_is_selectable_saved_and_reproducible(pipe, token_ids, tmp_path, cls, shift):
    select(pipe, cls, shift)
    assert isinstance(pipe.scheduler, cls) and pipe.scheduler.config.shift == shift
    images = decode(pipe, token_ids)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    assert torch.equal(images, decode(pipe, token_ids))  # same generator seed -> same images
    assert not torch.allclose(images, decode(pipe, token_ids, seed=1))  # another seed -> other images

    pipe.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == cls.__name__ and saved["shift"] == shift
    loaded = FlexTokPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is cls and loaded.scheduler.config.shift == shift
    assert loaded.config.num_inference_steps == STEPS
    assert torch.equal(images, decode(loaded, token_ids))
    assert type(load_flow_scheduler(tmp_path / "scheduler")) is cls


def test_samplers_differ_from_the_official_grid(pipe, token_ids):
    official = decode(pipe, token_ids)
    for cls, shift in SAMPLERS[1:]:
        if (cls, shift) == (FlowMatchEulerDiscreteScheduler, 1.0):
            continue  # diffusers' own Euler grid ends at sigma_min = 1/1000, not 1/N: also different, checked below
        assert not torch.allclose(official, decode(select(pipe, cls, shift), token_ids)), (cls, shift)
    assert not torch.allclose(official, decode(select(pipe, FlowMatchEulerDiscreteScheduler, 1.0), token_ids))


def test_shift_warps_the_official_grid():
    sigmas = np.linspace(1.0, 1.0 / 4, 4)
    for shift in (0.5, 1.0, 3.0):
        scheduler = FlexTokFlowScheduler(shift=shift)
        scheduler.set_timesteps(4)
        expected = shift * sigmas / (1 + (shift - 1) * sigmas)
        np.testing.assert_allclose(scheduler.sigmas[:-1].numpy(), expected, rtol=1e-6)
        assert scheduler.sigmas[-1] == 0
    low, high = FlexTokFlowScheduler(shift=0.5), FlexTokFlowScheduler(shift=2.0)
    low.set_timesteps(4), high.set_timesteps(4)
    assert (low.sigmas[1:-1] < torch.as_tensor(sigmas[1:], dtype=torch.float32)).all()  # nearer the data end
    assert (high.sigmas[1:-1] > torch.as_tensor(sigmas[1:], dtype=torch.float32)).all()
    assert describe_scheduler(low) == "FlexTokFlowScheduler (shift=0.5)"
    assert describe_scheduler(FlexTokFlowScheduler()) == "FlexTokFlowScheduler"


def _count_decoder_calls(pipe, token_ids, **kwargs):
    """Decode with a forward hook on the real decoder: the noise level `t` `[B']` of each call."""
    calls = []
    handle = pipe.flextok.decoder.register_forward_hook(lambda module, args, output: calls.append(args[1].clone()))
    try:
        decode(pipe, token_ids, **kwargs)
    finally:
        handle.remove()
    return calls


@pytest.mark.parametrize("cls", [FlexTokFlowHeunScheduler, FlowMatchHeunDiscreteScheduler])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_heun_calls_the_decoder_2n_minus_1_times_at_its_sigmas(pipe, token_ids, steps, cls):
    select(pipe, cls, 0.5)
    steps_seen, timesteps_seen = [], []

    def callback(pipeline, step_index, timestep, callback_kwargs):
        steps_seen.append(step_index)
        timesteps_seen.append(float(timestep))
        return {}

    calls = _count_decoder_calls(pipe, token_ids, num_inference_steps=steps, callback_on_step_end=callback)
    assert len(calls) == 2 * steps - 1  # predictor + corrector per step, one evaluation for the last (to sigma 0)
    assert all(len(t) == 2 * len(token_ids) for t in calls)  # each CFG pair is one batched call
    # Evaluated where the scheduler says: its interleaved sigmas (the predictor's, then the corrector's noise level)
    np.testing.assert_allclose([float(t[0]) for t in calls], pipe.scheduler.sigmas[:-1].numpy(), rtol=1e-6)
    # The callback sees whole solver steps, from the timestep each starts at
    assert steps_seen == list(range(steps))
    grid = pipe.scheduler.timesteps
    assert timesteps_seen == [float(grid[min(2 * i, len(grid) - 1)]) for i in range(steps)]


def test_euler_calls_the_decoder_once_per_step(pipe, token_ids):
    for shift in (1.0, 0.5):
        calls = _count_decoder_calls(select(pipe, FlexTokFlowScheduler, shift), token_ids, num_inference_steps=5)
        assert len(calls) == 5
        np.testing.assert_allclose([float(t[0]) for t in calls], pipe.scheduler.sigmas[:-1].numpy(), rtol=1e-6)


def test_heun_callback_may_replace_latents_between_steps(pipe, token_ids):
    """The callback runs between whole Heun steps, where latents are on the trajectory: handing them back (or
    replacing them) does not break the scheduler's predictor/corrector state."""
    select(pipe, FlexTokFlowHeunScheduler, 1.0)
    replaced = decode(
        pipe, token_ids, num_inference_steps=3, callback_on_step_end=lambda p, i, t, kw: {"latents": kw["latents"]}
    )
    assert torch.equal(replaced, decode(pipe, token_ids, num_inference_steps=3))


def test_flextok_heun_grid(pipe, token_ids):
    """FlexTok's grid 1, (N-1)/N, ..., 1/N (shifted like Euler's), each sigma after the first twice, then 0; one step
    is one Euler step, so it matches the Euler sampler."""
    for shift in (1.0, 0.5):
        euler, heun = FlexTokFlowScheduler(shift=shift), FlexTokFlowHeunScheduler(shift=shift)
        euler.set_timesteps(4), heun.set_timesteps(4)
        grid = euler.sigmas
        torch.testing.assert_close(heun.sigmas, torch.cat([grid[:1], grid[1:-1].repeat_interleave(2), grid[-1:]]))
        torch.testing.assert_close(heun.timesteps, heun.sigmas[:-1] * 1000)
    one_euler = decode(select(pipe, FlexTokFlowScheduler, 1.0), token_ids, num_inference_steps=1)
    one_heun = decode(select(pipe, FlexTokFlowHeunScheduler, 1.0), token_ids, num_inference_steps=1)
    torch.testing.assert_close(one_euler, one_heun)
    with pytest.raises(ValueError, match="num_inference_steps"):
        FlexTokFlowHeunScheduler().set_timesteps(0)


def test_euler_20_stays_selectable_from_a_heun_config(pipe, token_ids):
    select(pipe, FlexTokFlowHeunScheduler, 0.5)
    pipe.scheduler = FlexTokFlowScheduler.from_config(pipe.scheduler.config, shift=1.0)
    pipe.scheduler.set_timesteps(20)
    expected = torch.cat([torch.linspace(1.0, 1.0 / 20, 20), torch.zeros(1)])
    torch.testing.assert_close(pipe.scheduler.sigmas, expected)


def test_generation_pipeline_keeps_its_sampler(model, tmp_path):
    pipe = FlexTokClassToImagePipeline.from_components(tiny_prior(model), model, num_inference_steps=STEPS)
    pipe.set_progress_bar_config(disable=True)
    select(pipe, FlexTokFlowHeunScheduler, 0.5)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["flextok_hf.scheduling_flextok_heun", "FlexTokFlowHeunScheduler"]
    loaded = FlexTokClassToImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is FlexTokFlowHeunScheduler and loaded.scheduler.config.shift == 0.5
    a = pipe(["cat"], generator=seeded(3), output_type="np").images
    assert np.array_equal(a, loaded(["cat"], generator=seeded(3), output_type="np").images)
    # The rendered model card names the stored sampler and its cost
    from flextok_hf.model_card import model_card_from_folder

    card = model_card_from_folder(tmp_path, kind="class2image").text
    assert "FlexTokFlowHeunScheduler (shift 0.5), 3 steps (5 decoder evaluations)" in card
    # The tokenizer view of the same folder decodes with the same sampler
    tokenizer = FlexTokPipeline.from_pretrained(tmp_path)
    assert type(tokenizer.scheduler) is FlexTokFlowHeunScheduler and tokenizer.scheduler.config.shift == 0.5


def test_converted_official_models_keep_the_official_sampler(tmp_path):
    from flextok_hf.cli import main

    pipes = [FlexTokPipeline.from_pretrained(FIXTURE_CKPT, vae_config=FIXTURE_VAE_CONFIG)]
    assert (
        main(["convert-official", FIXTURE_CKPT, str(tmp_path / "converted"), "--vae-config", FIXTURE_VAE_CONFIG]) == 0
    )
    pipes.append(FlexTokPipeline.from_pretrained(tmp_path / "converted"))
    for pipe in pipes:
        assert type(pipe.scheduler) is FlexTokFlowScheduler and pipe.scheduler.config.shift == 1.0
        assert pipe.config.num_inference_steps == 20
        pipe.scheduler.set_timesteps(pipe.config.num_inference_steps)
        torch.testing.assert_close(pipe.scheduler.sigmas, torch.cat([torch.linspace(1.0, 0.05, 20), torch.zeros(1)]))
    assert FlexTokFlowScheduler().config.shift == 1.0  # the class default is the official grid


def test_unknown_saved_scheduler_is_refused_by_name(tmp_path):
    (tmp_path / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler"}))
    with pytest.raises(ValueError, match="DDIMScheduler.*FlexTokFlowHeunScheduler"):
        load_flow_scheduler(tmp_path)


# The shipped default model stores the sampler chosen by examples/benchmarks/sampler_study.py
SHIPPED_SAMPLER = (FlexTokFlowScheduler, 3.0, 8)  # class, shift, num_inference_steps


def test_shipped_default_loads_with_its_sampler():
    from flextok_hf import FlexTokModel
    from flextok_hf.adaptive_budget import saved_decoder_defaults
    from flextok_hf.commands.evaluate import load_model_and_processor
    from flextok_hf.pretrained import load_default_text2image_pipeline, pretrained_path

    cls, shift, steps = SHIPPED_SAMPLER
    tokenizer = FlexTokPipeline.from_pretrained(pretrained_path("tokenizer"))
    text2image = load_default_text2image_pipeline()
    for pipe in (tokenizer, text2image):
        assert type(pipe.scheduler) is cls and pipe.scheduler.config.shift == shift
        assert pipe.config.num_inference_steps == steps
    defaults = saved_decoder_defaults(FlexTokModel.from_pretrained(f"{pretrained_path('text2image')}/flextok"))
    assert type(defaults["scheduler"]) is cls and defaults["scheduler"].config.shift == shift
    assert defaults["num_inference_steps"] == steps
    _, _, defaults = load_model_and_processor(pretrained_path("text2image"), device="cpu")
    assert type(defaults["scheduler"]) is cls and defaults["scheduler"].config.shift == shift
    # Euler-20, the official sampler, stays one line away
    tokenizer.scheduler = FlexTokFlowScheduler.from_config(tokenizer.scheduler.config, shift=1.0)
    tokenizer.scheduler.set_timesteps(20)
    torch.testing.assert_close(tokenizer.scheduler.sigmas, torch.cat([torch.linspace(1.0, 0.05, 20), torch.zeros(1)]))
