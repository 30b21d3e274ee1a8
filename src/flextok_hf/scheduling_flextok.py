"""FlexTokFlowScheduler: diffusers' flow-matching Euler scheduler with FlexTok's default sampling grid."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SchedulerMixin  # noqa: F401  (SchedulerMixin: see below)

# `SchedulerMixin` is imported so that diffusers finds the loading methods when a saved pipeline records this module
# as the scheduler's library (see hf_integration_notes §3.5).


class FlexTokFlowScheduler(FlowMatchEulerDiscreteScheduler):
    """Euler sampler of the FlexTok rectified-flow decoder.

    Identical to [`FlowMatchEulerDiscreteScheduler`] except for the default grid: with `N` steps and no explicit
    `sigmas`/`timesteps`, sigmas are `1, (N-1)/N, ..., 1/N` (then 0), the uniform grid of the official sampler, so each
    step is `x <- x - v / N`. The decoder takes `t = sigma`; `timesteps = sigma * num_train_timesteps`.
    """

    _compatibles = ["FlowMatchEulerDiscreteScheduler"]

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        mu: float | None = None,
        timesteps: list[float] | None = None,
    ):
        if sigmas is None and timesteps is None:
            if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool):
                raise TypeError(f"`num_inference_steps` must be an int, got {num_inference_steps!r}.")
            if num_inference_steps < 1:
                raise ValueError(f"`num_inference_steps` must be >= 1, got {num_inference_steps}.")
            sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        return super().set_timesteps(
            num_inference_steps=num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps
        )


__all__ = ["FlexTokFlowScheduler"]
