"""Interactive Gradio demo of FlexTok (also the app of the Hugging Face Space).

- Tab "Tokenize": an image -> its ordered 1D token ids, coarse-to-fine reconstructions at budgets 1, 2, 4, ..., K
  (the gallery fills budget by budget as they are decoded), the reconstruction at one budget k, and a plot of PSNR
  against the (resized) input per budget. k is either set with the slider or, in "auto" mode, the smallest budget whose
  reconstruction reaches a minimum PSNR (the rule of `num_tokens="auto"`), shown above the reconstruction.
- Tab "Generate" (when a text- or class-to-image pipeline is given): prompt / class -> images from k prior tokens,
  with previews decoded while the prior samples (at 1, 2, 4, ... tokens) that sharpen into the final images.

`build_demo(...)` returns the `gr.Blocks`; `launch_demo(demo, ...)` serves it with the theme, CSS and upload limits.
Handlers are plain sync functions (run by gradio's worker threads). Every concurrent worker gets its own view of the
pipeline (shared weights, own scheduler and tokenizer), since diffusers schedulers hold per-call state.
"""

from __future__ import annotations

import copy
import math
import os
import queue
import re
import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import gradio as gr
import numpy as np
import PIL.Image
import torch

DEFAULT_MAX_IMAGE_PIXELS = 2048 * 2048
DEFAULT_MAX_FILE_SIZE = "10mb"
DEFAULT_PROMPTS = ("handwritten digit seven", "a giraffe", "an elephant", "handwritten digit three")
BUDGET_MODES = ("fixed k", "auto")
DEFAULT_TARGET_PSNR = 20.0
MAX_SEED = 2**63 - 1
MAX_UPSCALE_FACTOR = 16  # uploads above 16 x `max_image_pixels` are refused rather than decoded
# Tiny model outputs (16-64 px) are shown enlarged with crisp pixels.
DEMO_CSS = """
#tok-gallery img, #gen-gallery img, #tok-recon img, #tok-input img { image-rendering: pixelated; }
#tok-recon img, #tok-input img { width: 100%; height: 100%; object-fit: contain; }
#tok-gallery .grid-wrap, #gen-gallery .grid-wrap { min-height: 0 !important; }
"""
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------
def load_demo_pipelines(model: str | None = None, text2image: str | None = None, device: str | None = None):
    """`(tokenizer_pipeline, generation_pipeline or None)` for the demo.

    Args:
        model: a `FlexTokPipeline` / `FlexTokModel` folder or Hub id; None = the weights shipped with the package.
        text2image: a text- or class-to-image pipeline folder or Hub id; None = the shipped default when present
            (else no Generate tab); `"none"` = no Generate tab.
        device: None = CUDA when available, else CPU.
    """
    from .pipeline_flextok import FlexTokPipeline
    from .pipeline_flextok_text2image import load_generation_pipeline
    from .pretrained import pretrained_path

    if model is None:
        try:
            model = pretrained_path("tokenizer")
        except FileNotFoundError:
            raise ValueError(
                "`model`: this installation ships no default FlexTok weights; pass a FlexTok pipeline or model "
                "folder, or a Hub id (`--model`)."
            ) from None
    if text2image is None:
        try:
            text2image = pretrained_path("text2image")
        except FileNotFoundError:
            text2image = "none"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer_pipeline = FlexTokPipeline.from_pretrained(model).to(device)
    generation_pipeline = None
    if str(text2image).lower() != "none":
        generation_pipeline = load_generation_pipeline(text2image).to(device)
    return tokenizer_pipeline, generation_pipeline


