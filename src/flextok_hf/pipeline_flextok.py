"""FlexTokPipeline: image -> ordered 1D tokens -> reconstruction at any token budget (diffusers)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput

from .image_processing_flextok import FlexTokImageProcessor
from .modeling_flextok import FlexTokModel
from .scheduling_flextok import FlexTokFlowScheduler

OUTPUT_TYPES = ("pil", "np", "pt", "raw", "latent")
# Files a saved pipeline consists of (what `from_pretrained` downloads from the Hub): safetensors and configs only.
PIPELINE_FILE_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*/*.json",
    "*/*.safetensors",
    "*/*.txt",
    "*/*.model",
    "README.md",
]


@dataclass
class FlexTokPipelineOutput(BaseOutput):
    """Output of [`FlexTokPipeline`].

    Args:
        images: reconstructions — a list of PIL images (`"pil"`), an array `[B, H, W, 3]` in [0, 1] (`"np"`), a tensor
            `[B, 3, H, W]` in [0, 1] (`"pt"`), the decoder's unclamped output `[B, 3, H, W]` in about [-1, 1]
            (`"raw"`) or the final latents `[B, C, h, w]` (`"latent"`).
        token_ids: the ids each image was decoded from (one 1D `LongTensor` per image, of its budget's length).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    token_ids: list[torch.LongTensor]


@dataclass
class FlexTokCoarseToFineOutput(BaseOutput):
    """Output of [`FlexTokPipeline.coarse_to_fine`].

    Args:
        images: `images[i][j]` is image i reconstructed from its first `budgets[j]` tokens (format by `output_type`;
            for `"np"` an array `[N, J, H, W, 3]`, for `"pt"`/`"raw"` a tensor `[N, J, 3, H, W]`).
        budgets: the token budgets, in column order.
        token_ids: the full id sequence of each image.
    """

    images: list | np.ndarray | torch.Tensor
    budgets: list[int]
    token_ids: list[torch.LongTensor]


def local_pipeline_folder(pretrained_model_name_or_path: str | os.PathLike, kwargs: dict) -> str:
    """The path itself if it is a folder, else a `snapshot_download` of the Hub repo (configs and safetensors only).

    Pops the Hub-only arguments (`revision`, `token`) from `kwargs`; diffusers cannot resolve components from a pip
    package given a Hub id, so pipelines download first and load from the local snapshot.
    """
    path = str(pretrained_model_name_or_path)
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    return snapshot_download(
        path,
        revision=kwargs.pop("revision", None),
        token=kwargs.pop("token", None),
        cache_dir=kwargs.get("cache_dir"),
        local_files_only=kwargs.get("local_files_only", False),
        allow_patterns=PIPELINE_FILE_PATTERNS,
    )


def _check_int(name: str, value, low: int, high: int | None = None):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int, got {value!r}.")
    if value < low or (high is not None and value > high):
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be in {allowed}, got {value}.")


class FlexTokPipeline(DiffusionPipeline):
    r"""
    Tokenize images into FlexTok's ordered 1D token sequences and reconstruct them from any prefix.

    Components:
        flextok ([`FlexTokModel`]): VAE (or pixel space) + encoder + FSQ + rectified-flow decoder.
        scheduler ([`FlexTokFlowScheduler`]): the Euler sampler of the decoder.

    The sampling defaults (`num_inference_steps`, `guidance_scale`, `adaptive_guidance`) are stored in the pipeline's
    config, so a saved pipeline carries the settings its model works best with. The defaults are the official ones
    for the released models: 20 steps, guidance 7.5 with adaptive projected guidance.
    """

    model_cpu_offload_seq = "flextok"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        flextok: FlexTokModel,
        scheduler: FlexTokFlowScheduler,
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        adaptive_guidance: bool = True,
    ):
        super().__init__()
        self.register_modules(flextok=flextok, scheduler=scheduler)
        self.register_to_config(
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, adaptive_guidance=adaptive_guidance
        )
        self.image_processor = FlexTokImageProcessor.from_model_config(flextok.config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a saved pipeline — or a bare `FlexTokModel` folder, wrapped with a default scheduler — from a local
        folder or a Hub id (downloaded with `snapshot_download` first: diffusers cannot resolve components from a pip
        package on its own). Weights are read from safetensors only."""
        path = local_pipeline_folder(pretrained_model_name_or_path, kwargs)
        index_file = os.path.join(path, "model_index.json")
        if cls is FlexTokPipeline and os.path.isfile(index_file):
            with open(index_file, encoding="utf-8") as handle:
                index = json.load(handle)
            if index.get("_class_name") != cls.__name__ and "flextok" in index:
                return cls._from_generation_pipeline(path, index, **kwargs)
        if not os.path.isfile(index_file):
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise ValueError(f"{path!r} holds neither a FlexTokPipeline (model_index.json) nor a FlexTokModel.")
            dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
            model = FlexTokModel.from_pretrained(path, dtype=dtype, use_safetensors=True)
            return cls.from_flextok(model.eval(), **{k: kwargs[k] for k in cls._sampling_keys() if k in kwargs})
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(path, **kwargs)

    @classmethod
    def _from_generation_pipeline(cls, path: str, index: dict, **kwargs) -> FlexTokPipeline:
        """The tokenizer part of a saved generation pipeline (its `flextok` and `scheduler`, and its decoder
        sampling defaults), so one folder serves both tokenizing and generating."""
        dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
        model = FlexTokModel.from_pretrained(os.path.join(path, "flextok"), dtype=dtype, use_safetensors=True)
        scheduler = FlexTokFlowScheduler.from_pretrained(os.path.join(path, "scheduler"))
        defaults = {
            "num_inference_steps": index.get("num_inference_steps"),
            "guidance_scale": index.get("decoder_guidance_scale", index.get("guidance_scale")),
            "adaptive_guidance": index.get("adaptive_guidance"),
        }
        defaults = {key: value for key, value in defaults.items() if value is not None}
        defaults.update({key: kwargs[key] for key in cls._sampling_keys() if key in kwargs})
        return cls(flextok=model.eval(), scheduler=scheduler, **defaults)

    @staticmethod
    def _sampling_keys() -> tuple[str, ...]:
        return ("num_inference_steps", "guidance_scale", "adaptive_guidance")

    @classmethod
    def from_flextok(cls, flextok: FlexTokModel, **config) -> FlexTokPipeline:
        """A pipeline around a model with a default scheduler."""
        return cls(flextok=flextok, scheduler=FlexTokFlowScheduler(), **config)

    # ---------------------------------------------------------------------------------------------------------------
    # User-level steps
    # ---------------------------------------------------------------------------------------------------------------
    def preprocess(self, image) -> torch.Tensor:
        """Images (PIL / numpy / torch / paths, one or a list) -> `pixel_values` `[B, 3, S, S]` in [-1, 1]."""
        if image is None:
            raise ValueError("`image` is required.")
        pixel_values = self.image_processor(image, return_tensors="pt")["pixel_values"]
        return pixel_values.to(self._execution_device, self.flextok.dtype)

    @torch.no_grad()
    def tokenize(self, images, num_tokens=None, generator: torch.Generator | None = None) -> list[torch.LongTensor]:
        """Images -> one 1D id tensor per image, truncated to `num_tokens` (an int or one int per image)."""
        pixel_values = self.preprocess(images)
        token_ids = self.flextok.tokenize(pixel_values, generator=generator)
        budgets = self._budgets(num_tokens, len(token_ids))
        return [ids[:k] for ids, k in zip(token_ids, budgets)]

    def detokenize(
        self,
        token_ids,
        num_inference_steps: int | None = None,
        guidance_scale: float | Callable | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        """Id sequences (mixed lengths allowed) -> images in `output_type` format."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        config = self.config
        steps = config.num_inference_steps if num_inference_steps is None else num_inference_steps
        step_callback = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        latents = self.flextok.detokenize(
            token_ids,
            num_inference_steps=steps,
            guidance_scale=config.guidance_scale if guidance_scale is None else guidance_scale,
            adaptive_guidance=config.adaptive_guidance if adaptive_guidance is None else adaptive_guidance,
            generator=generator,
            latents=latents,
            scheduler=self.scheduler,
            output_type="latent",
            callback_on_step_end=step_callback,
            progress_bar=lambda iterable: self.progress_bar(iterable),
        )
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        return images

    def postprocess(self, latents: torch.Tensor, output_type: str = "pil"):
        if output_type == "latent":
            return latents
        images = self.flextok.decode_latents(latents)
        if output_type == "raw":
            return images
        return self.image_processor.postprocess(images, output_type=output_type)

    # ---------------------------------------------------------------------------------------------------------------
    # __call__
    # ---------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        image,
        num_tokens: int | list[int] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | Callable | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> FlexTokPipelineOutput | tuple:
        r"""
        Reconstruct images from their first `num_tokens` FlexTok tokens.

        Args:
            image: one image or a list (PIL, numpy, torch or file paths; any size and mode).
            num_tokens: token budget — None (all K), an int in [1, K], or a list with one int per image.
            num_inference_steps, guidance_scale, adaptive_guidance: decoder sampling (None = the pipeline's config).
            generator: `torch.Generator` (or one per image) for the initial noise; `latents` gives the noise itself.
            output_type: `"pil"`, `"np"`, `"pt"`, `"raw"` (unclamped decoder output) or `"latent"`.
            callback_on_step_end: `f(pipe, step_index, timestep, callback_kwargs) -> dict`, called after each step
                with the tensors named in `callback_on_step_end_tensor_inputs` (default `["latents"]`).

        Returns:
            [`FlexTokPipelineOutput`] (or a tuple `(images, token_ids)` when `return_dict=False`).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        token_ids = self.tokenize(image, num_tokens=num_tokens, generator=None)
        images = self.detokenize(
            token_ids,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            adaptive_guidance=adaptive_guidance,
            generator=generator,
            latents=latents,
            output_type=output_type,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        if not return_dict:
            return images, token_ids
        return FlexTokPipelineOutput(images=images, token_ids=token_ids)

    @torch.no_grad()
    def coarse_to_fine(
        self,
        image,
        budgets: list[int] | tuple[int, ...] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | Callable | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
    ) -> FlexTokCoarseToFineOutput:
        """One reconstruction per budget (default 1, 2, 4, ..., K) for each image, all in one batch, every budget of
        an image starting from the same noise."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        token_ids = self.tokenize(image)
        budgets = list(budgets) if budgets is not None else self.default_budgets()
        if len(budgets) == 0:
            raise ValueError("`budgets` must contain at least one token budget.")
        for index, k in enumerate(budgets):
            _check_int(f"budgets[{index}]", k, 1, self.flextok.config.num_registers)
        noise = self.flextok.prepare_noise(len(token_ids), generator)
        batch_ids = [ids[:k] for ids in token_ids for k in budgets]
        batch_noise = noise.repeat_interleave(len(budgets), dim=0)
        images = self.detokenize(
            batch_ids,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            adaptive_guidance=adaptive_guidance,
            latents=batch_noise,
            output_type=output_type,
        )
        num_budgets = len(budgets)
        if isinstance(images, list):
            grouped = [images[i : i + num_budgets] for i in range(0, len(images), num_budgets)]
        else:
            grouped = images.reshape(len(token_ids), num_budgets, *images.shape[1:])
        return FlexTokCoarseToFineOutput(images=grouped, budgets=budgets, token_ids=token_ids)

    # ---------------------------------------------------------------------------------------------------------------
    # Helpers
    # ---------------------------------------------------------------------------------------------------------------
    def default_budgets(self) -> list[int]:
        """1, 2, 4, ... up to K (K included even when it is not a power of two)."""
        num_registers = self.flextok.config.num_registers
        budgets, k = [], 1
        while k < num_registers:
            budgets.append(k)
            k *= 2
        return budgets + [num_registers]

    def _budgets(self, num_tokens, batch_size: int) -> list[int]:
        num_registers = self.flextok.config.num_registers
        if num_tokens is None:
            return [num_registers] * batch_size
        if isinstance(num_tokens, (list, tuple)):
            if len(num_tokens) != batch_size:
                raise ValueError(
                    f"`num_tokens` has {len(num_tokens)} entries but {batch_size} images were given; pass one budget "
                    "per image or a single int."
                )
            for index, k in enumerate(num_tokens):
                _check_int(f"num_tokens[{index}]", k, 1, num_registers)
            return [int(k) for k in num_tokens]
        _check_int("num_tokens", num_tokens, 1, num_registers)
        return [int(num_tokens)] * batch_size

    def _step_callback(self, callback_on_step_end, tensor_inputs):
        if callback_on_step_end is None:
            return None
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = list(tensor_inputs or ["latents"])
        unknown = [name for name in tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has {unknown}; allowed: {self._callback_tensor_inputs}."
            )

        def step_callback(step_index, timestep, latents):
            callback_kwargs = {}
            for name in tensor_inputs:  # a plain loop: `locals()` in a comprehension breaks on Python 3.11
                callback_kwargs[name] = latents
            outputs = callback_on_step_end(self, step_index, timestep, callback_kwargs) or {}
            return outputs.get("latents", latents)

        return step_callback


__all__ = ["FlexTokPipeline", "FlexTokPipelineOutput", "FlexTokCoarseToFineOutput"]
