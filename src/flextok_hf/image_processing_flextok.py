"""FlexTokImageProcessor: any image -> `[B, 3, S, S]` in [-1, 1] (transformers PIL backend), and back."""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs


def load_image_file(path: str | os.PathLike, name: str = "images") -> PIL.Image.Image:
    """Open an image file, raising a `ValueError` that names the argument and the file when it cannot be read."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"`{name}`: cannot read image file {str(path)!r} ({error}).") from None


# The value range of float inputs, by its one accepted spelling; PIL and integer inputs are always [0, 255].
INPUT_RANGES = {"[0, 1]": (0.0, 1.0), "[-1, 1]": (-1.0, 1.0), "[0, 255]": (0.0, 255.0)}
DEFAULT_INPUT_RANGE = "[0, 1]"
# Values this far outside the declared range are float rounding, not a wrong range: accepted and clipped.
RANGE_TOLERANCE = 1e-3


def check_input_range(input_range, name: str = "input_range") -> str:
    """The canonical spelling (a key of `INPUT_RANGES`) of `input_range`: None (the default, "[0, 1]"), one of
    "[0, 1]", "[-1, 1]", "[0, 255]" (spaces optional) or the matching pair of numbers, e.g. `(-1, 1)`."""
    if input_range is None:
        return DEFAULT_INPUT_RANGE
    if isinstance(input_range, str):
        for spelling in INPUT_RANGES:
            if input_range.replace(" ", "") == spelling.replace(" ", ""):
                return spelling
    elif isinstance(input_range, (tuple, list)) and len(input_range) == 2:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in input_range):
            for spelling, bounds in INPUT_RANGES.items():
                if (float(input_range[0]), float(input_range[1])) == bounds:
                    return spelling
    raise ValueError(
        f"`{name}` must be one of {', '.join(repr(s) for s in INPUT_RANGES)} (or the pairs (0, 1), (-1, 1), (0, 255)), "
        f"got {input_range!r}."
    )


def _check_values(array: np.ndarray, low: float, high: float, name: str, rule: str) -> None:
    """Raises a `ValueError` naming `name`, the declared range and the found min / max when values fall outside."""
    found_low, found_high = float(array.min()), float(array.max())
    if np.isfinite(found_low) and np.isfinite(found_high):
        if found_low >= low - RANGE_TOLERANCE and found_high <= high + RANGE_TOLERANCE:
            return
    raise ValueError(f"`{name}`: {rule}, but the values span min {found_low:.4g}, max {found_high:.4g}.")


def to_rgb_array(image, name: str = "images", input_range=None) -> np.ndarray:
    """One image (path, PIL, numpy or torch; gray, RGB or RGBA; channels first or last) -> `[H, W, 3]` in [0, 255]:
    uint8 for PIL and integer inputs, float32 for float inputs (kept exact unless a resize is needed). Transparency is
    composited onto white.

    The value range is declared, never guessed: PIL images and integer arrays are [0, 255]; float arrays are
    `input_range` ("[0, 1]" by default, or "[-1, 1]" / "[0, 255]"); boolean arrays are masks (True = white). Values
    outside the declared range (beyond `RANGE_TOLERANCE`) raise a `ValueError`.
    """
    input_range = check_input_range(input_range)
    if isinstance(image, (str, os.PathLike)):
        image = load_image_file(image, name)
    if isinstance(image, PIL.Image.Image):
        has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
        if has_alpha:
            rgba = image.convert("RGBA")
            image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"`{name}` must be PIL images, numpy arrays, torch tensors or file paths, got {type(image).__name__}."
        )
    array = image
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise TypeError(f"`{name}`: image arrays must hold real numbers, got dtype {array.dtype}.")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"`{name}`: an image array must be [H, W], [H, W, C] or [C, H, W], got shape {array.shape}.")
    if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"`{name}`: an image must have 1, 3 or 4 channels, got shape {image.shape}.")
    if array.size == 0:
        raise ValueError(f"`{name}`: an image must not be empty, got shape {image.shape}.")
    if array.dtype == bool:
        array = array.astype(np.float32) * 255
    elif np.issubdtype(array.dtype, np.floating):
        low, high = INPUT_RANGES[input_range]
        rule = f"float images are read in input_range={input_range!r}" + (
            ' (the default; pass `input_range="[-1, 1]"` for images in [-1, 1])' if input_range == "[0, 1]" else ""
        )
        _check_values(array, low, high, name, rule)
        array = (array - low) * (255.0 / (high - low))
    elif array.dtype != np.uint8:
        _check_values(array, 0, 255, name, f"integer images ({array.dtype}) are read in [0, 255]")
    is_float = np.issubdtype(array.dtype, np.floating) or array.dtype == bool
    array = array.astype(np.float32)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        alpha = array[..., 3:] / 255.0
        array = alpha * array[..., :3] + (1 - alpha) * 255.0
    if is_float:
        return np.clip(array, 0, 255)
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


class FlexTokImageProcessorKwargs(ImagesKwargs, total=False):
    """`ImagesKwargs` plus `input_range`: the value range of float inputs (see `check_input_range`)."""

    input_range: str | tuple | list | None


class FlexTokImageProcessor(PilBackend):
    r"""
    Image processor of FlexTok: converts any image to RGB, resizes its shorter side to `size["shortest_edge"]`
    (bicubic), center-crops to `crop_size` and scales to [-1, 1]. Returns `pixel_values` `[B, 3, H, W]`.

    Accepts PIL images of any mode, numpy arrays and torch tensors (gray / RGB / RGBA, channels first or last) and
    file paths. The value range follows the input type, never the values: PIL images and integer arrays are
    [0, 255]; float arrays are `input_range`, "[0, 1]" unless the processor or the call says `"[-1, 1]"` (or
    `"[0, 255]"`; the pairs `(-1, 1)` etc. are accepted too). Values outside the declared range raise a `ValueError`.
    `postprocess` maps model outputs back to PIL / numpy.
    """

    valid_kwargs = FlexTokImageProcessorKwargs

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 256, "width": 256}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_convert_rgb = False  # done by `to_rgb_array`, which also handles floats, palettes and alpha
    input_range = DEFAULT_INPUT_RANGE

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_range = check_input_range(self.input_range)

    @classmethod
    def from_model_config(cls, config, **kwargs) -> FlexTokImageProcessor:
        """A processor matching a `FlexTokConfig`'s image size."""
        side = config.image_size
        return cls(size={"shortest_edge": side}, crop_size={"height": side, "width": side}, **kwargs)

    def preprocess(self, images, *args, input_range=None, **kwargs):
        """Images -> `BatchFeature` with `pixel_values` in [-1, 1]; `input_range` (default: the processor's) is the
        range of float inputs."""
        input_range = check_input_range(self.input_range if input_range is None else input_range)
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("`images` must contain at least one image.")
            arrays = [to_rgb_array(image, input_range=input_range) for image in images]
        elif (
            isinstance(images, torch.Tensor)
            and images.ndim == 4
            or isinstance(images, np.ndarray)
            and images.ndim == 4
        ):
            arrays = [to_rgb_array(image, input_range=input_range) for image in images]
        else:
            arrays = [to_rgb_array(images, input_range=input_range)]
        kwargs.setdefault("input_data_format", "channels_last")
        return super().preprocess(arrays, *args, **kwargs)

    def resize(self, image: np.ndarray, size, resample=None, reducing_gap=None, **kwargs) -> np.ndarray:
        """PIL resize (8-bit), skipped when the `[C, H, W]` image already has the target size so float inputs stay
        exact."""
        height, width = image.shape[-2:]
        if size.shortest_edge and min(height, width) == size.shortest_edge:
            return image
        if size.height and size.width and (height, width) == (size.height, size.width):
            return image
        if image.dtype != np.uint8:
            image = np.clip(np.round(image), 0, 255).astype(np.uint8)
        return super().resize(image, size, resample=resample, reducing_gap=reducing_gap, **kwargs)

    def postprocess(self, pixel_values: torch.Tensor, output_type: str = "pil"):
        """`[B, 3, H, W]` in [-1, 1] -> list of PIL images (`"pil"`), `[B, H, W, 3]` floats in [0, 1] (`"np"`) or
        `[B, 3, H, W]` in [0, 1] (`"pt"`)."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
        return VaeImageProcessor(do_resize=False).postprocess(pixel_values.float(), output_type=output_type)


__all__ = ["FlexTokImageProcessor", "INPUT_RANGES", "check_input_range", "to_rgb_array", "load_image_file"]
