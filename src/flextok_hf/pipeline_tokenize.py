"""The transformers task `pipeline("flextok-tokenize")`: image(s) -> FlexTok token ids."""

from __future__ import annotations

import os

import torch
from transformers import Pipeline

from .adaptive_budget import AUTO, check_auto_arguments, check_task_auto_arguments, task_forward_auto
from .image_processing_flextok import FlexTokImageProcessor, check_input_range

TASK = "flextok-tokenize"


class FlexTokTokenizePipeline(Pipeline):
    """Image(s) in, `{"token_ids": [...], "num_tokens": k}` out (one dict per image).

    ```python
    import flextok_hf  # registers the task
    from transformers import pipeline

    tokenizer = pipeline("flextok-tokenize")  # the default model shipped with the package
    tokenizer = pipeline("flextok-tokenize", model="path/to/flextok")
    tokenizer(image, num_tokens=16)  # {"token_ids": [16 ids], "num_tokens": 16}
    tokenizer([img1, img2], batch_size=2)  # a list of dicts
    ```

    `model` may be a `FlexTokModel` folder, a `FlexTokPipeline` or text-/class-to-image pipeline folder (its `flextok`
    part), an official apple/ml-flextok checkpoint (converted in memory), or a Hub id of any of these (see
    `flextok_hf.loading`). The image processor is the folder's `preprocessor_config.json` when it has one, else it is
    built from the model config. Images may be PIL images (any mode), numpy arrays, torch tensors or file paths;
    float arrays are read in [0, 1] unless `input_range="[-1, 1]"` is passed (PIL and uint8 images are [0, 255]).
    `num_tokens` (1..K, default K) keeps the first ids of the ordered, coarse-to-fine sequence.

    `num_tokens="auto"` keeps per image the smallest budget whose reconstruction meets `quality_target` (a minimum PSNR
    in dB, or with `quality_metric="feature_distance"` a maximum classifier-feature distance), within optional
    `min_tokens` / `max_tokens`; each row then also has `quality` and `target_met`. The search and its decoder
    arguments (`num_inference_steps`, `search_num_inference_steps`, `guidance_scale`, `adaptive_guidance`) are those of
    `FlexTokPipeline.choose_num_tokens`; their defaults come from the saved pipeline the model belongs to, if any.
    Each image's decoder noise is seeded from its pixels and `seed` (default 0), so a row does not depend on its batch.
    """

    # Optional: without a preprocessor_config.json (pipeline folders, official checkpoints, bare model folders) the
    # processor is built from the model config in `__init__`.
    _load_image_processor = None
    _load_tokenizer = False
    _load_processor = False
    _load_feature_extractor = False

    def __init__(self, model, image_processor=None, **kwargs):
        if image_processor is None:
            image_processor = FlexTokImageProcessor.from_model_config(model.config)
        super().__init__(model=model, image_processor=image_processor, **kwargs)

    def _sanitize_parameters(
        self,
        num_tokens=None,
        quality_target=None,
        quality_metric=None,
        min_tokens=None,
        max_tokens=None,
        num_inference_steps=None,
        search_num_inference_steps=None,
        guidance_scale=None,
        adaptive_guidance=None,
        seed=None,
        input_range=None,
        **kwargs,
    ):
        # num_tokens="auto": per image the smallest budget meeting `quality_target` (see `flextok_hf.adaptive_budget`)
        auto = dict(
            quality_target=quality_target,
            quality_metric=quality_metric,
            min_tokens=min_tokens,
            max_tokens=max_tokens,
            num_inference_steps=num_inference_steps,
            search_num_inference_steps=search_num_inference_steps,
            guidance_scale=guidance_scale,
            adaptive_guidance=adaptive_guidance,
            seed=seed,
        )
        check_auto_arguments(num_tokens, **auto)
        preprocess_kwargs = {} if input_range is None else {"input_range": check_input_range(input_range)}
        if num_tokens == AUTO:
            return preprocess_kwargs, {"auto": check_task_auto_arguments(self.model, auto)}, {}
        postprocess_kwargs = {}
        if num_tokens is not None:
            num_registers = self.model.config.num_registers
            if not isinstance(num_tokens, int) or isinstance(num_tokens, bool):
                raise TypeError(f"`num_tokens` must be an int, got {num_tokens!r}.")
            if not 1 <= num_tokens <= num_registers:
                raise ValueError(f"`num_tokens` must be in [1, {num_registers}], got {num_tokens}.")
            postprocess_kwargs["num_tokens"] = num_tokens
        return preprocess_kwargs, {}, postprocess_kwargs

    def preprocess(self, image, input_range=None):
        return self.image_processor(image, input_range=input_range, return_tensors="pt")

    def _forward(self, model_inputs, auto=None):
        pixel_values = model_inputs["pixel_values"].to(self.model.dtype)
        if auto is not None:
            return task_forward_auto(self, pixel_values, **auto)
        return {"token_ids": self.model.encode(pixel_values=pixel_values).token_ids}

    def postprocess(self, model_outputs, num_tokens=None):
        token_ids: torch.Tensor = model_outputs["token_ids"]
        if token_ids.ndim == 2:  # unbatched call: [1, K]
            token_ids = token_ids[0]
        if "target_met" in model_outputs:  # num_tokens="auto": the chosen budget and its quality
            k = int(model_outputs["num_tokens"].reshape(-1)[0])
            quality, met = model_outputs["quality"].reshape(-1)[0], model_outputs["target_met"].reshape(-1)[0]
            return {
                "token_ids": token_ids[:k].tolist(),
                "num_tokens": k,
                "quality": float(quality),
                "target_met": bool(met),
            }
        k = num_tokens or token_ids.shape[-1]
        return {"token_ids": token_ids[:k].tolist(), "num_tokens": k}


