"""Argument checks shared by the FlexTok pipelines (`FlexTokPipeline`, its coarse-to-fine mixin, the prior pipelines)."""

from __future__ import annotations

import numpy as np

from .pipeline_flextok_output import OUTPUT_TYPES


def _check_int(name: str, value, low: int, high: int | None = None):
    """An int (numpy ints too, not bool) in `[low, high]` (no upper bound when `high` is None)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int, got {value!r}.")
    if value < low or (high is not None and value > high):
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be in {allowed}, got {value}.")


def _check_output_type(output_type: str):
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")


def _check_guidance_scale(name: str, scale):
    """A decoder guidance scale: a number (not bool) or a callable of t."""
    if isinstance(scale, bool) or not (callable(scale) or isinstance(scale, (int, float))):
        raise TypeError(f"`{name}` must be a number or a callable of t, got {scale!r}.")


def _sampling_steps(config, num_inference_steps) -> int:
    """`num_inference_steps`, or the pipeline config's when None, checked to be >= 1."""
    steps = config.num_inference_steps if num_inference_steps is None else num_inference_steps
    _check_int("num_inference_steps", steps, 1)
    return steps


__all__ = []
