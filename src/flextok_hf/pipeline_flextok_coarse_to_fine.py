"""Coarse-to-fine reconstructions of [`FlexTokPipeline`]: each image at several token budgets, from the same noise,
in one call or streamed budget by budget. The decoding is `flextok_hf.decoding.decode_at_budgets` (its noise rule)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .decoding import check_budgets, decode_at_budgets, decoder_noise, default_budgets, iter_decode_at_budgets
from .pipeline_flextok_checks import _check_output_type
from .pipeline_flextok_output import FlexTokCoarseToFineOutput, FlexTokStreamOutput


class FlexTokCoarseToFineMixin:
    """`coarse_to_fine`, `stream_coarse_to_fine` and `default_budgets` of [`FlexTokPipeline`] (needs `flextok`,
    `tokenize` and `detokenize`)."""

    @torch.no_grad()
    def coarse_to_fine(
        self,
        image,
        budgets: list[int] | tuple[int, ...] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | Callable | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        stream: bool = False,
        seed: int | None = None,
        input_range=None,
    ) -> FlexTokCoarseToFineOutput | Iterator[FlexTokStreamOutput]:
        """One reconstruction per budget (default 1, 2, 4, ..., K) for each image, every budget of an image starting
        from the same noise, decoded by [`~flextok_hf.decoding.decode_at_budgets`] (one batch per budget).

        The noise: with `seed`, image i gets the noise of `flextok_hf.decoding`'s rule (the same as in the evaluation,
        the training grids and the demo); else one draw per image from `generator` (one generator, or one per image).
        With `stream=True`, returns [`~FlexTokPipeline.stream_coarse_to_fine`] (a generator yielding each budget as
        soon as it is decoded) instead. `input_range`: the value range of float images, as in `__call__`."""
        if stream:
            return self.stream_coarse_to_fine(
                image, budgets, num_inference_steps, guidance_scale, adaptive_guidance, generator, output_type, seed,
                input_range=input_range,
            )  # fmt: skip
        token_ids, budgets, images = self._decode_coarse_to_fine(
            decode_at_budgets, image, budgets, num_inference_steps, guidance_scale, adaptive_guidance, generator,
            output_type, seed, input_range,
        )  # fmt: skip
        return FlexTokCoarseToFineOutput(images=images, budgets=budgets, token_ids=token_ids)

    def stream_coarse_to_fine(
        self,
        image,
        budgets: list[int] | tuple[int, ...] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | Callable | None = None,
        adaptive_guidance: bool | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        seed: int | None = None,
        input_range=None,
    ) -> Iterator[FlexTokStreamOutput]:
        """[`~FlexTokPipeline.coarse_to_fine`] as a generator: the images are tokenized once, then each budget (in
        the order given) is decoded as one batch and yielded right away as a [`FlexTokStreamOutput`] (its `images`
        are those of every input image at that budget). Same noise and batches as `coarse_to_fine`, so the streamed
        reconstructions equal the non-streamed ones exactly. The inputs are checked and tokenized when this is
        called; decoding happens while iterating."""
        token_ids, budgets, decoded = self._decode_coarse_to_fine(
            iter_decode_at_budgets, image, budgets, num_inference_steps, guidance_scale, adaptive_guidance, generator,
            output_type, seed, input_range,
        )  # fmt: skip
        return self._stream_budgets(decoded, token_ids, budgets)

    @staticmethod
    def _stream_budgets(decoded, token_ids, budgets) -> Iterator[FlexTokStreamOutput]:
        for _, j, images in decoded:
            k = budgets[j]
            yield FlexTokStreamOutput(
                images=images, token_ids=[ids[:k] for ids in token_ids], num_tokens=k, is_final=j == len(budgets) - 1
            )

    def _decode_coarse_to_fine(
        self, decode, image, budgets, num_inference_steps, guidance_scale, adaptive_guidance, generator, output_type,
        seed, input_range,
    ):  # fmt: skip
        """Checks the inputs, tokenizes the images (all K ids each) and draws one initial noise per image; -> (the ids,
        the checked budgets, `decode(self, ids, budgets, noise=..., ...)`: `decode_at_budgets` or its iterator)."""
        _check_output_type(output_type)
        if seed is not None and generator is not None:
            raise ValueError("Pass at most one of `seed` or `generator`.")
        budgets = check_budgets(budgets, self.flextok.config.num_registers)
        token_ids = self.tokenize(image, input_range=input_range)
        if seed is not None:
            noise = decoder_noise(self.flextok.config, seed, range(len(token_ids)))
        else:
            noise = self.flextok.prepare_noise(len(token_ids), generator)
        decoded = decode(
            self,
            token_ids,
            budgets,
            noise=noise,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            adaptive_guidance=adaptive_guidance,
            output_type=output_type,
        )
        return token_ids, budgets, decoded

    def default_budgets(self) -> list[int]:
        """1, 2, 4, ... up to K (K included even when it is not a power of two); see `flextok_hf.decoding`."""
        return default_budgets(self.flextok.config.num_registers)


__all__ = ["FlexTokCoarseToFineMixin"]
