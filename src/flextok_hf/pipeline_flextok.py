"""FlexTokPipeline: image -> ordered 1D tokens -> reconstruction at any token budget (diffusers)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput

from . import adaptive_budget
from .adaptive_budget import (
    AUTO,
    FlexTokAutoBudgetOutput,
    candidate_budgets,
    check_auto_arguments,
    check_quality_metric,
    check_quality_target,
)
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
        num_tokens: the budget of each image (with `num_tokens="auto"`: the chosen one).
        quality: with `num_tokens="auto"`, the quality metric of each returned reconstruction (e.g. PSNR in dB).
        target_met: with `num_tokens="auto"`, whether each image met its quality target (False: it got the largest
            allowed budget without reaching it).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    token_ids: list[torch.LongTensor]
    num_tokens: list[int] | None = None
    quality: list[float] | None = None
    target_met: list[bool] | None = None


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


@dataclass
class FlexTokStreamOutput(BaseOutput):
    """One step of a streamed output ([`FlexTokPipeline.stream_coarse_to_fine`], the generation pipelines' `stream`).

    Args:
        images: the reconstructions (or previews) of all images from their first `num_tokens` ids (format by
            `output_type`, as in [`FlexTokPipelineOutput`]).
        token_ids: the ids each image was decoded from (length `num_tokens`).
        num_tokens: the budget of this step.
        is_final: True for the last step (for generation: the final images, equal to the non-streamed ones).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    token_ids: list[torch.LongTensor]
    num_tokens: int
    is_final: bool


def local_pipeline_folder(pretrained_model_name_or_path: str | os.PathLike, kwargs: dict) -> str:
    """The path itself if it is a folder, else a `snapshot_download` of the Hub repo (configs and safetensors only).

    Pops the Hub-only arguments (`revision`, `token`) from `kwargs`; diffusers cannot resolve components from a pip
    package given a Hub id, so pipelines download first and load from the local snapshot.
    """
    path = os.path.expanduser(os.fspath(pretrained_model_name_or_path))
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    from .loading import hub_errors, looks_like_local_path

    if looks_like_local_path(path):
        raise FileNotFoundError(f"No such folder: {path!r}. Pass an existing pipeline folder or a Hub id.")
    with hub_errors(path):
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
        """Load a saved pipeline from a local folder or a Hub id (downloaded with `snapshot_download` first: diffusers
        cannot resolve components from a pip package on its own). Also accepts what `FlexTokModel.from_pretrained`
        accepts — a bare `FlexTokModel` folder, or an official apple/ml-flextok checkpoint (folder, `.safetensors`
        file or Hub id; converted in memory) — wrapped with a default scheduler; `FlexTokPipeline` also takes the
        tokenizer part of a saved text-/class-to-image pipeline. Weights are read from safetensors only."""
        from .loading import hub_kwargs, load_official_model, resolve_flextok_source

        source = resolve_flextok_source(pretrained_model_name_or_path, **hub_kwargs(kwargs))
        if source.kind != "pipeline":
            dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
            sampling = {k: kwargs[k] for k in cls._sampling_keys() if k in kwargs}
            if source.kind == "official":
                model = load_official_model(
                    source, dtype=dtype, vae_config=kwargs.get("vae_config"), vae=kwargs.get("vae")
                )
            else:
                model = FlexTokModel.from_pretrained(
                    os.fspath(pretrained_model_name_or_path), dtype=dtype, use_safetensors=True, **hub_kwargs(kwargs)
                )
            return cls.from_flextok(model.eval(), **sampling)
        path = local_pipeline_folder(pretrained_model_name_or_path, kwargs)
        index_file = os.path.join(path, "model_index.json")
        if cls is FlexTokPipeline:
            with open(index_file, encoding="utf-8") as handle:
                index = json.load(handle)
            if index.get("_class_name") != cls.__name__ and "flextok" in index:
                return cls._from_generation_pipeline(path, index, **kwargs)
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
    def preprocess(self, image, input_range=None) -> torch.Tensor:
        """Images (PIL / numpy / torch / paths, one or a list) -> `pixel_values` `[B, 3, S, S]` in [-1, 1]. Float
        inputs are read in `input_range` ("[0, 1]" by default, or "[-1, 1]"; see `FlexTokImageProcessor`)."""
        if image is None:
            raise ValueError("`image` is required.")
        pixel_values = self.image_processor(image, input_range=input_range, return_tensors="pt")["pixel_values"]
        return pixel_values.to(self._execution_device, self.flextok.dtype)

    @torch.no_grad()
    def tokenize(
        self,
        images,
        num_tokens: int | list[int] | str | None = None,
        generator: torch.Generator | None = None,
        quality_target: float | list[float] | None = None,
        quality_metric: str | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        num_inference_steps: int | None = None,
        search_num_inference_steps: int | None = None,
        guidance_scale: float | Callable | None = None,
        adaptive_guidance: bool | None = None,
        feature_network: torch.nn.Module | None = None,
        input_range=None,
    ) -> list[torch.LongTensor]:
        """Images -> one 1D id tensor per image, truncated to `num_tokens`: an int, one int per image, or `"auto"`.

        With `num_tokens="auto"` each image keeps the smallest budget whose reconstruction meets `quality_target`
        (see [`~FlexTokPipeline.choose_num_tokens`], which takes the remaining arguments; `generator` then seeds
        the decoder noise of that search). Otherwise `generator` is only used by VAEs that sample their posterior.
        `input_range` is the value range of float images: "[0, 1]" (default) or "[-1, 1]".
        """
        auto = dict(
            quality_target=quality_target,
            quality_metric=quality_metric,
            min_tokens=min_tokens,
            max_tokens=max_tokens,
            num_inference_steps=num_inference_steps,
            search_num_inference_steps=search_num_inference_steps,
            guidance_scale=guidance_scale,
            adaptive_guidance=adaptive_guidance,
            feature_network=feature_network,
        )
        check_auto_arguments(num_tokens, **auto)
        if num_tokens == AUTO:
            result = self.choose_num_tokens(images, generator=generator, input_range=input_range, **auto)
            return [ids[:k] for ids, k in zip(result.token_ids, result.num_tokens)]
        pixel_values = self.preprocess(images, input_range)
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

    @torch.no_grad()
    def choose_num_tokens(
        self,
        image=None,
        quality_target: float | list[float] | None = None,
        quality_metric: str | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        num_inference_steps: int | None = None,
        search_num_inference_steps: int | None = None,
        guidance_scale: float | Callable | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        feature_network: torch.nn.Module | None = None,
        pixel_values: torch.Tensor | None = None,
        input_range=None,
    ) -> FlexTokAutoBudgetOutput:
        r"""
        Per image, the smallest token budget whose reconstruction meets a quality target (`num_tokens="auto"`).

        Tokenizes once, decodes the candidate budgets (1, 2, 4, ..., K within `[min_tokens, max_tokens]`) of all
        images in one mixed-budget batch with `search_num_inference_steps` Euler steps, then decodes each image at
        full `num_inference_steps` from its pick, moving up a candidate while that reconstruction misses the target.
        Every decode of an image starts from the same noise. The algorithm is described in
        `flextok_hf.adaptive_budget`.

        Args:
            image: one image or a list (or pass processed `pixel_values` `[N, 3, S, S]` in [-1, 1] instead).
            quality_target: a number or one per image: a minimum PSNR in dB in (0, 100] for `quality_metric="psnr"`
                (the default), a maximum cosine feature distance in [0, 2] for `"feature_distance"`.
            min_tokens, max_tokens: bounds of the budget (default 1 and K); an image that cannot meet its target
                gets `max_tokens` and `target_met=False`.
            num_inference_steps, guidance_scale, adaptive_guidance: decoder sampling (None = the pipeline's config).
            search_num_inference_steps: Euler steps of the search, in [1, num_inference_steps] (default
                `max(1, num_inference_steps // 10)`); equal to `num_inference_steps` gives the exact smallest
                sufficient budget without verification decodes.
            generator / latents: the decoder noise (one draw per image, as in `__call__`).
            feature_network: for `"feature_distance"`: images `[B, 3, H, W]` in [-1, 1] -> features `[B, D]`
                (default: the classifier shipped with the package).
            input_range: the value range of float images, "[0, 1]" (default) or "[-1, 1]".

        Returns:
            [`~flextok_hf.adaptive_budget.FlexTokAutoBudgetOutput`] (chosen `num_tokens`, `quality`, `target_met`,
            the full `token_ids`, the final `latents` and `images`, the `search_quality` matrix).
        """
        if (image is None) == (pixel_values is None):
            raise ValueError("Pass exactly one of `image` or `pixel_values`.")
        if pixel_values is None:
            pixel_values = self.preprocess(image, input_range)
        else:
            pixel_values = self.flextok._check_pixel_values(pixel_values)
            pixel_values = pixel_values.to(self._execution_device, self.flextok.dtype)
        token_ids = self.flextok.tokenize(pixel_values)
        quality_metric = check_quality_metric("psnr" if quality_metric is None else quality_metric)
        targets = check_quality_target(quality_target, quality_metric, len(token_ids))
        budgets = candidate_budgets(self.flextok.config.num_registers, min_tokens, max_tokens)
        config = self.config
        steps = config.num_inference_steps if num_inference_steps is None else num_inference_steps
        _check_int("num_inference_steps", steps, 1)
        if search_num_inference_steps is not None:
            _check_int("search_num_inference_steps", search_num_inference_steps, 1, steps)
        noise = self.flextok.prepare_noise(len(token_ids), generator, latents)
        result = adaptive_budget.choose_num_tokens(
            self,
            pixel_values,
            token_ids,
            noise,
            targets,
            quality_metric,
            budgets,
            num_inference_steps=steps,
            search_num_inference_steps=search_num_inference_steps,
            guidance_scale=config.guidance_scale if guidance_scale is None else guidance_scale,
            adaptive_guidance=config.adaptive_guidance if adaptive_guidance is None else adaptive_guidance,
            feature_network=feature_network,
        )
        self.maybe_free_model_hooks()
        return result

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
        quality_target: float | list[float] | None = None,
        quality_metric: str | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        search_num_inference_steps: int | None = None,
        feature_network: torch.nn.Module | None = None,
        input_range=None,
    ) -> FlexTokPipelineOutput | tuple:
        r"""
        Reconstruct images from their first `num_tokens` FlexTok tokens.

        Args:
            image: one image or a list (PIL, numpy, torch or file paths; any size and mode).
            num_tokens: token budget — None (all K), an int in [1, K], a list with one int per image, or `"auto"`:
                per image the smallest budget whose reconstruction meets `quality_target` (with `quality_metric`,
                `min_tokens`, `max_tokens`, `search_num_inference_steps`, `feature_network`; see
                [`~FlexTokPipeline.choose_num_tokens`]); the output then also holds `quality` and `target_met`.
            num_inference_steps, guidance_scale, adaptive_guidance: decoder sampling (None = the pipeline's config).
            generator: `torch.Generator` (or one per image) for the initial noise; `latents` gives the noise itself.
            output_type: `"pil"`, `"np"`, `"pt"`, `"raw"` (unclamped decoder output) or `"latent"`.
            callback_on_step_end: `f(pipe, step_index, timestep, callback_kwargs) -> dict`, called after each step
                with the tensors named in `callback_on_step_end_tensor_inputs` (default `["latents"]`).
            input_range: the value range of float images, `"[0, 1]"` (default) or `"[-1, 1]"` (also `(-1, 1)`); PIL
                and uint8 images are always [0, 255]. Values outside it raise a `ValueError`.

        Returns:
            [`FlexTokPipelineOutput`] (or a tuple `(images, token_ids)` when `return_dict=False`).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        auto = dict(
            quality_target=quality_target,
            quality_metric=quality_metric,
            min_tokens=min_tokens,
            max_tokens=max_tokens,
            search_num_inference_steps=search_num_inference_steps,
            feature_network=feature_network,
        )
        check_auto_arguments(num_tokens, **auto)
        if num_tokens == AUTO:
            if callback_on_step_end is not None:
                raise ValueError("`callback_on_step_end` does not apply with `num_tokens='auto'`.")
            result = self.choose_num_tokens(
                image,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                adaptive_guidance=adaptive_guidance,
                generator=generator,
                latents=latents,
                input_range=input_range,
                **auto,
            )
            images = self.postprocess(result.latents, output_type)
            token_ids = [ids[:k] for ids, k in zip(result.token_ids, result.num_tokens)]
            if not return_dict:
                return images, token_ids
            return FlexTokPipelineOutput(
                images=images,
                token_ids=token_ids,
                num_tokens=result.num_tokens,
                quality=result.quality,
                target_met=result.target_met,
            )
        token_ids = self.tokenize(image, num_tokens=num_tokens, generator=None, input_range=input_range)
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
        return FlexTokPipelineOutput(images=images, token_ids=token_ids, num_tokens=[len(ids) for ids in token_ids])

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
        stream: bool = False,
        input_range=None,
    ) -> FlexTokCoarseToFineOutput | Iterator[FlexTokStreamOutput]:
        """One reconstruction per budget (default 1, 2, 4, ..., K) for each image, all in one batch, every budget of
        an image starting from the same noise. With `stream=True`, returns [`~FlexTokPipeline.stream_coarse_to_fine`]
        (a generator yielding each budget as soon as it is decoded) instead. `input_range`: as in `__call__`."""
        if stream:
            return self.stream_coarse_to_fine(
                image, budgets, num_inference_steps, guidance_scale, adaptive_guidance, generator, output_type,
                input_range=input_range,
            )  # fmt: skip
        token_ids, budgets, noise = self._coarse_to_fine_inputs(image, budgets, generator, output_type, input_range)
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

    def stream_coarse_to_fine(
        self,
        image,
        budgets: list[int] | tuple[int, ...] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | Callable | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        input_range=None,
    ) -> Iterator[FlexTokStreamOutput]:
        """[`~FlexTokPipeline.coarse_to_fine`] as a generator: the images are tokenized once, then each budget (in
        the order given) is decoded as one batch and yielded right away as a [`FlexTokStreamOutput`] (its `images`
        are those of every input image at that budget). Same noise per image as `coarse_to_fine`, so the streamed
        reconstructions equal the non-streamed ones (up to float rounding of the different batch layout). The inputs
        are checked and tokenized when this is called; decoding happens while iterating."""
        token_ids, budgets, noise = self._coarse_to_fine_inputs(image, budgets, generator, output_type, input_range)
        return self._stream_budgets(
            token_ids, budgets, noise, num_inference_steps, guidance_scale, adaptive_guidance, output_type
        )

    @torch.no_grad()
    def _stream_budgets(
        self, token_ids, budgets, noise, num_inference_steps, guidance_scale, adaptive_guidance, output_type
    ) -> Iterator[FlexTokStreamOutput]:
        for index, k in enumerate(budgets):
            prefixes = [ids[:k] for ids in token_ids]
            images = self.detokenize(
                prefixes,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                adaptive_guidance=adaptive_guidance,
                latents=noise,
                output_type=output_type,
            )
            yield FlexTokStreamOutput(
                images=images, token_ids=prefixes, num_tokens=k, is_final=index == len(budgets) - 1
            )

    def _coarse_to_fine_inputs(self, image, budgets, generator, output_type, input_range=None):
        """-> (all K ids per image, checked budgets, one initial noise per image)."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        token_ids = self.tokenize(image, input_range=input_range)
        budgets = list(budgets) if budgets is not None else self.default_budgets()
        if len(budgets) == 0:
            raise ValueError("`budgets` must contain at least one token budget.")
        for index, k in enumerate(budgets):
            _check_int(f"budgets[{index}]", k, 1, self.flextok.config.num_registers)
        return token_ids, budgets, self.flextok.prepare_noise(len(token_ids), generator)

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


__all__ = ["FlexTokPipeline", "FlexTokPipelineOutput", "FlexTokCoarseToFineOutput", "FlexTokStreamOutput"]
