"""FlexTokFlowHeunScheduler: diffusers' flow-matching Heun scheduler on FlexTok's sampling grid."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchHeunDiscreteScheduler, SchedulerMixin  # noqa: F401  (SchedulerMixin: see below)

# `SchedulerMixin` is imported so that diffusers finds the loading methods when a saved pipeline records this module
# as the scheduler's library (as in `scheduling_flextok`).


class FlexTokFlowHeunScheduler(FlowMatchHeunDiscreteScheduler):
    """Second-order (Heun) sampler of the FlexTok rectified-flow decoder.

    Identical to [`FlowMatchHeunDiscreteScheduler`] except for the grid: with `N` steps the sigmas are those of
    [`FlexTokFlowScheduler`], `1, (N-1)/N, ..., 1/N` (warped by `shift` like there), then 0. The first `N - 1` steps
    are Heun steps (an Euler predictor and a corrector at the step's end, 2 decoder evaluations); the last one, from
    `1/N` to 0, is an Euler step, so the decoder runs `2N - 1` times and never at sigma ~ 0. (Diffusers' own grid
    goes down to `sigma = 1/num_train_timesteps` and evaluates the decoder there, where FlexTok's training puts
    almost no weight; on the shipped model that costs several dB, see `examples/benchmarks/results/sampler_study.md`.)
    """

    _compatibles = ["FlexTokFlowScheduler", "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"]

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool):
            raise TypeError(f"`num_inference_steps` must be an int, got {num_inference_steps!r}.")
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be >= 1, got {num_inference_steps}.")
        super().set_timesteps(num_inference_steps, device=device)  # resets the step index and the Heun state
        shift = self.config.shift
        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        sigmas = np.minimum(shift * sigmas / (1 + (shift - 1) * sigmas), 1.0)  # no 1 + 1e-7 from rounding
        sigmas = torch.from_numpy(sigmas).to(dtype=torch.float32, device=device)
        # The layout of the parent: every sigma after the first twice (predictor's end, corrector's evaluation)
        timesteps = sigmas * self.config.num_train_timesteps
        self.timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
        sigmas = torch.cat([sigmas, torch.zeros(1, device=sigmas.device)])
        self.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])


__all__ = ["FlexTokFlowHeunScheduler"]
