"""FlexTokFlowScheduler: diffusers' flow-matching Euler scheduler with FlexTok's default sampling grid.

The decoder's sampler is any diffusers flow-matching scheduler, swapped the diffusers way:

```python
pipe.scheduler = FlexTokFlowScheduler.from_config(pipe.scheduler.config, shift=1.0)  # the official Euler grid
pipe.scheduler = FlexTokFlowScheduler.from_config(pipe.scheduler.config, shift=0.5)  # steps nearer the data end
pipe.scheduler = FlexTokFlowHeunScheduler.from_config(pipe.scheduler.config)  # 2nd order on that grid, 2N-1 NFE
pipe.scheduler = FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)  # diffusers' Heun grid
```

`load_flow_scheduler(folder)` reads back a saved scheduler of any of these classes.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from diffusers import (  # noqa: F401  (SchedulerMixin: see below)
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    SchedulerMixin,
)

from .scheduling_flextok_heun import FlexTokFlowHeunScheduler

# `SchedulerMixin` is imported so that diffusers finds the loading methods when a saved pipeline records this module
# as the scheduler's library (see hf_integration_notes §3.5).


class FlexTokFlowScheduler(FlowMatchEulerDiscreteScheduler):
    """Euler sampler of the FlexTok rectified-flow decoder.

    Identical to [`FlowMatchEulerDiscreteScheduler`] except for the default grid: with `N` steps and no explicit
    `sigmas`/`timesteps`, sigmas are `1, (N-1)/N, ..., 1/N` (then 0), the uniform grid of the official sampler, so each
    step is `x <- x - v / N`. The decoder takes `t = sigma`; `timesteps = sigma * num_train_timesteps`. With
    `shift != 1` (config) the grid is warped by diffusers' rule `sigma' = shift * s / (1 + (shift - 1) * s)`: a shift
    below 1 puts more steps near the data end (small sigma), above 1 near the noise end.
    """

    _compatibles = ["FlowMatchEulerDiscreteScheduler", "FlexTokFlowHeunScheduler", "FlowMatchHeunDiscreteScheduler"]

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
        # A shift may round sigma = 1 up to 1 + 1e-7; the pipeline loop clamps the decoder's t, for every scheduler.
        return super().set_timesteps(
            num_inference_steps=num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps
        )


FLOW_SCHEDULERS = {
    cls.__name__: cls
    for cls in (
        FlexTokFlowScheduler,
        FlexTokFlowHeunScheduler,
        FlowMatchEulerDiscreteScheduler,
        FlowMatchHeunDiscreteScheduler,
    )
}


def load_flow_scheduler(path: str | os.PathLike) -> SchedulerMixin:
    """The scheduler saved in `path` (a folder with `scheduler_config.json`), of the class its `_class_name` names:
    one of `FLOW_SCHEDULERS` (FlexTok's Euler or Heun grid, or diffusers' flow-matching Euler / Heun)."""
    with open(os.path.join(path, "scheduler_config.json"), encoding="utf-8") as handle:
        class_name = json.load(handle).get("_class_name", "FlexTokFlowScheduler")
    if class_name not in FLOW_SCHEDULERS:
        raise ValueError(
            f"The scheduler in {os.fspath(path)!r} is a {class_name}; FlexTok's decoder samples with one of "
            f"{sorted(FLOW_SCHEDULERS)}."
        )
    return FLOW_SCHEDULERS[class_name].from_pretrained(path)


def describe_scheduler(scheduler) -> str:
    """A short name of a sampler for reports: its class, plus `shift=...` when the shift is not 1."""
    shift = float(getattr(scheduler.config, "shift", 1.0))
    return type(scheduler).__name__ + (f" (shift={shift:g})" if shift != 1.0 else "")


__all__ = ["FLOW_SCHEDULERS", "FlexTokFlowScheduler", "describe_scheduler", "load_flow_scheduler"]
