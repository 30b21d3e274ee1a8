"""flextok_hf.decoding: one decode path and one noise rule for every multi-budget decode; the pipeline's loop
(PipelineCallback objects, CPU offload hooks)."""

import types

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset, Features
from datasets import Image as ImageFeature
from diffusers.callbacks import PipelineCallback

from flextok_hf import FlexTokPipeline
from flextok_hf.decoding import decode_at_budgets, decoder_noise, default_budgets, sample_seed
from flextok_hf.evaluation import evaluate_rate_distortion
from flextok_hf.training.callbacks import SampleGridCallback, to_uint8
from flextok_test_utils import tiny_model

STEPS, GUIDANCE, SEED, K = 2, 2.0, 5, 2


def _image(seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def pipe():
    pipe = FlexTokPipeline.from_flextok(tiny_model(), num_inference_steps=STEPS, guidance_scale=GUIDANCE)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _coarse_to_fine_raw(pipe, image) -> torch.Tensor:
    """`[3, S, S]`: the image at budget K under seed SEED through `coarse_to_fine`."""
    out = pipe.coarse_to_fine(
        image, budgets=[1, K], num_inference_steps=STEPS, guidance_scale=GUIDANCE, seed=SEED, output_type="raw"
    )
    return out.images[0, 1]


def test_noise_rule_is_per_image_and_independent_of_the_batch(pipe):
    config = pipe.flextok.config
    noise = decoder_noise(config, SEED, range(3))
    assert noise.shape == (3, config.latent_channels, config.latent_size, config.latent_size)
    expected = torch.randn(
        (1, *noise.shape[1:]), generator=torch.Generator().manual_seed(sample_seed(SEED, 2)), dtype=torch.float32
    )
    assert torch.equal(noise[2:], expected)
    assert torch.equal(decoder_noise(config, SEED, [2]), noise[2:])
    assert not torch.equal(decoder_noise(config, SEED + 1, [2]), noise[2:])
    assert default_budgets(8) == [1, 2, 4, 8] and default_budgets(6) == [1, 2, 4, 6]
    assert pipe.default_budgets() == [1, 2, 4, 8]


def test_decode_at_budgets_layouts_and_errors(pipe):
    token_ids = pipe.tokenize([_image(0), _image(1), _image(2)])
    full = decode_at_budgets(pipe, token_ids, [1, 8], seed=SEED, output_type="raw")
    assert full.shape == (3, 2, 3, 16, 16)
    # Image 2 alone with its dataset index reproduces its row; chunks of one image equal each image decoded alone.
    alone = decode_at_budgets(pipe, token_ids[2:], [8], seed=SEED, image_indices=[2], output_type="raw")
    chunked = decode_at_budgets(pipe, token_ids, [1, 8], seed=SEED, batch_size=1, output_type="raw")
    assert torch.equal(chunked[2, 1], alone[0, 0])
    assert torch.allclose(full, chunked, atol=1e-5)
    pil = decode_at_budgets(pipe, token_ids, [1, 8], seed=SEED, output_type="pil", batch_size=2)
    assert len(pil) == 3 and all(len(row) == 2 for row in pil)
    assert decode_at_budgets(pipe, token_ids, [4], seed=SEED, output_type="np").shape == (3, 1, 16, 16, 3)
    with pytest.raises(ValueError, match=r"budgets\[1\]` must be in \[1, 8\]"):
        decode_at_budgets(pipe, token_ids, [1, 9], seed=SEED)
    with pytest.raises(ValueError, match="exactly one of `seed`"):
        decode_at_budgets(pipe, token_ids, [1])
    with pytest.raises(ValueError, match="`batch_size`"):
        decode_at_budgets(pipe, token_ids, [1], seed=SEED, batch_size=0)
    with pytest.raises(ValueError, match="`seed` must be a non-negative int"):
        decode_at_budgets(pipe, token_ids, [1], seed=-1)
    with pytest.raises(ValueError, match="at most one of `seed` or `generator`"):
        pipe.coarse_to_fine(_image(0), seed=0, generator=torch.Generator())


def test_streamed_coarse_to_fine_equals_the_batch_exactly(pipe):
    images = [_image(0), _image(1)]
    batch = pipe.coarse_to_fine(images, seed=SEED, output_type="raw")
    streamed = list(pipe.coarse_to_fine(images, seed=SEED, output_type="raw", stream=True))
    assert [step.num_tokens for step in streamed] == batch.budgets
    for j, step in enumerate(streamed):
        assert torch.equal(step.images, batch.images[:, j])


class _RecordingFeatures(torch.nn.Module):
    """A real (if trivial) feature network for the Fréchet distance: mean colour per channel, plus a record of
    every batch it saw."""

    feature_network_name = "recorded_mean_colour"

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, images):
        self.seen.append(images.detach().clone())
        return images.mean(dim=(2, 3))


