"""Class-conditional generation with a FlexTok prior (diffusers): class ids or names -> the prior samples k FlexTok
ids -> the decoder renders them. The shared prior-pipeline part lives in `pipeline_flextok_text2image`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch

from .modeling_flextok import FlexTokModel
from .modeling_flextok_ar import FlexTokARForCausalLM
from .pipeline_flextok import FlexTokPipelineOutput, FlexTokStreamOutput
from .pipeline_flextok_checks import _check_output_type
from .pipeline_flextok_prior import _FlexTokPriorPipeline
from .scheduling_flextok import FlexTokFlowScheduler

logger = logging.getLogger(__name__)


class FlexTokClassToImagePipeline(_FlexTokPriorPipeline):
    r"""
    Class-conditional generation with FlexTok: class ids (or names) -> the prior samples k FlexTok ids -> the
    rectified-flow decoder renders them.

    Components:
        prior ([`FlexTokARForCausalLM`]): a class-conditional autoregressive prior over FlexTok ids; its config's
            `id2label` names the classes.
        flextok ([`FlexTokModel`]): the FlexTok tokenizer whose decoder renders the ids.
        scheduler ([`FlexTokFlowScheduler`] or [`FlexTokFlowHeunScheduler`]): the decoder's sampler.

    The sampling defaults are stored in the pipeline's config, as in [`FlexTokText2ImagePipeline`].
    """

    model_cpu_offload_seq = "prior->flextok"

    def __init__(
        self,
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
            dict(prior=prior, flextok=flextok, scheduler=scheduler),
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
        scheduler: FlexTokFlowScheduler | None = None,
        **defaults,
    ) -> FlexTokClassToImagePipeline:
        """A pipeline around a trained prior and FlexTok model (default scheduler unless given)."""
        pipe = cls(prior, flextok, scheduler or FlexTokFlowScheduler(), **defaults)
        pipe.check_components("class")
        return pipe

    @property
    def id2label(self) -> dict[int, str]:
        """Class names of the prior (`config.id2label`), or {} when it has none for its `num_classes` classes."""
        config = self.prior.config
        id2label = {int(key): str(value) for key, value in (config.id2label or {}).items()}
        return id2label if sorted(id2label) == list(range(config.num_classes)) else {}

    @property
    def labels(self) -> dict[str, int]:
        """Name -> class id; a comma-separated name in `id2label` gives several synonyms (as in diffusers' DiT)."""
        return {name.strip(): key for key, value in self.id2label.items() for name in value.split(",") if name.strip()}

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class names -> class ids (a `ValueError` lists the valid names for an unknown one)."""
        names = [label] if isinstance(label, str) else list(label)
        labels = self.labels
        if not labels:
            raise ValueError("`class_labels`: this prior has no class names (config.id2label); pass class ids.")
        for name in names:
            if not isinstance(name, str) or name.strip() not in labels:
                raise ValueError(f"`class_labels`: unknown class name {name!r}; valid names: {sorted(labels)}.")
        return [labels[name.strip()] for name in names]

    def _class_ids(self, class_labels) -> list[int]:
        if isinstance(class_labels, torch.Tensor):
            class_labels = class_labels.reshape(-1).tolist()
        items = [class_labels] if isinstance(class_labels, (str, int)) else class_labels
        if not isinstance(items, (list, tuple)) or len(items) == 0:
            raise ValueError(
                f"`class_labels` must be a class id or name, or a non-empty list of them, got {class_labels!r}."
            )
        ids = []
        for item in items:
            if isinstance(item, str):
                ids.extend(self.get_label_ids(item))
            elif isinstance(item, int) and not isinstance(item, bool):
                if not 0 <= item < self.prior.config.num_classes:
                    raise ValueError(
                        f"`class_labels`: class id {item} is outside [0, {self.prior.config.num_classes})."
                    )
                ids.append(int(item))
            else:
                raise TypeError(f"`class_labels` entries must be int ids or str names, got {item!r}.")
        return ids

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        num_tokens: int | None = None,
        prior_guidance_scale: float | None = None,
        decoder_guidance_scale: float | Callable | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_inference_steps: int | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_images_per_label: int = 1,
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
        Generate images of classes.

        Args:
            class_labels: a class id or name, or a list of them (names from `id2label`, see `get_label_ids`).
            num_images_per_label: images per entry of `class_labels` (rows are ordered label by label).
            Other arguments: as in [`FlexTokText2ImagePipeline.__call__`] (including `stream`).

        Returns:
            [`FlexTokPipelineOutput`] with `images` and the generated `token_ids` (or a tuple when not `return_dict`),
            or with `stream=True` an iterator of [`FlexTokStreamOutput`].
        """
        # 1. Check inputs and fill in the defaults
        _check_output_type(output_type)
        self.check_components("class")
        num_tokens, prior_guidance_scale, decoder_guidance_scale = self._sampling_defaults(
            num_tokens, prior_guidance_scale, decoder_guidance_scale, ("num_images_per_label", num_images_per_label)
        )

        # 2. Class condition
        class_ids = torch.tensor(self._class_ids(class_labels)).repeat_interleave(num_images_per_label)

        # 3. Prior: sample k ids per image; 4. decoder: render them (with `stream`, previews along the way)
        return self._generate({"class_labels": class_ids}, class_ids.shape[0], locals())


__all__ = ["FlexTokClassToImagePipeline"]