def default_examples() -> list[tuple[str, PIL.Image.Image]]:
    """The bundled sample images (`flextok_hf.data.sample_images`), skipping sources whose package/font is missing."""
    try:
        from .data.samples import SAMPLE_SOURCES, sample_images
    except ImportError:
        return []
    examples = []
    for source in SAMPLE_SOURCES:
        try:
            examples += sample_images((source,))
        except (ImportError, OSError, ValueError):
            continue
    return examples


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


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------
def build_demo(
    tokenizer_pipeline,
    generation_pipeline=None,
    examples: Sequence | None = None,
    prompt_examples: Sequence[str] | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    concurrency_limit: int = 1,
    max_queue_size: int = 64,
    title: str = "FlexTok: flexible-length 1D image tokens",
) -> gr.Blocks:
    """The demo as a queued `gr.Blocks` (not launched).

    Args:
        tokenizer_pipeline: a [`FlexTokPipeline`] (Tokenize tab).
        generation_pipeline: a [`FlexTokText2ImagePipeline`] or [`FlexTokClassToImagePipeline`] (Generate tab), or
            None for no Generate tab.
        examples: example images for the Tokenize tab: `(caption, PIL image or path)` pairs or bare images/paths;
            None = `default_examples()`, `[]` = none.
        prompt_examples: example prompts (text pipelines); None = `DEFAULT_PROMPTS`.
        max_image_pixels: larger uploads are downscaled to at most this many pixels before processing.
        concurrency_limit: requests of one tab running at the same time (each gets its own pipeline view).
        max_queue_size: requests waiting beyond this are rejected ("queue full").

    API endpoints (`gradio_client`): `/tokenize`, `/reconstruct` and, with a generation pipeline, `/generate`.
    """
    if not isinstance(max_image_pixels, int) or max_image_pixels < 64 * 64:
        raise ValueError(f"`max_image_pixels` must be an int >= 4096, got {max_image_pixels!r}.")
    if not isinstance(concurrency_limit, int) or concurrency_limit < 1:
        raise ValueError(f"`concurrency_limit` must be an int >= 1, got {concurrency_limit!r}.")
    tok = TokenizeHandlers(tokenizer_pipeline, concurrency_limit, max_image_pixels)
    gen = GenerateHandlers(generation_pipeline, concurrency_limit) if generation_pipeline is not None else None
    examples = default_examples() if examples is None else list(examples)
    config = tokenizer_pipeline.config
    size = tokenizer_pipeline.flextok.config.image_size

    with gr.Blocks(title="FlexTok demo", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\n"
            f"FlexTok turns an image into an *ordered* sequence of up to **{tok.num_registers}** discrete tokens: the "
            "first tokens carry the coarse content, later ones add detail. Any prefix can be decoded by the "
            f"rectified-flow decoder (images are processed at {size}×{size})."
        )
        with gr.Tab("Tokenize", id="tokenize"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = checked_image(
                        type="pil",
                        image_mode=None,  # alpha, 16-bit gray, palettes: converted by `prepare_image`
                        label="Input image",
                        sources=["upload", "clipboard"],
                        height=256,
                        elem_id="tok-input",
                    )
                    if examples:
                        _image_examples(examples, image)
                    budget = gr.Slider(
                        1,
                        tok.num_registers,
                        value=tok.budgets[len(tok.budgets) // 2],
                        step=1,
                        label="Number of tokens k",
                        elem_id="tok-budget",
                    )
                    with gr.Row():
                        mode = gr.Radio(
                            list(BUDGET_MODES),
                            value=BUDGET_MODES[0],
                            label="Budget",
                            info="auto: the smallest k whose reconstruction reaches the PSNR target",
                            elem_id="tok-mode",
                        )
                        target = gr.Slider(
                            5.0,
                            50.0,
                            value=DEFAULT_TARGET_PSNR,
                            step=0.5,
                            label="Auto: minimum PSNR (dB)",
                            elem_id="tok-target",
                        )
                    with gr.Accordion("Decoder settings", open=False):
                        steps = gr.Slider(
                            1, 50, value=config.num_inference_steps, step=1, label="Decoder steps", elem_id="tok-steps"
                        )
                        guidance = gr.Slider(
                            1.0,
                            15.0,
                            value=float(config.guidance_scale),
                            step=0.5,
                            label="Decoder guidance scale (1 = off)",
                            elem_id="tok-guidance",
                        )
                        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="tok-seed")
                    run = gr.Button("Tokenize & reconstruct", variant="primary", elem_id="tok-run")
                with gr.Column(scale=1):
                    recon = gr.Image(
                        type="pil",
                        format="png",
                        label="Reconstruction from k tokens",
                        interactive=False,
                        height=256,
                        elem_id="tok-recon",
                    )
                    plot = gr.LinePlot(
                        x="tokens",
                        y="PSNR (dB)",
                        sort=[str(b) for b in range(1, tok.num_registers + 1)],
                        x_title="number of tokens",
                        label="PSNR vs number of tokens",
                        height=260,
                        elem_id="tok-plot",
                    )
            gallery = gr.Gallery(
                label="Coarse to fine: " + ", ".join(_tokens_caption(b) for b in tok.budgets),
                columns=min(len(tok.budgets), 8),
                format="png",
                object_fit="contain",
                height="auto",
                elem_id="tok-gallery",
            )
            with gr.Accordion("Token ids and PSNR", open=False):
                ids = gr.JSON(label="Token ids", elem_id="tok-ids")
            inputs = [image, budget, steps, guidance, seed]
            run.click(  # a generator: the gallery and the plot fill budget by budget
                tok.tokenize_stream,
                [*inputs, mode, target],
                [gallery, recon, plot, ids, budget],  # auto mode moves the k slider to the chosen k
                api_name="tokenize",
                concurrency_id="tokenize",
            )
            budget.release(
                tok.reconstruct_if_image, inputs, [recon], api_visibility="private", concurrency_id="tokenize"
            )
            gr.Button(visible=False).click(  # the same as the slider, but callable by API clients
                tok.reconstruct, inputs, [recon], api_name="reconstruct", concurrency_id="tokenize"
            )
        if gen is not None:
            _generate_tab(gen, generation_pipeline, prompt_examples)
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue_size)
    return demo


