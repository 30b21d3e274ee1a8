"""FlexTokPipeline (diffusers) and the reconstruct CLI."""

import numpy as np
import PIL.Image
import pytest
import torch

from flextok_hf import FlexTokFlowScheduler, FlexTokPipeline
from flextok_test_utils import FIXTURE_CKPT, FIXTURE_VAE_CONFIG, converted_fixture_model, reference, tiny_model


def _image(seed=0, size=20, mode="RGB"):
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray((rng.random((size, size + 4, 3)) * 255).astype(np.uint8)).convert(mode)


@pytest.fixture()
def pipe():
    pipe = FlexTokPipeline.from_flextok(tiny_model(), num_inference_steps=3, guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_save_and_from_pretrained_give_identical_outputs(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "flextok" / "model.safetensors").exists()
    assert (tmp_path / "scheduler" / "scheduler_config.json").exists()
    assert not list(tmp_path.rglob("*.bin"))
    loaded = FlexTokPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.num_inference_steps == 3 and loaded.config.guidance_scale == 2.0  # stored defaults
    assert isinstance(loaded.scheduler, FlexTokFlowScheduler)
    images = [_image(0), _image(1)]
    a = pipe(images, num_tokens=[2, 8], generator=torch.Generator().manual_seed(0), output_type="np")
    b = loaded(images, num_tokens=[2, 8], generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.array_equal(a.images, b.images)
    assert all(torch.equal(x, y) for x, y in zip(a.token_ids, b.token_ids))
    # A bare model folder loads too (wrapped with a default scheduler).
    pipe.flextok.save_pretrained(tmp_path / "bare")
    bare = FlexTokPipeline.from_pretrained(tmp_path / "bare", num_inference_steps=3, guidance_scale=2.0)
    bare.set_progress_bar_config(disable=True)
    c = bare(images, num_tokens=[2, 8], generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.array_equal(a.images, c.images)


def test_dtype_loading(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = FlexTokPipeline.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.flextok.dtype == torch.bfloat16
    loaded.set_progress_bar_config(disable=True)
    out = loaded(_image(), output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 16, 16, 3) and np.isfinite(out.images).all()


def test_output_types_shapes_and_ranges(pipe):
    image = _image()

    def seeded():
        return torch.Generator().manual_seed(0)

    pil = pipe(image, generator=seeded()).images
    assert isinstance(pil, list) and isinstance(pil[0], PIL.Image.Image) and pil[0].size == (16, 16)
    arr = pipe([image, image], output_type="np", generator=seeded()).images
    assert arr.shape == (2, 16, 16, 3) and arr.min() >= 0 and arr.max() <= 1
    pt = pipe(image, output_type="pt", generator=seeded()).images
    assert pt.shape == (1, 3, 16, 16) and pt.min() >= 0 and pt.max() <= 1
    raw = pipe(image, output_type="raw", generator=seeded()).images
    latent = pipe(image, output_type="latent", generator=seeded()).images
    assert raw.shape == latent.shape == (1, 3, 16, 16)  # pixel space: the latent is the (scaled) image
    assert torch.allclose(((raw + 1) / 2).clamp(0, 1), pt.float(), atol=1e-6)
    images, ids = pipe(image, return_dict=False, output_type="np", generator=seeded())
    assert images.shape == (1, 16, 16, 3) and ids[0].shape == (8,)


def test_callback_called_once_per_step_and_can_edit_latents(pipe):
    calls = []

    def callback(p, step, timestep, kwargs):
        calls.append((step, float(timestep), tuple(kwargs["latents"].shape)))
        return {"latents": kwargs["latents"] * 0} if step == 2 else kwargs

    out = pipe(_image(), num_inference_steps=3, callback_on_step_end=callback, output_type="latent")
    assert [c[0] for c in calls] == [0, 1, 2]
    assert calls[0][1] == 1000.0 and calls[0][2] == (1, 3, 16, 16)
    assert torch.count_nonzero(out.images) == 0
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(_image(), callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])


def test_mixed_budgets_equal_one_by_one_with_the_same_noise(pipe):
    images = [_image(0), _image(1), _image(2)]
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    batched = pipe(images, num_tokens=[1, 3, 8], latents=noise, output_type="raw").images
    for i, k in enumerate([1, 3, 8]):
        single = pipe(images[i], num_tokens=k, latents=noise[i : i + 1], output_type="raw").images
        assert torch.allclose(batched[i : i + 1], single, atol=1e-5)


def test_coarse_to_fine_uses_the_same_noise_for_every_budget(pipe):
    images = [_image(0), _image(1)]
    result = pipe.coarse_to_fine(images, generator=torch.Generator().manual_seed(0), output_type="raw")
    assert result.budgets == [1, 2, 4, 8]
    assert result.images.shape == (2, 4, 3, 16, 16)
    noise = pipe.flextok.prepare_noise(2, torch.Generator().manual_seed(0))
    for j, k in enumerate(result.budgets):
        direct = pipe(images, num_tokens=k, latents=noise, output_type="raw").images
        assert torch.allclose(result.images[:, j], direct, atol=1e-5)
    pil = pipe.coarse_to_fine(images[0], budgets=[1, 8])
    assert len(pil.images) == 1 and len(pil.images[0]) == 2 and isinstance(pil.images[0][0], PIL.Image.Image)


@pytest.mark.parametrize("guidance", [1, 3])
def test_pipeline_reproduces_the_official_detokenization(guidance):
    ref = reference()
    pipe = FlexTokPipeline.from_flextok(converted_fixture_model(), num_inference_steps=4)
    pipe.set_progress_bar_config(disable=True)
    token_ids = [ref["token_ids"][i, :k] for i, k in enumerate(ref["detok_keep_k"].tolist())]
    common = dict(guidance_scale=float(guidance), adaptive_guidance=True, latents=ref["detok_init_noise"].clone())
    latents = pipe.detokenize(token_ids, output_type="latent", **common)
    assert (latents - ref[f"detok_g{guidance}_latents"]).abs().max() < 1e-4
    images = pipe.detokenize(token_ids, output_type="raw", **common)
    assert (images - ref[f"detok_g{guidance}_images"]).abs().max() < 1e-4
    # Through __call__: tokenizing the fixture images gives the official ids, and the same images come out.
    pixel_values = ((ref["images"] + 1) / 2).clamp(0, 1)
    out = pipe(list(pixel_values), num_tokens=ref["detok_keep_k"].tolist(), output_type="raw", **common)
    assert all(torch.equal(a, b) for a, b in zip(out.token_ids, token_ids))
    assert (out.images - ref[f"detok_g{guidance}_images"]).abs().max() < 1e-4


def test_bad_inputs(pipe, tmp_path):
    bad_file = tmp_path / "broken.png"
    bad_file.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image file"):
        pipe(str(bad_file))
    with pytest.raises(TypeError, match="images"):
        pipe({"not": "an image"})
    with pytest.raises(ValueError, match=r"num_tokens.*\[1, 8\]"):
        pipe(_image(), num_tokens=0)
    with pytest.raises(ValueError, match=r"num_tokens.*\[1, 8\]"):
        pipe(_image(), num_tokens=9)
    with pytest.raises(ValueError, match=r"num_tokens` has 3 entries but 2 images"):
        pipe([_image(), _image()], num_tokens=[1, 2, 3])
    with pytest.raises(ValueError, match="output_type"):
        pipe(_image(), output_type="jpeg")
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe(_image(), num_inference_steps=0)
    with pytest.raises(ValueError, match=r"budgets\[1\]"):
        pipe.coarse_to_fine(_image(), budgets=[1, 99])


def test_reconstruct_cli_writes_grid_and_prints_ids(tmp_path, capsys):
    from flextok_hf.cli import main

    model_dir = tmp_path / "model"
    assert main(["convert-official", FIXTURE_CKPT, str(model_dir), "--vae-config", FIXTURE_VAE_CONFIG]) == 0
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"img{i}.png"))
        _image(i, size=70).save(paths[-1])
    out = tmp_path / "grid.png"
    code = main(
        ["reconstruct", *paths, "--model", str(model_dir), "--num-tokens", "1,4,32", "--out", str(out), "--steps", "2"]
    )
    assert code == 0
    grid = PIL.Image.open(out)
    assert grid.size == (4 * 64, 2 * 64)  # original + 3 budgets, 2 rows
    printed = capsys.readouterr().out
    assert "budgets [1, 4, 32]" in printed and printed.count("[") >= 3
