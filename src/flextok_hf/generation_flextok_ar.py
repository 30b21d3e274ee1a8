"""Sampling from the FlexTok prior: `generate()` inputs with classifier-free guidance, and `generate_image_tokens`.

[`FlexTokARGenerationMixin`] is the generation half of [`FlexTokARForCausalLM`]: it prepares `generate()` inputs in
the MusicGen layout (conditional and unconditional rows in one batch, one token sampled per pair from the guided
logits), checks the conditions, and seeds sampling from a `torch.Generator`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from transformers import GenerationMixin
from transformers.generation import ClassifierFreeGuidanceLogitsProcessor, LogitsProcessorList


@contextlib.contextmanager
def fork_rng_from_generator(generator: torch.Generator | None, device: torch.device | str) -> Iterator[None]:
    """Runs the block with the global RNG seeded from `generator`, then restores the caller's RNG state.

    transformers' sampling calls `torch.multinomial` without a generator, so this is how a `torch.Generator` makes
    `generate()` deterministic: one seed is drawn from `generator` (advancing it) and the global RNG of the CPU and of
    `device` runs under that seed inside the block. Without a generator the block uses the global RNG unchanged.
    """
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    device = torch.device(device)
    if device.type == "cpu":
        fork = torch.random.fork_rng(devices=[])
    else:
        index = device.index if device.index is not None else torch.accelerator.current_device_index()
        fork = torch.random.fork_rng(devices=[index], device_type=device.type)
    with fork:
        torch.manual_seed(seed)
        yield


class FlexTokARGenerationMixin(GenerationMixin):
    """`generate()` support and [`generate_image_tokens`] for [`FlexTokARForCausalLM`]."""

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        attention_mask: torch.Tensor | None = None,
        class_labels: torch.LongTensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        condition_drop_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        # Classifier-free guidance in the MusicGen layout: a condition with 2B rows ([:B] conditional, [B:] null)
        # drives B sequences; both halves are fed the same ids, and a guidance logits processor maps the 2B rows of
        # logits back to B before one token per pair is sampled. The KV cache travels in `kwargs` under the installed
        # transformers' name for it (`CACHE_KWARG`).
        condition = class_labels if class_labels is not None else text_hidden_states
        if condition is not None and condition.shape[0] == 2 * input_ids.shape[0]:
            input_ids = input_ids.repeat(2, 1)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat(2, 1)
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            attention_mask=attention_mask,
            class_labels=class_labels,
            text_hidden_states=text_hidden_states,
            text_attention_mask=text_attention_mask,
            condition_drop_mask=condition_drop_mask,
            **kwargs,
        )
        model_inputs["return_loss"] = False
        return model_inputs

    def _generation_condition(self, class_labels, text_hidden_states, text_attention_mask) -> tuple[dict, int]:
        config, device = self.config, self.device
        if config.condition_type == "class":
            if class_labels is None or text_hidden_states is not None:
                raise ValueError("A class-conditional prior needs `class_labels` (and no `text_hidden_states`).")
            labels = torch.as_tensor(class_labels, device=device).long().reshape(-1)
            if labels.numel() == 0 or ((labels < 0) | (labels >= config.num_classes)).any():
                raise ValueError(
                    f"`class_labels` must be non-empty and lie in [0, {config.num_classes}), got {labels}."
                )
            return {"class_labels": labels}, labels.shape[0]
        if text_hidden_states is None or class_labels is not None:
            raise ValueError("A text-conditional prior needs `text_hidden_states` (and no `class_labels`).")
        if text_hidden_states.ndim != 3 or text_hidden_states.shape[-1] != config.text_hidden_size:
            raise ValueError(
                f"`text_hidden_states` must have shape [B, L, {config.text_hidden_size}], "
                f"got {tuple(text_hidden_states.shape)}."
            )
        condition = {"text_hidden_states": text_hidden_states.to(device)}
        if text_attention_mask is not None:
            if tuple(text_attention_mask.shape) != tuple(text_hidden_states.shape[:2]):
                raise ValueError(
                    f"`text_attention_mask` must have shape {tuple(text_hidden_states.shape[:2])} (batch size and "
                    f"length of `text_hidden_states`), got {tuple(text_attention_mask.shape)}."
                )
            condition["text_attention_mask"] = text_attention_mask.to(device)
        return condition, text_hidden_states.shape[0]

    def _negative_condition(self, negative_text_hidden_states, negative_text_attention_mask, batch_size: int):
        if negative_text_hidden_states is None:
            if negative_text_attention_mask is not None:
                raise ValueError("`negative_text_attention_mask` was given without `negative_text_hidden_states`.")
            return None
        if self.config.condition_type != "text":
            raise ValueError("`negative_text_hidden_states` is only used by a text-conditional prior.")
        try:  # the same checks as the condition, reported under the negative argument names
            negative, rows = self._generation_condition(
                None, negative_text_hidden_states, negative_text_attention_mask
            )
        except ValueError as error:
            raise ValueError(str(error).replace("`text_", "`negative_text_")) from None
        if rows != batch_size:
            raise ValueError(
                f"`negative_text_hidden_states` has {rows} rows but the condition has {batch_size}; pass one negative "
                "row per sample."
            )
        return negative

    @torch.no_grad()
    def generate_image_tokens(
        self,
        class_labels: torch.LongTensor | Sequence[int] | None = None,
        text_hidden_states: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        num_tokens: int | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        logits_processor: LogitsProcessorList | Sequence | None = None,
        negative_text_hidden_states: torch.Tensor | None = None,
        negative_text_attention_mask: torch.Tensor | None = None,
        streamer=None,
    ) -> torch.LongTensor:
        """Samples `num_tokens` FlexTok ids per condition with `generate()`.

        Args:
            class_labels (`[B]`) / text_hidden_states (`[B, L, C]`) + text_attention_mask (`[B, L]`): the condition.
            num_tokens: ids to generate, 1 … `max_num_tokens` (default: all K).
            guidance_scale: classifier-free guidance on logits, `l_u + s (l_c - l_u)`. 1 runs only the conditional
                rows, 0 only the unconditional ones; s > 1 runs both in one batch of 2B and samples one id per pair.
            temperature, top_k, top_p: sampling warpers, applied after guidance (None disables top-k/top-p).
            generator: makes sampling deterministic without touching the caller's global RNG state.
            logits_processor: extra processors, applied after guidance on the B guided rows.
            negative_text_hidden_states (`[B, L', C]`) + negative_text_attention_mask (`[B, L']`): text priors only;
                a negative prompt that replaces the learned null condition as the unconditional branch of guidance.
            streamer: a transformers `BaseStreamer`; `generate()` passes it the prefix, then each step's new ids `[B]`
                (e.g. `flextok_hf.streaming.PreviewStreamer` for previews while sampling).

        Dropout layers follow the module mode, as in `generate()`: call `model.eval()` before sampling.

        Returns:
            `torch.LongTensor` `[B, num_tokens]` with values in `[0, codebook_size)`.
        """
        condition, batch_size = self._generation_condition(class_labels, text_hidden_states, text_attention_mask)
        num_tokens = self.config.max_num_tokens if num_tokens is None else num_tokens
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int):
            raise ValueError(f"`num_tokens` must be an int, got {num_tokens!r}.")
        if not 1 <= num_tokens <= self.config.max_num_tokens:
            raise ValueError(f"`num_tokens` must lie in [1, {self.config.max_num_tokens}], got {num_tokens}.")
        if not isinstance(guidance_scale, (int, float)) or not (guidance_scale == 0 or guidance_scale >= 1):
            raise ValueError(
                f"`guidance_scale` must be 0 (unconditional), 1 (no guidance) or > 1, got {guidance_scale}."
            )
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f"`temperature` must be a positive float, got {temperature!r}.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be None or a positive int, got {top_k!r}.")
        if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
            raise ValueError(f"`top_p` must be None or a float in (0, 1], got {top_p!r}.")

        device = self.device
        processors = LogitsProcessorList()
        drop_mask = torch.zeros(batch_size, dtype=torch.bool, device=device)
        # The unconditional branch is the learned null condition, or the negative prompt when one is given.
        negative = self._negative_condition(negative_text_hidden_states, negative_text_attention_mask, batch_size)
        if guidance_scale == 0:
            if negative is None:
                drop_mask = ~drop_mask
            else:
                condition = negative
        elif guidance_scale != 1:
            if negative is None:
                condition = {key: torch.cat([value, value]) for key, value in condition.items()}
                drop_mask = torch.cat([drop_mask, ~drop_mask])
            else:
                condition = _stack_text_conditions(condition, negative)
                drop_mask = torch.cat([drop_mask, drop_mask])
            processors.append(ClassifierFreeGuidanceLogitsProcessor(float(guidance_scale)))
        processors.extend(logits_processor or [])

        prefix = torch.full(
            (batch_size, self.config.num_condition_tokens), self.config.condition_token_id, device=device
        )
        with fork_rng_from_generator(generator, device):
            sequences = self.generate(
                input_ids=prefix,
                **condition,
                condition_drop_mask=drop_mask,
                logits_processor=processors,
                max_new_tokens=num_tokens,
                do_sample=True,
                temperature=float(temperature),
                top_k=top_k or 0,
                top_p=1.0 if top_p is None else float(top_p),
                num_beams=1,
                num_return_sequences=1,
                use_cache=use_cache,
                streamer=streamer,
            )
        return sequences[:, self.config.num_condition_tokens :]


def _stack_text_conditions(first: dict, second: dict) -> dict:
    """Two text conditions stacked along the batch; the shorter states are padded (with attention mask 0)."""
    length = max(first["text_hidden_states"].shape[1], second["text_hidden_states"].shape[1])
    states, masks = [], []
    for condition in (first, second):
        hidden = condition["text_hidden_states"]
        mask = condition.get("text_attention_mask")
        mask = torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask
        states.append(F.pad(hidden, (0, 0, 0, length - hidden.shape[1])))
        masks.append(F.pad(mask.long(), (0, length - hidden.shape[1])))
    return {"text_hidden_states": torch.cat(states), "text_attention_mask": torch.cat(masks)}


__all__ = ["FlexTokARGenerationMixin", "fork_rng_from_generator"]