def _image_examples(examples: Sequence, image_component) -> None:
    """Thumbnails of `(caption, image)` pairs or bare images / paths that fill the input when clicked."""
    images = [[example[1] if isinstance(example, (tuple, list)) else example] for example in examples]
    gr.Examples(images, inputs=[image_component], cache_examples=False, examples_per_page=12, label="Examples")


def _generate_tab(gen: GenerateHandlers, pipeline, prompt_examples) -> None:
    config = pipeline.config
    default_tokens = config.num_tokens if config.num_tokens is not None else gen.max_tokens
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=1):
                if gen.is_text:
                    prompts = list(prompt_examples or DEFAULT_PROMPTS)
                    condition = gr.Textbox(label="Prompt", value=prompts[0] if prompts else "", elem_id="gen-prompt")
                else:
                    names = list(gen.class_ids)
                    condition = gr.Dropdown(names, value=names[0], label="Class", elem_id="gen-class")
                tokens = gr.Slider(
                    1, gen.max_tokens, value=default_tokens, step=1, label="Number of tokens k", elem_id="gen-tokens"
                )
                prior_guidance = gr.Slider(
                    1.0,
                    10.0,
                    value=float(config.prior_guidance_scale),
                    step=0.5,
                    label="Prior guidance scale (1 = off)",
                    elem_id="gen-prior-guidance",
                )
                decoder_guidance = gr.Slider(
                    1.0,
                    15.0,
                    value=float(config.decoder_guidance_scale),
                    step=0.5,
                    label="Decoder guidance scale (1 = off)",
                    elem_id="gen-decoder-guidance",
                )
                count = gr.Slider(1, gen.max_images, value=4, step=1, label="Number of images", elem_id="gen-count")
                previews = gr.Checkbox(
                    value=True,
                    label="Show previews while the prior samples (at 1, 2, 4, ... tokens)",
                    elem_id="gen-previews",
                )
                with gr.Accordion("Decoder settings", open=False):
                    steps = gr.Slider(
                        1, 50, value=config.num_inference_steps, step=1, label="Decoder steps", elem_id="gen-steps"
                    )
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="gen-seed")
                run = gr.Button("Generate", variant="primary", elem_id="gen-run")
            with gr.Column(scale=2):
                gallery = gr.Gallery(
                    label="Generated images", columns=4, format="png", object_fit="contain", elem_id="gen-gallery"
                )
                with gr.Accordion("Token ids", open=False):
                    ids = gr.JSON(label="Token ids", elem_id="gen-ids")
        if gen.is_text:
            gr.Examples([[p] for p in (prompt_examples or DEFAULT_PROMPTS)], inputs=[condition], cache_examples=False)
        run.click(  # a generator: previews sharpen into the final images
            gen.generate_stream,
            [condition, tokens, prior_guidance, decoder_guidance, count, steps, seed, previews],
            [gallery, ids],
            api_name="generate",
            concurrency_id="generate",
        )


def launch_demo(
    demo: gr.Blocks,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    max_file_size: str | int | None = DEFAULT_MAX_FILE_SIZE,
    **launch_kwargs,
):
    """Serves a `build_demo` app with the demo's theme and CSS, an upload size limit and readable errors.

    `host`/`port` None leave the choice to gradio (`GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT`, as on Spaces).
    Other keyword arguments go to `gr.Blocks.launch` (e.g. `prevent_thread_lock=True`, `quiet=True`). Returns
    what `launch` returns: `(app, local_url, share_url)`.
    """
    warnings.filterwarnings("ignore", message=".*Pandas4Warning.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="gradio")
    launch_kwargs.setdefault("ssr_mode", False)  # no Node server
    launch_kwargs.setdefault("show_error", True)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_file_size,
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="pink"),
        css=DEMO_CSS,
        **launch_kwargs,
    )


__all__ = [
    "build_demo",
    "launch_demo",
    "load_demo_pipelines",
    "default_examples",
    "prepare_image",
    "psnr_table",
    "DEFAULT_PROMPTS",
]
