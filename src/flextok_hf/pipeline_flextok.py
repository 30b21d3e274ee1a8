"""FlexTokPipeline: image -> ordered 1D tokens -> reconstruction at any token budget (diffusers)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from .adaptive_budget import AUTO, check_auto_arguments
from .configuration_flextok import vae_dtype_name
from .guidance import GuidanceConfig
from .image_processing_flextok import FlexTokImageProcessor
from .modeling_flextok import FlexTokModel
from .pipeline_flextok_auto_budget import FlexTokAutoBudgetMixin
from .pipeline_flextok_checks import _check_guidance_scale, _check_int, _check_output_type, _sampling_steps
from .pipeline_flextok_coarse_to_fine import FlexTokCoarseToFineMixin
from .pipeline_flextok_output import (
    OUTPUT_TYPES,
    FlexTokCoarseToFineOutput,
    FlexTokPipelineOutput,
    FlexTokStreamOutput,
)
from .pipeline_loading import PIPELINE_FILE_PATTERNS, local_pipeline_folder
from .scheduling_flextok import FlexTokFlowScheduler, load_flow_scheduler


class FlexTokPipeline(FlexTokCoarseToFineMixin, FlexTokAutoBudgetMixin, DiffusionPipeline):
    r"""
    Tokenize images into FlexTok's ordered 1D token sequences and reconstruct them from any prefix.

    Components:
        flextok ([`FlexTokModel`]): VAE (or pixel space) + encoder + FSQ + rectified-flow decoder.
        scheduler ([`FlexTokFlowScheduler`]): the decoder's sampler — FlexTok's Euler grid (optionally shifted),
            [`FlexTokFlowHeunScheduler`] (Heun on that grid) or a diffusers flow-matching scheduler; swap it with
            `pipe.scheduler = FlexTokFlowScheduler.from_config(pipe.scheduler.config, shift=1.0)` etc.

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
        tokenizer part of a saved text-/class-to-image pipeline. Weights are read from safetensors only.
        `vae_dtype="bfloat16"` runs the FlexTok VAE in bf16 (see `FlexTokModel.set_vae_dtype`)."""
        from .loading import hub_kwargs, load_official_model, resolve_flextok_source

        vae_dtype = kwargs.pop("vae_dtype", None)
        if vae_dtype is not None:
            vae_dtype_name(vae_dtype)  # a bad value fails before any weight is read
            pipe = cls.from_pretrained(pretrained_model_name_or_path, **kwargs)
            pipe.flextok.set_vae_dtype(vae_dtype)
            return pipe
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
        scheduler = load_flow_scheduler(os.path.join(path, "scheduler"))
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
    def from_flextok(cls, flextok: FlexTokModel, scheduler=None, **config) -> FlexTokPipeline:
        """A pipeline around a model with `scheduler` (default: a `FlexTokFlowScheduler`, the official sampler)."""
        return cls(flextok=flextok, scheduler=scheduler if scheduler is not None else FlexTokFlowScheduler(), **config)

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

    @torch.no_grad()
    def detokenize(
        self,
        token_ids,
        num_inference_steps: int | None = None,
        guidance_scale: float | Callable | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        apg_momentum: float = -0.5,
        apg_norm_threshold: float = 2.5,
    ):
        """Id sequences (mixed lengths allowed) -> images in `output_type` format: the decoder's sampling loop.

        Args:
            token_ids: a list of 1D id tensors/lists (one per image, 1 to K ids each) or a `[B, k]` tensor.
            num_inference_steps: solver steps on the scheduler's grid (None = the pipeline's config); the decoder
                runs once per step with Euler, `2 * num_inference_steps - 1` times with Heun (each CFG pair batched).
            guidance_scale: guidance scale w (a float or a callable of t; 1 disables guidance; None = config).
            adaptive_guidance: APG (momentum `apg_momentum`, norm threshold `apg_norm_threshold`) instead of CFG.
            generator / latents: the initial noise source (one draw per image), or the noise itself `[B, C, h, w]`.
            output_type: `"pil"`, `"np"`, `"pt"`, `"raw"` (unclamped `[B, 3, H, W]`) or `"latent"` (`[B, C, h, w]`).
            callback_on_step_end: `f(pipe, step_index, timestep, callback_kwargs) -> dict` (diffusers' signature; a
                `PipelineCallback` works too), called after each solver step (a full Heun step) with the tensors named in
                `callback_on_step_end_tensor_inputs` (default `["latents"]`); a returned `"latents"` replaces them.
        """
        _check_output_type(output_type)
        config = self.config
        steps = _sampling_steps(config, num_inference_steps)
        guidance_scale = config.guidance_scale if guidance_scale is None else guidance_scale
        _check_guidance_scale("guidance_scale", guidance_scale)
        guidance = GuidanceConfig(
            guidance_scale=guidance_scale,
            adaptive_guidance=bool(config.adaptive_guidance if adaptive_guidance is None else adaptive_guidance),
            apg_momentum=apg_momentum,
            apg_norm_threshold=apg_norm_threshold,
        )
        tensor_inputs = self._callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)

        quants, keep_k = self.flextok.prepare_token_ids(token_ids)
        latents = self.flextok.prepare_noise(quants.shape[0], generator, latents)
        self.scheduler.set_timesteps(steps, device=latents.device)
        self.scheduler.set_begin_index(0)
        # One decoder evaluation per entry of `timesteps`: `steps` for Euler, `2 * steps - 1` for Heun (order 2),
        # whose timesteps/sigmas interleave each step's predictor and corrector; `sigmas[i]` is the noise level of
        # the latents evaluated at entry i. A solver step ends after every `order`-th evaluation and at the last one.
        timesteps, order = self.scheduler.timesteps, getattr(self.scheduler, "order", 1)
        step_index = 0
        with self.progress_bar(total=steps) as bar:
            for i, t in enumerate(timesteps):
                if i % order == 0:
                    step_timestep = t  # the timestep the solver step starts from
                sigma = self.scheduler.sigmas[i].clamp(max=1.0)  # shifted grids may round sigma = 1 up
                velocity = self.flextok.guided_velocity(latents, sigma, quants, keep_k, guidance)
                latents = self.scheduler.step(velocity, t, latents).prev_sample
                if (i + 1) % order != 0 and i != len(timesteps) - 1:
                    continue  # inside a Heun step: the latents are the predictor, not a point of the trajectory
                bar.update()
                if callback_on_step_end is not None:
                    callback_kwargs = dict.fromkeys(tensor_inputs, latents)  # "latents" is the only tensor offered
                    outputs = callback_on_step_end(self, step_index, step_timestep, callback_kwargs) or {}
                    latents = outputs.pop("latents", latents)
                step_index += 1

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
        _check_output_type(output_type)
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

    def _callback_inputs(self, callback_on_step_end, tensor_inputs) -> list[str]:
        """The tensor names handed to `callback_on_step_end` (a `PipelineCallback` brings its own)."""
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = list(tensor_inputs or ["latents"])
        unknown = [name for name in tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has {unknown}; allowed: {self._callback_tensor_inputs}."
            )
        return tensor_inputs


__all__ = [
    "OUTPUT_TYPES",
    "PIPELINE_FILE_PATTERNS",
    "FlexTokPipeline",
    "FlexTokPipelineOutput",
    "FlexTokCoarseToFineOutput",
    "FlexTokStreamOutput",
    "local_pipeline_folder",
]