def test_coarse_to_fine_evaluate_training_grid_and_demo_agree_bit_for_bit(pipe, tmp_path):
    image = _image(0)
    expected = _coarse_to_fine_raw(pipe, image)  # [3, S, S], unclamped

    # evaluate: image 0 of a dataset, decoded one image per batch; the feature network sees the clamped outputs.
    dataset = Dataset.from_dict({"image": [image, _image(1)]}, features=Features({"image": ImageFeature()}))
    network = _RecordingFeatures()
    evaluate_rate_distortion(
        pipe.flextok,
        dataset,
        budgets=[K],
        seeds=[SEED],
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        adaptive_guidance=True,
        batch_size=1,
        feature_network=network,
        progress_bar=False,
    )
    assert any(seen.shape == (1, 3, 16, 16) and torch.equal(seen[0], expected.clamp(-1, 1)) for seen in network.seen)

    # The training sample-grid callback (row 0 = image 0, column 2 = budget K).
    pixel_values = pipe.preprocess(image)
    callback = SampleGridCallback(
        pixel_values, budgets=[1, K], num_inference_steps=STEPS, guidance_scale=GUIDANCE, seed=SEED
    )
    args = types.SimpleNamespace(output_dir=str(tmp_path))
    state = types.SimpleNamespace(is_world_process_zero=True, global_step=1, max_steps=1)
    callback.on_train_begin(args, state, None, model=pipe.flextok)
    path = callback.save_grid(args, state, pipe.flextok)
    grid = np.asarray(PIL.Image.open(path).convert("RGB"))
    assert np.array_equal(grid[:16, 32:48], to_uint8(expected[None])[0])

    # The demo's Tokenize tab: the gallery cell and the reconstruction at k.
    pytest.importorskip("gradio")
    from flextok_hf.demo import TokenizeHandlers, _to_pil

    handlers = TokenizeHandlers(pipe)
    gallery, recon, _, info, k = handlers.tokenize(image, K, STEPS, GUIDANCE, SEED)
    demo_np = pipe.coarse_to_fine(
        image, budgets=[K], num_inference_steps=STEPS, guidance_scale=GUIDANCE, seed=SEED, output_type="np"
    ).images[0, 0]
    c2f_pt = pipe.image_processor.postprocess(expected[None], output_type="np")[0]
    assert np.array_equal(demo_np, c2f_pt)
    assert k == K and info["num_tokens"] == K
    assert np.array_equal(np.asarray(recon), np.asarray(_to_pil(c2f_pt)))
    assert np.array_equal(np.asarray(gallery[1][0]), np.asarray(recon))


class _ZeroLatentsAt(PipelineCallback):
    """Zeroes the latents at `cutoff_step_index` and records every step index it is called at."""

    tensor_inputs = ["latents"]

    def __init__(self, cutoff_step_index: int):
        super().__init__(cutoff_step_ratio=None, cutoff_step_index=cutoff_step_index)
        self.steps = []

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        self.steps.append(step_index)
        if step_index == self.config.cutoff_step_index:
            callback_kwargs["latents"] = torch.zeros_like(callback_kwargs["latents"])
        return callback_kwargs


def test_pipeline_callback_object_runs_every_step_and_edits_latents(pipe):
    callback = _ZeroLatentsAt(cutoff_step_index=2)
    out = pipe(_image(0), num_inference_steps=3, callback_on_step_end=callback, output_type="latent")
    assert callback.steps == [0, 1, 2]
    assert torch.count_nonzero(out.images) == 0
    plain = pipe(_image(0), num_inference_steps=3, output_type="latent", generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(plain.images) > 0


def test_model_detokenize_is_the_pipeline_loop(pipe):
    token_ids = pipe.tokenize([_image(0), _image(1)], num_tokens=[3, 8])
    noise = decoder_noise(pipe.flextok.config, SEED, range(2))
    through_model = pipe.flextok.detokenize(
        token_ids, latents=noise, num_inference_steps=STEPS, guidance_scale=GUIDANCE, progress_bar=False
    )
    through_pipe = pipe.detokenize(token_ids, latents=noise, output_type="raw")
    assert torch.equal(through_model, through_pipe)


def test_model_cpu_offload_hooks_flextok_and_runs_its_pre_forward(pipe):
    pytest.importorskip("accelerate")
    offloaded = FlexTokPipeline.from_flextok(tiny_model(), num_inference_steps=STEPS, guidance_scale=GUIDANCE)
    offloaded.set_progress_bar_config(disable=True)
    offloaded.enable_model_cpu_offload(device="cpu")
    hook = getattr(offloaded.flextok, "_hf_hook", None)
    assert hook is not None and hasattr(hook, "pre_forward")
    calls = []
    original = hook.pre_forward

    def counting_pre_forward(module, *args, **kwargs):
        calls.append(module)
        return original(module, *args, **kwargs)

    hook.pre_forward = counting_pre_forward  # the real hook, counted: the pipeline never calls `flextok.forward`
    out = offloaded(_image(0), output_type="raw", generator=torch.Generator().manual_seed(0))
    assert calls and all(module is offloaded.flextok for module in calls)
    reference = pipe(_image(0), output_type="raw", generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.images, reference.images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_model_cpu_offload_on_gpu_moves_flextok_while_decoding():
    offloaded = FlexTokPipeline.from_flextok(tiny_model(), num_inference_steps=STEPS, guidance_scale=GUIDANCE)
    offloaded.enable_model_cpu_offload()
    out = offloaded(_image(0), output_type="raw", generator=torch.Generator().manual_seed(0))
    assert out.images.device.type == "cuda" and torch.isfinite(out.images).all()
