"""`FlexTokARDataCollator`: batches pre-tokenized rows for the FlexTok autoregressive prior.

The dataset is a `datasets.Dataset` with a `token_ids` column (list[int] of length K, FlexTok ids) and a `label` (int)
or `caption` (str) column. For text, the collator runs a frozen text encoder on the captions, caching the states per
caption (captions repeat a lot across epochs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..configuration_flextok_ar import CONDITION_TYPES, FlexTokARConfig
from ..modeling_flextok_ar import encode_prompts


class FlexTokARDataCollator:
    """Batches pre-tokenized rows for [`FlexTokARForCausalLM`].

    Args:
        condition_type: `"class"` (reads `label_column`) or `"text"` (reads `caption_column`).
        text_encoder, tokenizer: a frozen `AutoModel` text encoder and its tokenizer (text only); `last_hidden_state`
            is the condition.
        num_condition_tokens: P, the number of text tokens kept per caption (text only).
        max_cache_size: captions whose states are kept (least recently used are evicted); 0 disables the cache.

    Returns (per batch): `input_ids` `[B, K]` and `class_labels` `[B]`, or `text_hidden_states` `[B, P, C]` (float32)
    and `text_attention_mask` `[B, P]`, all on the CPU (Trainer moves them).
    """

    def __init__(
        self,
        condition_type: str = "class",
        text_encoder: nn.Module | None = None,
        tokenizer=None,
        num_condition_tokens: int | None = None,
        token_column: str = "token_ids",
        label_column: str = "label",
        caption_column: str = "caption",
        max_cache_size: int = 20_000,
    ):
        if condition_type not in CONDITION_TYPES:
            raise ValueError(f"`condition_type` must be one of {CONDITION_TYPES}, got {condition_type!r}.")
        if condition_type == "text":
            if text_encoder is None or tokenizer is None:
                raise ValueError("`text_encoder` and `tokenizer` are required for condition_type='text'.")
            if not isinstance(num_condition_tokens, int) or num_condition_tokens < 1:
                raise ValueError(f"`num_condition_tokens` must be a positive int, got {num_condition_tokens!r}.")
            text_encoder.eval()
        if not isinstance(max_cache_size, int) or max_cache_size < 0:
            raise ValueError(f"`max_cache_size` must be a non-negative int, got {max_cache_size!r}.")
        self.condition_type = condition_type
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.num_condition_tokens = num_condition_tokens
        self.token_column = token_column
        self.label_column = label_column
        self.caption_column = caption_column
        self.max_cache_size = max_cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.num_encoded = 0  # captions that went through the text encoder (cache misses)

    @classmethod
    def from_config(
        cls, config: FlexTokARConfig, text_encoder=None, tokenizer=None, **kwargs
    ) -> FlexTokARDataCollator:
        """A collator matching a prior's `condition_type` and `num_condition_tokens`."""
        return cls(
            condition_type=config.condition_type,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            num_condition_tokens=config.num_condition_tokens,
            **kwargs,
        )

    def encode_captions(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states `[N, P, C]` (float32, CPU) and mask `[N, P]` for `captions`, through the per-caption cache."""
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        fresh = {}
        if missing:
            states, mask = encode_prompts(self.text_encoder, self.tokenizer, missing, self.num_condition_tokens)
            for caption, state, valid in zip(missing, states.float().cpu(), mask.bool().cpu()):
                fresh[caption] = state[valid]  # only the real text tokens: [n, C]
            self.num_encoded += len(missing)
        rows = []
        for caption in captions:
            state = fresh.get(caption)
            if state is None:
                state = self._cache[caption]
                self._cache.move_to_end(caption)
            rows.append(state)
        for caption, state in fresh.items():
            if self.max_cache_size > 0:
                self._cache[caption] = state
        while len(self._cache) > self.max_cache_size:
            self._cache.popitem(last=False)
        num_slots, width = self.num_condition_tokens, rows[0].shape[-1]
        states = torch.zeros(len(rows), num_slots, width)
        mask = torch.zeros(len(rows), num_slots, dtype=torch.long)
        for i, state in enumerate(rows):
            states[i, : state.shape[0]] = state
            mask[i, : state.shape[0]] = 1
        return states, mask

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("`examples` must not be empty.")
        token_ids = [torch.as_tensor(e[self.token_column], dtype=torch.long) for e in examples]
        lengths = {t.shape[-1] for t in token_ids}
        if len(lengths) != 1 or any(t.ndim != 1 for t in token_ids):
            raise ValueError(
                f"`{self.token_column}` rows must be 1-D lists of one common length, got lengths {lengths}."
            )
        batch = {"input_ids": torch.stack(token_ids)}
        if self.condition_type == "class":
            batch["class_labels"] = torch.tensor([int(e[self.label_column]) for e in examples], dtype=torch.long)
        else:
            captions = [e[self.caption_column] for e in examples]
            if not all(isinstance(c, str) for c in captions):
                raise TypeError(f"`{self.caption_column}` values must be str.")
            batch["text_hidden_states"], batch["text_attention_mask"] = self.encode_captions(captions)
        return batch


__all__ = ["FlexTokARDataCollator"]