class _TaskAutoConfig:
    """Stands in for `AutoConfig` inside `transformers.pipelines` (see `register_tokenize_task`).

    transformers' `pipeline()` reads `AutoConfig.from_pretrained(model)` before it knows the task's model class, which
    fails for the sources FlexTok loaders accept beyond a `FlexTokModel` folder (a pipeline folder has no top-level
    `config.json`; an official checkpoint's `config.json` has no `model_type`). For the "flextok-tokenize" task only
    (`_from_pipeline == TASK`), the config is resolved by `flextok_hf.loading`; every other call goes to `AutoConfig`
    unchanged.
    """

    def __init__(self, auto_config):
        self._auto_config = auto_config

    def from_pretrained(self, pretrained_model_name_or_path, *args, **kwargs):
        if kwargs.get("_from_pipeline") != TASK or not isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            return self._auto_config.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        from .loading import flextok_config_for

        return flextok_config_for(pretrained_model_name_or_path, **kwargs)

    def __getattr__(self, name):
        return getattr(self._auto_config, name)


def default_model_path() -> str:
    """The model `pipeline("flextok-tokenize")` loads when none is given: the tokenizer shipped with the package."""
    from .pretrained import DEFAULT_MODELS, PRETRAINED_DIR

    return os.path.join(PRETRAINED_DIR, DEFAULT_MODELS["tokenizer"])


def register_tokenize_task(model_class) -> None:
    """Registers the "flextok-tokenize" task (default model: the shipped tokenizer) and lets `pipeline()` resolve its
    configs with `flextok_hf.loading` (idempotent)."""
    import transformers.pipelines as pipelines_module
    from transformers.pipelines import PIPELINE_REGISTRY

    PIPELINE_REGISTRY.register_pipeline(
        TASK,
        pipeline_class=FlexTokTokenizePipeline,
        pt_model=model_class,
        default={"model": (default_model_path(), None)},
        type="image",
    )
    if not isinstance(pipelines_module.AutoConfig, _TaskAutoConfig):
        pipelines_module.AutoConfig = _TaskAutoConfig(pipelines_module.AutoConfig)


__all__ = ["FlexTokTokenizePipeline", "register_tokenize_task"]
