"""The random draws of FlexTok's training objective: noise levels, null-condition dropout, nested-dropout budgets."""

from __future__ import annotations

import math

import torch


class FlexTokTrainingSamplingMixin:
    """`sample_sigmas`, `sample_null_condition_mask` and `sample_keep_k` of [`FlexTokModel`] (needs `config`,
    `device` and `training`)."""

    def sample_sigmas(self, batch_size: int, generator: torch.Generator | None = None) -> torch.FloatTensor:
        """Training noise levels `[B]`: sigmoid(N(logit_normal_mean, logit_normal_std)); with
        `uniform_sigma_fraction` > 0, that share of the samples (a Bernoulli draw each) takes sigma ~ U(0, 1) instead."""
        config = self.config
        gen_device = generator.device if generator is not None else self.device
        normal = torch.randn(batch_size, generator=generator, device=gen_device)
        sigmas = torch.sigmoid(normal * config.logit_normal_std + config.logit_normal_mean)
        if config.uniform_sigma_fraction > 0:
            uniform = torch.rand(batch_size, generator=generator, device=gen_device)
            use_uniform = (
                torch.rand(batch_size, generator=generator, device=gen_device) < config.uniform_sigma_fraction
            )
            sigmas = torch.where(use_uniform, uniform, sigmas)
        return sigmas.to(self.device)

    def sample_null_condition_mask(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.BoolTensor:
        """`[B]` True where a training sample's registers are replaced by the null condition (in training mode, with
        probability `null_condition_dropout_prob`; never in eval mode)."""
        if not (self.training and self.config.null_condition_dropout_prob > 0):
            return torch.zeros(batch_size, dtype=torch.bool, device=self.device)
        gen_device = generator.device if generator is not None else self.device
        uniform = torch.rand(batch_size, generator=generator, device=gen_device)
        return (uniform < self.config.null_condition_dropout_prob).to(self.device)

    def sample_keep_k(self, batch_size: int, generator: torch.Generator | None = None) -> torch.LongTensor:
        """Nested-dropout budgets `[B]` drawn by `config.nested_dropout_mode`."""
        num_registers, mode = self.config.num_registers, self.config.nested_dropout_mode
        gen_device = generator.device if generator is not None else self.device
        if mode == "pow2":
            exponents = torch.randint(
                0, int(math.log2(num_registers)) + 1, (batch_size,), generator=generator, device=gen_device
            )
            keep_k = 2**exponents
        else:
            keep_k = torch.randint(1, num_registers + 1, (batch_size,), generator=generator, device=gen_device)
            if mode == "uniform_pow2":
                keep_k = 2 ** torch.ceil(torch.log2(keep_k.double())).long()
        return keep_k.to(self.device)


__all__ = ["FlexTokTrainingSamplingMixin"]
