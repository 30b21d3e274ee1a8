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

import warnings
from collections.abc import Sequence

import gradio as gr
import PIL.Image
import torch

from .demo_handlers import (  # noqa: F401 (re-exported: the public names of flextok_hf.demo)
    _HIGH_BIT_MODES,
    BUDGET_MODES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_TARGET_PSNR,
    MAX_SEED,
    MAX_UPSCALE_FACTOR,
    GenerateHandlers,
    PipelinePool,
    TokenizeHandlers,
    _as_float,
    _as_int,
    _to_pil,
    _tokens_caption,
    _user_errors,
    checked_image,
    prepare_image,
    psnr_table,
)
from .space import bundled_examples

DEFAULT_MAX_FILE_SIZE = "10mb"
DEFAULT_PROMPTS = ("handwritten digit seven", "a giraffe", "an elephant", "handwritten digit three")
# Tiny model outputs (16-64 px) are shown enlarged with crisp pixels.
DEMO_CSS = """
#tok-gallery img, #gen-gallery img, #tok-recon img, #tok-input img { image-rendering: pixelated; }
#tok-recon img, #tok-input img { width: 100%; height: 100%; object-fit: contain; }
#tok-gallery .grid-wrap, #gen-gallery .grid-wrap { min-height: 0 !important; }
"""


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
    return bundled_examples()


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
                        target = _half_step_slider(
                            5.0, 50.0, DEFAULT_TARGET_PSNR, "Auto: minimum PSNR (dB)", "tok-target"
                        )
                    with gr.Accordion("Decoder settings", open=False):
                        steps = gr.Slider(
                            1, 50, value=config.num_inference_steps, step=1, label="Decoder steps", elem_id="tok-steps"
                        )
                        guidance = _half_step_slider(
                            1.0, 15.0, float(config.guidance_scale), "Decoder guidance scale (1 = off)", "tok-guidance"
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


def _half_step_slider(minimum: float, maximum: float, value: float, label: str, elem_id: str):
    """A float slider in steps of 0.5 (the PSNR target and the guidance scales)."""
    return gr.Slider(minimum, maximum, value=value, step=0.5, label=label, elem_id=elem_id)


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
                prior_guidance = _half_step_slider(
                    1.0,
                    10.0,
                    float(config.prior_guidance_scale),
                    "Prior guidance scale (1 = off)",
                    "gen-prior-guidance",
                )
                decoder_guidance = _half_step_slider(
                    1.0,
                    15.0,
                    float(config.decoder_guidance_scale),
                    "Decoder guidance scale (1 = off)",
                    "gen-decoder-guidance",
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
