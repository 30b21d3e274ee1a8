"""Handlers of the Gradio demo (`flextok_hf.demo`): input checks, per-worker pipeline views, the Tokenize and Generate
tabs' functions. Plain sync functions, safe to run in gradio's worker threads."""

from __future__ import annotations

import copy
import math
import os
import queue
import re
from contextlib import contextmanager

import gradio as gr
import numpy as np
import PIL.Image
import torch

DEFAULT_MAX_IMAGE_PIXELS = 2048 * 2048
BUDGET_MODES = ("fixed k", "auto")
DEFAULT_TARGET_PSNR = 20.0
MAX_SEED = 2**63 - 1
MAX_UPSCALE_FACTOR = 16  # uploads above 16 x `max_image_pixels` are refused rather than decoded
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


# ---------------------------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------------------------
def checked_image(**kwargs) -> gr.Image:
    """A `gr.Image` whose upload decoding errors (not an image, truncated, decompression bomb) become `gr.Error`s.

    The instance's `preprocess` is wrapped: subclassing a component would make gradio write a `.pyi` stub next to
    this module at import time.
    """
    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def checked_preprocess(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except PIL.Image.DecompressionBombError:
            raise gr.Error("The uploaded image has too many pixels to open safely; upload a smaller image.") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise gr.Error(
                f"The uploaded file could not be read as an image ({type(error).__name__}); upload a PNG, JPEG, "
                "WebP, GIF or BMP image."
            ) from None

    component.preprocess = checked_preprocess
    return component


def prepare_image(image, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> PIL.Image.Image:
    """Any uploaded image -> an RGB PIL image of at most `max_image_pixels` pixels (downscaled, aspect kept)."""
    from .image_processing_flextok import to_rgb_array

    if image is None:
        raise gr.Error("No image given: upload an image or pick one of the examples.")
    if isinstance(image, (str, os.PathLike)):
        try:
            image = PIL.Image.open(image)
        except (OSError, ValueError) as error:
            raise gr.Error(f"The file could not be read as an image ({type(error).__name__}).") from None
    if not isinstance(image, PIL.Image.Image):
        raise gr.Error(f"Expected an image, got {type(image).__name__}.")
    width, height = image.size
    if width * height > MAX_UPSCALE_FACTOR * max_image_pixels:
        raise gr.Error(
            f"The image has {width}x{height} pixels; this demo accepts up to "
            f"{MAX_UPSCALE_FACTOR * max_image_pixels:,} pixels. Upload a smaller image."
        )
    try:
        if width * height > max_image_pixels:
            factor = math.ceil(math.sqrt(width * height / max_image_pixels))
            image.draft("RGB", (width // factor, height // factor))  # JPEG: decode at reduced scale (else no-op)
            image.load()
            factor = math.ceil(math.sqrt(image.size[0] * image.size[1] / max_image_pixels))
            if image.mode not in ("RGB", "RGBA", "L", "LA", *_HIGH_BIT_MODES):
                image = image.convert("RGBA")
            image = image.reduce(factor) if factor > 1 else image  # box filter: cheap and alias-free
        if image.mode in _HIGH_BIT_MODES:  # 16/32-bit gray: stretch to 8 bits instead of clipping at 255
            values = np.asarray(image, dtype=np.float64)
            low, high = float(values.min()), float(values.max())
            values = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
            image = PIL.Image.fromarray(values.round().astype(np.uint8), mode="L")
        return PIL.Image.fromarray(to_rgb_array(image, "image"))
    except (OSError, ValueError, TypeError) as error:
        raise gr.Error(f"The image could not be decoded ({error}).") from None


def _as_int(name: str, value, low: int, high: int | None = None) -> int:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise gr.Error(f"`{name}` must be a whole number, got {value!r}.")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f"between {low} and {high}" if high is not None else f">= {low}"
        raise gr.Error(f"`{name}` must be {allowed}, got {value}.")
    return value


def _as_float(name: str, value, low: float, high: float) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise gr.Error(f"`{name}` must be a number between {low} and {high}, got {value!r}.")
    return float(value)


@contextmanager
def _user_errors():
    """Pipeline argument errors (ValueError / TypeError with a readable message) -> `gr.Error`."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, TypeError) as error:
        raise gr.Error(str(error)) from None


def _to_pil(array: np.ndarray) -> PIL.Image.Image:
    return PIL.Image.fromarray((np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8))


def _tokens_caption(k: int) -> str:
    return f"{k} token" if k == 1 else f"{k} tokens"


# ---------------------------------------------------------------------------------------------------------------------
# Worker views of a pipeline
# ---------------------------------------------------------------------------------------------------------------------
class PipelinePool:
    """`size` views of one diffusers pipeline that share its modules but not its scheduler (or tokenizer), handed
    out one per concurrent request."""

    def __init__(self, pipeline, size: int):
        self.pipeline = pipeline
        self._views: queue.Queue = queue.Queue()
        for _ in range(max(1, size)):
            self._views.put(self._view(pipeline))

    @staticmethod
    def _view(pipeline):
        components = dict(pipeline.components)
        components["scheduler"] = type(pipeline.scheduler).from_config(pipeline.scheduler.config)
        if components.get("tokenizer") is not None:  # fast tokenizers keep per-call padding state
            components["tokenizer"] = copy.deepcopy(components["tokenizer"])
        _, optional = pipeline._get_signature_keys(pipeline)
        settings = {key: pipeline.config[key] for key in optional if key in pipeline.config}
        view = type(pipeline)(**components, **settings)
        view.set_progress_bar_config(disable=True)
        return view

    @contextmanager
    def get(self):
        view = self._views.get()
        try:
            yield view
        finally:
            self._views.put(view)


# ---------------------------------------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------------------------------------
class TokenizeHandlers:
    """Handlers of the Tokenize tab (plain sync functions, safe to run in parallel threads)."""

    def __init__(self, pipeline, concurrency: int = 1, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        self.pool = PipelinePool(pipeline, concurrency)
        self.num_registers = int(pipeline.flextok.config.num_registers)
        self.budgets = pipeline.default_budgets()
        self.max_image_pixels = max_image_pixels

    def _inputs(self, image, num_tokens, num_inference_steps, guidance_scale, seed):
        image = prepare_image(image, self.max_image_pixels)
        k = _as_int("num_tokens", num_tokens, 1, self.num_registers)
        steps = _as_int("num_inference_steps", num_inference_steps, 1, 1000)
        scale = _as_float("guidance_scale", guidance_scale, 1.0, 100.0)
        seed = _as_int("seed", 0 if seed is None else seed, 0, MAX_SEED)
        return image, k, steps, scale, seed

    def tokenize(
        self,
        image,
        num_tokens,
        num_inference_steps,
        guidance_scale,
        seed,
        budget_mode="fixed k",
        target=DEFAULT_TARGET_PSNR,
    ):
        """-> (coarse-to-fine gallery, reconstruction at k, PSNR plot, token info, k): the last `tokenize_stream`
        item."""
        *_, last = self.tokenize_stream(
            image, num_tokens, num_inference_steps, guidance_scale, seed, budget_mode, target
        )
        return last

    def tokenize_stream(
        self,
        image,
        num_tokens,
        num_inference_steps,
        guidance_scale,
        seed,
        budget_mode="fixed k",
        target=DEFAULT_TARGET_PSNR,
    ):
        """The Tokenize tab's handler. Yields `(gallery, reconstruction, plot, info, k)` after each budget is decoded
        (ascending): the gallery and the PSNR plot so far; the reconstruction at the budget k and k itself once that
        budget is decoded (`gr.skip()` before); the token info at the end (`gr.skip()` before).

        With `budget_mode="auto"`, k is the smallest budget whose PSNR reaches `target` dB (the largest budget if none
        does) — the rule of `FlexTokPipeline(num_tokens="auto")` with its search at full steps — and the k slider
        moves to it."""
        from .adaptive_budget import meets_target
        from .metrics.functional import psnr

        image, k, steps, scale, seed = self._inputs(image, num_tokens, num_inference_steps, guidance_scale, seed)
        if budget_mode not in BUDGET_MODES:
            raise gr.Error(f"`budget_mode` must be one of {list(BUDGET_MODES)}, got {budget_mode!r}.")
        auto = budget_mode == "auto"
        target = _as_float("target", DEFAULT_TARGET_PSNR if target is None else target, 0.5, 100.0) if auto else None
        budgets = list(self.budgets) if auto else sorted(set(self.budgets) | {k})
        chosen, recon = (None if auto else k), gr.skip()
        gallery, by_budget = [], {}
        with self.pool.get() as pipe, _user_errors():
            reference = ((pipe.preprocess(image).float().cpu() + 1) / 2).clamp(0, 1)
            stream = pipe.stream_coarse_to_fine(
                image,
                budgets=budgets,
                num_inference_steps=steps,
                guidance_scale=scale,
                seed=seed,  # the noise rule of `flextok_hf.decoding`: the same image and seed as everywhere else
                output_type="np",
            )
            for step in stream:
                budget, array = step.num_tokens, np.asarray(step.images[0])  # [H, W, 3] in [0, 1]
                predicted = torch.from_numpy(array).permute(2, 0, 1)[None].float()
                by_budget[budget] = float(psnr(predicted, reference, data_range=1.0)[0])
                value = torch.tensor(by_budget[budget], dtype=torch.float64)
                reached = auto and bool(meets_target(value, target, "psnr"))
                if chosen is None and (reached or step.is_final):
                    chosen = budget  # the first budget reaching the target, else the largest
                if budget == chosen:
                    recon = _to_pil(array)
                if budget in self.budgets:
                    caption = f"k={budget} · {by_budget[budget]:.1f} dB"
                    if auto and budget == chosen:
                        caption += " · auto k" if reached else " · auto k (target not reached)"
                    gallery.append((_to_pil(array), caption))
                info = self._info(step.token_ids[0], chosen, by_budget, target) if step.is_final else gr.skip()
                yield list(gallery), recon, psnr_table(by_budget), info, gr.skip() if chosen is None else chosen

    @staticmethod
    def _info(token_ids: torch.Tensor, k: int, psnr_by_budget: dict[int, float], target: float | None) -> dict:
        info = {
            "token_ids": token_ids.tolist(),
            "num_tokens": k,
            "selected_token_ids": token_ids[:k].tolist(),
            "psnr_db": {str(b): round(value, 3) for b, value in psnr_by_budget.items()},
        }
        if target is not None:
            info.update(budget_mode="auto", target_psnr_db=target, target_met=bool(psnr_by_budget[k] >= target))
        return info

    def reconstruct(self, image, num_tokens, num_inference_steps, guidance_scale, seed):
        """-> the reconstruction from the first `num_tokens` tokens (same noise as in `tokenize` for the same seed)."""
        image, k, steps, scale, seed = self._inputs(image, num_tokens, num_inference_steps, guidance_scale, seed)
        with self.pool.get() as pipe, _user_errors():
            output = pipe.coarse_to_fine(
                image, budgets=[k], num_inference_steps=steps, guidance_scale=scale, seed=seed, output_type="pil"
            )
        return output.images[0][0]

    def reconstruct_if_image(self, image, num_tokens, num_inference_steps, guidance_scale, seed):
        """Slider release: refresh the single reconstruction only when an image is there."""
        if image is None:
            return gr.skip()
        return self.reconstruct(image, num_tokens, num_inference_steps, guidance_scale, seed)


def psnr_table(psnr_by_budget: dict[int, float]):
    """PSNR (dB) per token budget as a DataFrame for `gr.LinePlot` (budgets as ordered categories)."""
    import pandas as pd

    budgets = sorted(psnr_by_budget)
    return pd.DataFrame({"tokens": [str(b) for b in budgets], "PSNR (dB)": [psnr_by_budget[b] for b in budgets]})


class GenerateHandlers:
    """Handler of the Generate tab for a text-to-image or class-to-image pipeline."""

    def __init__(self, pipeline, concurrency: int = 1, max_images: int = 8):
        from .pipeline_flextok_text2image import FlexTokText2ImagePipeline

        self.is_text = isinstance(pipeline, FlexTokText2ImagePipeline)
        self.pool = PipelinePool(pipeline, concurrency)
        self.max_tokens = int(pipeline.prior.config.max_num_tokens)
        self.max_images = max_images
        self.class_ids: dict[str, int] = {}
        if not self.is_text:
            names = pipeline.id2label or {i: f"class {i}" for i in range(pipeline.prior.config.num_classes)}
            self.class_ids = {names[i].split(",")[0].strip(): i for i in sorted(names)}

    def _condition(self, condition):
        if self.is_text:
            if not isinstance(condition, str) or not condition.strip():
                raise gr.Error("Enter a prompt.")
            return condition.strip()
        text = str(condition).strip() if condition is not None else ""
        if text in self.class_ids:
            return self.class_ids[text]
        if re.fullmatch(r"\d+", text) and int(text) in self.class_ids.values():
            return int(text)
        raise gr.Error(f"Unknown class {condition!r}; choose one of {list(self.class_ids)}.")

    def _sampling(self, condition, num_tokens, prior_guidance_scale, decoder_guidance_scale, num_images, steps, seed):
        """Checked handler inputs -> (condition, k, pipeline keyword arguments)."""
        condition = self._condition(condition)
        k = _as_int("num_tokens", num_tokens, 1, self.max_tokens)
        count = _as_int("num_images", num_images, 1, self.max_images)
        sampling = dict(
            num_tokens=k,
            prior_guidance_scale=_as_float("prior_guidance_scale", prior_guidance_scale, 0.0, 100.0),
            decoder_guidance_scale=_as_float("decoder_guidance_scale", decoder_guidance_scale, 1.0, 100.0),
            num_inference_steps=_as_int("num_inference_steps", steps, 1, 1000),
            generator=torch.Generator().manual_seed(_as_int("seed", 0 if seed is None else seed, 0, MAX_SEED)),
        )
        sampling["num_images_per_prompt" if self.is_text else "num_images_per_label"] = count
        return condition, k, sampling

    def generate(
        self,
        condition,
        num_tokens,
        prior_guidance_scale,
        decoder_guidance_scale,
        num_images,
        num_inference_steps,
        seed,
    ):
        """-> (gallery of generated images, their token ids)."""
        condition, k, sampling = self._sampling(
            condition, num_tokens, prior_guidance_scale, decoder_guidance_scale, num_images, num_inference_steps, seed
        )
        with self.pool.get() as pipe, _user_errors():
            output = pipe(condition, **sampling)
        gallery = [(image, f"#{index} · {_tokens_caption(k)}") for index, image in enumerate(output.images)]
        return gallery, {"token_ids": [ids.tolist() for ids in output.token_ids]}

    def generate_stream(
        self,
        condition,
        num_tokens,
        prior_guidance_scale,
        decoder_guidance_scale,
        num_images,
        num_inference_steps,
        seed,
        previews=True,
    ):
        """The Generate tab's handler: with `previews`, yields (gallery of previews, `gr.skip()`) each time the prior
        has sampled 1, 2, 4, ... tokens (one cheap decoder step each, from the final images' noise), then (final
        gallery, token ids) — the same images as `generate` for the same seed."""
        arguments = (condition, num_tokens, prior_guidance_scale, decoder_guidance_scale, num_images)
        if not previews:
            yield self.generate(*arguments, num_inference_steps, seed)
            return
        condition, k, sampling = self._sampling(*arguments, num_inference_steps, seed)
        with self.pool.get() as pipe, _user_errors():
            for step in pipe(condition, stream=True, **sampling):
                if not step.is_final:
                    caption = f"{_tokens_caption(step.num_tokens)} of {k} · preview"
                    yield [(image, f"#{i} · {caption}") for i, image in enumerate(step.images)], gr.skip()
                    continue
                gallery = [(image, f"#{i} · {_tokens_caption(k)}") for i, image in enumerate(step.images)]
                yield gallery, {"token_ids": [ids.tolist() for ids in step.token_ids]}
