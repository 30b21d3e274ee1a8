"""FlexTokImageProcessor: any image -> `[B, 3, S, S]` in [-1, 1] (transformers PIL backend), and back."""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling


def load_image_file(path: str | os.PathLike, name: str = "images") -> PIL.Image.Image:
    """Open an image file, raising a `ValueError` that names the argument and the file when it cannot be read."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"`{name}`: cannot read image file {str(path)!r} ({error}).") from None


def to_rgb_array(image, name: str = "images") -> np.ndarray:
    """One image (path, PIL, numpy or torch; gray, RGB or RGBA; channels first or last) -> `[H, W, 3]` in [0, 255]:
    uint8 for PIL and integer inputs, float32 for float inputs (kept exact unless a resize is needed). Transparency is composited onto white. Float inputs are read as [0, 1] or, if negative values occur,
    as [-1, 1]; integer inputs as [0, 255]."""
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
    if array.dtype == bool:
        array = array.astype(np.float32) * 255
    elif np.issubdtype(array.dtype, np.floating):
        low, high = float(array.min()), float(array.max())
        if low >= 0 and high <= 1:
            array = array * 255.0
        elif low >= -1 and high <= 1:
            array = (array + 1) * 127.5
        elif low < 0 or high > 255:
            raise ValueError(f"`{name}`: float images must lie in [0, 1] or [-1, 1], got [{low:.3g}, {high:.3g}].")
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


class FlexTokImageProcessor(PilBackend):
    r"""
    Image processor of FlexTok: converts any image to RGB, resizes its shorter side to `size["shortest_edge"]`
    (bicubic), center-crops to `crop_size` and scales to [-1, 1]. Returns `pixel_values` `[B, 3, H, W]`.

    Accepts PIL images of any mode, numpy arrays and torch tensors (uint8 in [0, 255], float in [0, 1] or [-1, 1],
    gray / RGB / RGBA, channels first or last) and file paths. `postprocess` maps model outputs back to PIL / numpy.
    """

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

    @classmethod
    def from_model_config(cls, config, **kwargs) -> FlexTokImageProcessor:
        """A processor matching a `FlexTokConfig`'s image size."""
        side = config.image_size
        return cls(size={"shortest_edge": side}, crop_size={"height": side, "width": side}, **kwargs)

    def preprocess(self, images, *args, **kwargs):
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("`images` must contain at least one image.")
            arrays = [to_rgb_array(image) for image in images]
        elif (
            isinstance(images, torch.Tensor)
            and images.ndim == 4
            or isinstance(images, np.ndarray)
            and images.ndim == 4
        ):
            arrays = [to_rgb_array(image) for image in images]
        else:
            arrays = [to_rgb_array(images)]
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


__all__ = ["FlexTokImageProcessor", "to_rgb_array", "load_image_file"]
