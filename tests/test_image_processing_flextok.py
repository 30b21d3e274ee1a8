"""FlexTokImageProcessor's value-range rule: PIL / integer images are [0, 255], float images are `input_range`
("[0, 1]" unless "[-1, 1]" or "[0, 255]" is declared); the range is never guessed from the values."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

from flextok_hf import FlexTokImageProcessor, FlexTokPipeline
from flextok_hf.image_processing_flextok import check_input_range, to_rgb_array
from flextok_test_utils import tiny_model

SIZE = 16  # the tiny model's image size: no resize, so float inputs stay exact


def _uint8(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def processor():
    return FlexTokImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})


def _pixels(processor, image, **kwargs) -> torch.Tensor:
    return processor(image, return_tensors="pt", **kwargs)["pixel_values"]


def test_each_input_type_has_one_declared_range(processor):
    array = _uint8()
    expected = _pixels(processor, PIL.Image.fromarray(array))
    unit = array.astype(np.float32) / 255
    signed = unit * 2 - 1
    same = {
        "uint8 numpy": _pixels(processor, array),
        "int64 torch, channels first": _pixels(processor, torch.from_numpy(array).long().permute(2, 0, 1)),
        "float numpy (default [0, 1])": _pixels(processor, unit),
        "float64 torch, channels first": _pixels(processor, torch.from_numpy(unit).double().permute(2, 0, 1)),
        "float [-1, 1]": _pixels(processor, signed, input_range="[-1, 1]"),
        "float [-1, 1] as a tuple": _pixels(processor, torch.from_numpy(signed), input_range=(-1, 1)),
        "float [0, 255]": _pixels(processor, array.astype(np.float32), input_range="[0,255]"),
        "PIL ignores input_range": _pixels(processor, PIL.Image.fromarray(array), input_range="[-1, 1]"),
    }
    for name, pixel_values in same.items():
        assert torch.allclose(pixel_values, expected, atol=1e-5), name


def test_a_bright_signed_image_is_not_rescaled_by_guessing(processor):
    """All values of this [-1, 1] image are >= 0, which the old rule read as [0, 1]: the declared range decides."""
    bright = np.full((SIZE, SIZE, 3), 0.5, dtype=np.float32)
    assert torch.allclose(_pixels(processor, bright), torch.zeros(1, 3, SIZE, SIZE))  # 0.5 of [0, 1] is mid-gray
    assert torch.allclose(_pixels(processor, bright, input_range="[-1, 1]"), torch.full((1, 3, SIZE, SIZE), 0.5))


def test_processor_default_is_saved_and_a_call_overrides_it(processor, tmp_path):
    signed = _uint8(1).astype(np.float32) / 127.5 - 1
    declared = FlexTokImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE},
                                     input_range=(-1, 1))  # fmt: skip
    assert declared.input_range == "[-1, 1]" and processor.input_range == "[0, 1]"
    declared.save_pretrained(tmp_path)
    loaded = FlexTokImageProcessor.from_pretrained(tmp_path)
    assert loaded.input_range == "[-1, 1]"
    expected = _pixels(processor, signed, input_range="[-1, 1]")
    assert torch.equal(_pixels(loaded, signed), expected)
    assert torch.equal(_pixels(loaded, (signed + 1) / 2, input_range="[0, 1]"), _pixels(processor, (signed + 1) / 2))


@pytest.mark.parametrize(
    "image, kwargs, message",
    [
        (np.linspace(-1, 1, SIZE * SIZE * 3).reshape(SIZE, SIZE, 3), {}, r"input_range='\[0, 1\]'.*min -1, max 1"),
        (np.full((SIZE, SIZE, 3), 200.0), {}, r"input_range='\[0, 1\]'.*min 200, max 200"),
        (np.full((SIZE, SIZE, 3), 1.5), {"input_range": "[-1, 1]"}, r"input_range='\[-1, 1\]'.*max 1.5"),
        (np.full((SIZE, SIZE), -2.0), {"input_range": "[0, 255]"}, r"input_range='\[0, 255\]'.*min -2"),
        (np.full((SIZE, SIZE, 3), 1.01, dtype=np.float32), {}, r"max 1.01"),  # beyond the 1e-3 tolerance
        (np.full((SIZE, SIZE, 3), np.nan), {}, r"min nan"),
        (np.full((SIZE, SIZE, 3), 300, dtype=np.int16), {}, r"integer images \(int16\) are read in \[0, 255\]"),
        (torch.full((3, SIZE, SIZE), -1, dtype=torch.int32), {}, r"\[0, 255\].*min -1"),
    ],
)
def test_values_outside_the_declared_range_raise(processor, image, kwargs, message):
    with pytest.raises(ValueError, match=r"`images`: .*" + message):
        processor(image, **kwargs)


def test_float_rounding_within_the_tolerance_is_clipped(processor):
    nearly = np.full((SIZE, SIZE, 3), 1.0005, dtype=np.float32)
    assert torch.allclose(_pixels(processor, nearly), torch.ones(1, 3, SIZE, SIZE), atol=1e-6)
    assert to_rgb_array(np.full((2, 2), -1.0009), input_range="[-1, 1]").min() == 0


@pytest.mark.parametrize("bad", ["0-1", "[0, 2]", "[-1, 1, 2]", (0, 2), (True, 1), ["a", "b"], 1, "(-1, 1)"])
def test_bad_input_range_spellings_are_rejected(processor, bad):
    with pytest.raises(ValueError, match=r"`input_range` must be one of '\[0, 1\]', '\[-1, 1\]', '\[0, 255\]'"):
        check_input_range(bad)
    with pytest.raises(ValueError, match="`input_range`"):
        processor(np.zeros((SIZE, SIZE, 3), dtype=np.float32), input_range=bad)
    with pytest.raises(ValueError, match="`input_range`"):
        FlexTokImageProcessor(input_range=bad)


@pytest.mark.parametrize("spelling", ["[-1, 1]", "[-1,1]", " [ -1 , 1 ] ", (-1, 1), [-1.0, 1.0]])
def test_good_spellings_are_canonical(spelling):
    assert check_input_range(spelling) == "[-1, 1]"
    assert check_input_range(None) == check_input_range((0, 1)) == "[0, 1]"


# ---------------------------------------------------------------------------------------- pipelines and the task
@pytest.fixture(scope="module")
def pipe():
    pipe = FlexTokPipeline.from_flextok(tiny_model(), num_inference_steps=2, guidance_scale=1.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_entry_points_take_input_range(pipe):
    arrays = [_uint8(2), _uint8(3)]
    pil = [PIL.Image.fromarray(array) for array in arrays]
    signed = [torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1 for array in arrays]
    expected_ids = pipe.tokenize(pil)
    assert all(torch.equal(a, b) for a, b in zip(pipe.tokenize(signed, input_range="[-1, 1]"), expected_ids))
    with pytest.raises(ValueError, match=r"input_range='\[0, 1\]'.*min -0.99"):
        pipe.tokenize(signed)

    seeded = dict(generator=torch.Generator().manual_seed(0), output_type="pt")
    expected = pipe(pil, num_tokens=[2, 8], **seeded)
    seeded["generator"] = torch.Generator().manual_seed(0)
    out = pipe(signed, num_tokens=[2, 8], input_range="[-1, 1]", **seeded)
    assert torch.allclose(out.images, expected.images, atol=1e-5)
    with pytest.raises(ValueError, match="input_range"):
        pipe(signed)

    grid = pipe.coarse_to_fine(signed, budgets=[1, 4], input_range=(-1, 1), generator=torch.Generator().manual_seed(1),
                               output_type="pt")  # fmt: skip
    reference = pipe.coarse_to_fine(pil, budgets=[1, 4], generator=torch.Generator().manual_seed(1), output_type="pt")
    assert torch.allclose(grid.images, reference.images, atol=1e-5)
    streamed = pipe.coarse_to_fine(signed, budgets=[1, 4], input_range="[-1, 1]", stream=True,
                                   generator=torch.Generator().manual_seed(1), output_type="pt")  # fmt: skip
    assert [step.num_tokens for step in streamed] == [1, 4]
    with pytest.raises(ValueError, match="`input_range` must be one of"):
        pipe.coarse_to_fine(signed, input_range="-1..1")


def test_tokenize_task_takes_input_range(pipe):
    task = pipeline("flextok-tokenize", model=pipe.flextok, image_processor=pipe.image_processor, device="cpu")
    array = _uint8(4)
    signed = array.astype(np.float32) / 127.5 - 1
    expected = task(PIL.Image.fromarray(array), num_tokens=4)
    assert task(signed, num_tokens=4, input_range="[-1, 1]") == expected
    assert task([signed, signed], input_range=(-1, 1), batch_size=2) == [task(PIL.Image.fromarray(array))] * 2
    with pytest.raises(ValueError, match=r"input_range='\[0, 1\]'"):
        task(signed)
    with pytest.raises(ValueError, match="`input_range` must be one of"):
        task(signed, input_range="signed")
