"""`num_tokens="auto"` of [`FlexTokPipeline`]: per image, the smallest token budget whose reconstruction meets a
quality target (the search itself is `flextok_hf.adaptive_budget.choose_num_tokens`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import adaptive_budget
from .adaptive_budget import FlexTokAutoBudgetOutput, candidate_budgets, check_quality_metric, check_quality_target
from .pipeline_flextok_checks import _check_int, _sampling_steps


class FlexTokAutoBudgetMixin:
    """`choose_num_tokens` of [`FlexTokPipeline`] (needs `flextok`, `config`, `preprocess` and `detokenize`)."""

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
        steps = _sampling_steps(config, num_inference_steps)
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


__all__ = ["FlexTokAutoBudgetMixin"]
