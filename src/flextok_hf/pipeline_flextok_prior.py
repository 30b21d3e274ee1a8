"""The shared base of the generation pipelines: a FlexTok prior samples k ids per image, the decoder renders them
(optionally streaming decoded previews while the prior samples, see `flextok_hf.streaming`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from diffusers import DiffusionPipeline

from .image_processing_flextok import FlexTokImageProcessor
from .pipeline_flextok import (
    FlexTokPipeline,
    FlexTokPipelineOutput,
    FlexTokStreamOutput,
    local_pipeline_folder,
)
from .pipeline_flextok_checks import _check_guidance_scale, _check_int
from .streaming import preview_budgets, stream_prior

# the arguments of `__call__` handed on to `detokenize` as they are (`guidance_scale` is `decoder_guidance_scale`)
_DECODING_ARGS = (
    "num_inference_steps",
    "adaptive_guidance",
    "generator",
    "latents",
    "output_type",
    "callback_on_step_end",
    "callback_on_step_end_tensor_inputs",
)


def _local_folder(pretrained_model_name_or_path, kwargs: dict) -> str:
    """A local pipeline folder: the path itself, or a Hub snapshot (configs and safetensors only)."""
    path = local_pipeline_folder(pretrained_model_name_or_path, kwargs)
    if not os.path.isfile(os.path.join(path, "model_index.json")):
        raise ValueError(f"`pretrained_model_name_or_path`: {path!r} holds no saved pipeline (model_index.json).")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Shared base
# ---------------------------------------------------------------------------------------------------------------------
class _FlexTokPriorPipeline(FlexTokPipeline):
    """Common part of the prior pipelines: sampling defaults, checks, prior sampling, decoding, loading."""

    def _init_pipeline(self, modules: dict, **sampling):
        DiffusionPipeline.__init__(self)
        self.register_modules(**modules)
        self.register_to_config(**sampling)
        self.image_processor = FlexTokImageProcessor.from_model_config(modules["flextok"].config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Loads a saved pipeline from a local folder or a Hub id (snapshot first; safetensors only)."""
        path = _local_folder(pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(path, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """Saves every component in its subfolder (safetensors only) and `model_index.json`."""
        if not safe_serialization:
            raise ValueError("`safe_serialization` must be True: flextok_hf saves weights as safetensors only.")
        # a str: diffusers derives a default `repo_id` with str methods even when one is given
        return super().save_pretrained(os.fspath(save_directory), safe_serialization=True, **kwargs)

    def check_components(self, condition_type: str):
        prior, flextok = self.prior.config, self.flextok.config
        if prior.condition_type != condition_type:
            raise ValueError(
                f"{type(self).__name__} needs a prior with condition_type={condition_type!r}, got "
                f"{prior.condition_type!r}."
            )
        if prior.codebook_size != flextok.codebook_size or prior.max_num_tokens > flextok.num_registers:
            raise ValueError(
                f"The prior (codebook_size={prior.codebook_size}, max_num_tokens={prior.max_num_tokens}) does not "
                f"match the FlexTok model (codebook_size={flextok.codebook_size}, num_registers="
                f"{flextok.num_registers})."
            )

    def _sampling_defaults(self, num_tokens, prior_guidance_scale, decoder_guidance_scale, copies: tuple[str, int]):
        """Checks the sampling arguments shared by both pipelines; None takes the pipeline's config."""
        _check_int(*copies, 1)
        num_tokens = self.config.num_tokens if num_tokens is None else num_tokens
        num_tokens = self.prior.config.max_num_tokens if num_tokens is None else num_tokens
        _check_int("num_tokens", num_tokens, 1, self.prior.config.max_num_tokens)
        scale = self.config.prior_guidance_scale if prior_guidance_scale is None else prior_guidance_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (scale == 0 or scale >= 1):
            raise ValueError(f"`prior_guidance_scale` must be 0 (unconditional), 1 (off) or > 1, got {scale!r}.")
        decoder_scale = (
            self.config.decoder_guidance_scale if decoder_guidance_scale is None else decoder_guidance_scale
        )
        _check_guidance_scale("decoder_guidance_scale", decoder_scale)
        return int(num_tokens), float(scale), decoder_scale

    @staticmethod
    def _prior_generator(generator, batch_size: int) -> torch.Generator | None:
        """The prior draws one seed from the (first) generator; the decoder then uses all of them for the noise."""
        if isinstance(generator, list):
            if len(generator) != batch_size:
                raise ValueError(f"`generator` is a list of {len(generator)}; pass one per image ({batch_size}).")
            return generator[0]
        return generator

    @staticmethod
    def _output(images, token_ids: torch.Tensor, return_dict: bool):
        token_ids = list(token_ids.cpu().unbind(0))
        if not return_dict:
            return images, token_ids
        return FlexTokPipelineOutput(images=images, token_ids=token_ids)

    def _generate(self, condition: dict, batch_size: int, args: dict):
        """Steps 3-4 of both pipelines: the prior samples k ids per image from `condition` (its condition inputs), the
        decoder renders them; with `stream`, a generator of [`FlexTokStreamOutput`]s instead (see `_stream`). `args`
        holds the checked arguments of `__call__` by name (its `locals()`)."""
        prior_kwargs = dict(
            condition,
            generator=self._prior_generator(args["generator"], batch_size),
            guidance_scale=args["prior_guidance_scale"],
            **{key: args[key] for key in ("num_tokens", "temperature", "top_k", "top_p")},
        )
        decoding = {key: args[key] for key in _DECODING_ARGS}
        decoding["guidance_scale"] = args["decoder_guidance_scale"]
        if args["stream"]:
            steps, scale = args["preview_num_inference_steps"], args["preview_guidance_scale"]
            _check_int("preview_num_inference_steps", steps, 1)
            _check_guidance_scale("preview_guidance_scale", scale)
            preview = {"num_inference_steps": steps, "guidance_scale": scale}
            return self._stream(prior_kwargs, batch_size, decoding, preview)
        token_ids = self.prior.generate_image_tokens(**prior_kwargs)
        images = self.detokenize(token_ids, **decoding)
        return self._output(images, token_ids, args["return_dict"])

    @torch.no_grad()
    def _stream(
        self, prior_kwargs: dict, batch_size: int, decoding: dict, preview: dict
    ) -> Iterator[FlexTokStreamOutput]:
        """Yields a preview each time the prior has sampled 1, 2, 4, ... (< k) ids, decoded from the same noise as the
        final images with `preview["num_inference_steps"]` Euler steps and `preview["guidance_scale"]`, then the final
        images (`is_final=True`), decoded exactly as without streaming. The prior runs in a worker thread that waits
        while a preview is decoded and consumed (`flextok_hf.streaming`)."""
        decoding = dict(decoding)
        generator, latents = decoding.pop("generator"), decoding.pop("latents")
        previews = dict(
            decoding,
            num_inference_steps=preview["num_inference_steps"],
            guidance_scale=preview["guidance_scale"],
            callback_on_step_end=None,
        )
        noise = None

        def generate(streamer):
            return self.prior.generate_image_tokens(**prior_kwargs, streamer=streamer)

        for kind, ids in stream_prior(generate, preview_budgets(prior_kwargs["num_tokens"])):
            if kind == "start":  # the prior has drawn its seed from `generator`: the decoder noise comes next
                noise = self.flextok.prepare_noise(batch_size, generator, latents)
                continue
            final = kind == "done"
            images = self.detokenize(ids, latents=noise, **(decoding if final else previews))
            yield FlexTokStreamOutput(
                images=images, token_ids=list(ids.cpu().unbind(0)), num_tokens=ids.shape[1], is_final=final
            )


__all__ = []
