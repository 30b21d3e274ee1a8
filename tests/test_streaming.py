"""Streamed outputs: `coarse_to_fine(stream=True)` and previews while a prior generates (`stream=True`)."""

import threading

import PIL.Image
import pytest
import torch

from flextok_hf import (
    FlexTokClassToImagePipeline,
    FlexTokFlowScheduler,
    FlexTokPipeline,
    FlexTokStreamOutput,
    FlexTokText2ImagePipeline,
)
from flextok_hf.data import sample_images
from flextok_hf.streaming import preview_budgets, stream_prior
from flextok_test_utils import tiny_model, tiny_prior

STEPS = 3
K = 8


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stream_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "flextok-prior-stream"]


@pytest.fixture(scope="module")
def flextok():
    return tiny_model(fsq_levels=[8, 5, 5, 5])


@pytest.fixture(scope="module")
def pipe(flextok):
    pipe = FlexTokPipeline.from_flextok(flextok, num_inference_steps=STEPS, guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def class_pipe(flextok):
    pipe = FlexTokClassToImagePipeline.from_components(
        tiny_prior(flextok, "class"), flextok, num_inference_steps=STEPS
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def text_pipe(flextok):
    """A text prior driven with `prompt_embeds` (no text encoder needed)."""
    prior = tiny_prior(flextok, "text", seed=1)
    pipe = FlexTokText2ImagePipeline(None, None, prior, flextok, FlexTokFlowScheduler(), num_inference_steps=STEPS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------------------ coarse to fine
def test_streamed_coarse_to_fine_equals_the_batched_one(pipe, monkeypatch):
    images = [image for _, image in sample_images(("mnist", "animal_mnist"))]
    reference = pipe.coarse_to_fine(images, budgets=[1, 3, 8], generator=seeded(0), output_type="pt")

    decoded = []
    detokenize = pipe.detokenize

    def counting_detokenize(token_ids, **kwargs):  # the real decoder; records when each budget is decoded
        decoded.append(len(token_ids[0]))
        return detokenize(token_ids, **kwargs)

    monkeypatch.setattr(pipe, "detokenize", counting_detokenize)
    stream = pipe.coarse_to_fine(images, budgets=[1, 3, 8], generator=seeded(0), output_type="pt", stream=True)
    assert decoded == []  # nothing decoded before iterating
    steps = []
    for step in stream:
        assert isinstance(step, FlexTokStreamOutput)
        assert decoded[-1] == step.num_tokens and len(decoded) == len(steps) + 1  # yielded as soon as decoded
        steps.append(step)
    assert [s.num_tokens for s in steps] == [1, 3, 8] and [s.is_final for s in steps] == [False, False, True]
    for j, step in enumerate(steps):
        assert step.images.shape == (4, 3, 16, 16)
        assert torch.allclose(step.images, reference.images[:, j], atol=1e-5)  # same noise per image and budget
        assert all(torch.equal(ids, full[: step.num_tokens]) for ids, full in zip(step.token_ids, reference.token_ids))

    pil = list(pipe.stream_coarse_to_fine(images[0], generator=seeded(0)))
    assert [s.num_tokens for s in pil] == pipe.default_budgets()
    assert all(isinstance(s.images[0], PIL.Image.Image) for s in pil)
    with pytest.raises(ValueError, match=r"`budgets\[1\]` must be in \[1, 8\], got 9"):  # checked on the call
        pipe.stream_coarse_to_fine(images[0], budgets=[1, 9])


# ------------------------------------------------------------------------------------------------------ generation
def test_class_pipeline_previews_then_the_non_streamed_images(class_pipe):
    reference = class_pipe(["cat", 2], num_tokens=5, num_images_per_label=2, generator=seeded(3), output_type="pt")
    steps = list(
        class_pipe(
            ["cat", 2], num_tokens=5, num_images_per_label=2, generator=seeded(3), output_type="pt", stream=True
        )
    )
    assert [s.num_tokens for s in steps] == [1, 2, 4, 5] and [s.is_final for s in steps] == [False] * 3 + [True]
    final = steps[-1]
    assert torch.equal(final.images, reference.images)  # the same images, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(final.token_ids, reference.token_ids))
    for step in steps[:-1]:  # previews: prefixes of the final ids
        assert step.images.shape == (4, 3, 16, 16)
        assert all(torch.equal(a, b[: step.num_tokens]) for a, b in zip(step.token_ids, reference.token_ids))


def test_text_pipeline_previews_decode_the_prefixes_from_the_final_noise(text_pipe, flextok):
    embeds = torch.randn(2, 6, 32, generator=seeded(1))
    noise = torch.randn(2, 3, 16, 16, generator=seeded(2))
    sampling = dict(prompt_embeds=embeds, num_tokens=K, latents=noise, output_type="pt")
    reference = text_pipe(**sampling, generator=seeded(4))
    steps = list(
        text_pipe(
            **sampling, generator=seeded(4), stream=True, preview_num_inference_steps=2, preview_guidance_scale=1.5
        )
    )
    assert [s.num_tokens for s in steps] == [1, 2, 4, 8] == [*preview_budgets(K), K]
    assert torch.equal(steps[-1].images, reference.images)
    for step in steps[:-1]:
        prefix = torch.stack(step.token_ids)
        expected = text_pipe.detokenize(
            prefix, num_inference_steps=2, guidance_scale=1.5, latents=noise, output_type="pt"
        )
        assert torch.equal(step.images, expected)
        assert torch.equal(prefix, torch.stack(reference.token_ids)[:, : step.num_tokens])
    # a list of generators: the first seeds the prior, all of them the noise, as without streaming
    gens = dict(prompt_embeds=embeds, num_tokens=3, output_type="np")
    plain = text_pipe(**gens, generator=[seeded(5), seeded(6)])
    streamed = list(text_pipe(**gens, generator=[seeded(5), seeded(6)], stream=True))
    assert [s.num_tokens for s in streamed] == [1, 2, 3] and (streamed[-1].images == plain.images).all()


def test_prior_sampling_is_isolated_from_the_consumer(class_pipe):
    """What the consumer does between previews (here: drawing from the global RNG) does not change the prior's
    samples, even without a generator, where the prior samples from the global RNG itself."""
    torch.manual_seed(11)
    reference = class_pipe([0, 1], num_tokens=K, output_type="pt")
    torch.manual_seed(11)
    steps = []
    for step in class_pipe([0, 1], num_tokens=K, output_type="pt", stream=True):
        torch.rand(1000)
        steps.append(step)
    assert all(torch.equal(a, b) for a, b in zip(steps[-1].token_ids, reference.token_ids))


def test_closing_the_stream_stops_the_prior(class_pipe):
    stream = class_pipe(0, num_tokens=K, generator=seeded(0), stream=True)
    first = next(stream)
    assert first.num_tokens == 1 and len(stream_threads()) == 1  # the prior waits while we look at the preview
    stream.close()
    assert stream_threads() == []
    with pytest.raises(ValueError, match="`preview_num_inference_steps` must be in >= 1, got 0"):
        class_pipe(0, num_tokens=K, stream=True, preview_num_inference_steps=0)  # checked on the call


def test_stream_prior_order_and_errors():
    def generate(streamer):  # stands in for `generate()`: the prefix, then one id per step for 2 rows
        streamer.put(torch.zeros(2, 3, dtype=torch.long))
        for step in range(5):
            streamer.put(torch.tensor([step, 10 + step]))
        return torch.arange(10).reshape(2, 5)

    events = list(stream_prior(generate, [1, 2, 4]))
    assert [kind for kind, _ in events] == ["start", "ids", "ids", "ids", "done"]
    assert [payload.shape[1] for _, payload in events[1:4]] == [1, 2, 4]
    assert events[3][1].tolist() == [[0, 1, 2, 3], [10, 11, 12, 13]]

    def failing(streamer):
        streamer.put(torch.zeros(1, 1, dtype=torch.long))
        streamer.put(torch.tensor([7]))
        raise RuntimeError("prior exploded")

    seen = []
    with pytest.raises(RuntimeError, match="prior exploded"):
        for kind, _ in stream_prior(failing, [1]):
            seen.append(kind)
    assert seen == ["start", "ids"] and stream_threads() == []
