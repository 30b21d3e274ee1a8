"""Training the FlexTok autoregressive prior with `transformers.Trainer` on pre-tokenized datasets.

The dataset is a `datasets.Dataset` with a `token_ids` column (list[int] of length K, FlexTok ids) and a `label` (int)
or `caption` (str) column. The collator turns rows into `FlexTokARForCausalLM.forward` inputs; for text it runs a
frozen text encoder on the captions, caching the states per caption (captions repeat a lot across epochs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from ..configuration_flextok_ar import CONDITION_TYPES, FlexTokARConfig
from ..modeling_flextok_ar import encode_prompts

# AdamW β (0.9, 0.95), weight decay 0.05, grad clip 1.0, cosine decay to 1 % of the peak, 10 % warmup: the recipe of
# the paper-size class-conditional family (flextok_reference.md §18, third-party reproduction).
PRIOR_TRAINING_DEFAULTS = {
    "learning_rate": 1.2e-3,
    "weight_decay": 0.05,
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "max_grad_norm": 1.0,
    "lr_scheduler_type": "cosine_with_min_lr",
    "lr_scheduler_kwargs": {"min_lr_rate": 0.01},
    "warmup_steps": 0.1,
    "per_device_train_batch_size": 32,
    "logging_steps": 10,
    "save_steps": 500,
    "save_total_limit": 2,
    "report_to": "none",
}


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


def build_prior_trainer(
    model: nn.Module,
    train_dataset,
    output_dir: str,
    *,
    eval_dataset=None,
    data_collator: FlexTokARDataCollator | None = None,
    text_encoder: nn.Module | None = None,
    tokenizer=None,
    callbacks: list | None = None,
    **training_kwargs,
) -> Trainer:
    """A `Trainer` for a prior (a `FlexTokARForCausalLM`, or a peft model wrapping one).

    `training_kwargs` override [`PRIOR_TRAINING_DEFAULTS`] and go to `TrainingArguments`. The arguments the prior needs
    are fixed: `remove_unused_columns=False` (the collator reads raw columns), `label_names=[]` (the loss comes from
    the model, so eval loss works without labels) and `prediction_loss_only=True` (never gather `[B, L, 64000]` logits).
    """
    config = model.config if isinstance(model.config, FlexTokARConfig) else model.get_base_model().config
    if data_collator is None:
        data_collator = FlexTokARDataCollator.from_config(config, text_encoder=text_encoder, tokenizer=tokenizer)
    fixed = {"remove_unused_columns": False, "label_names": [], "prediction_loss_only": True}
    for key in fixed:
        if key in training_kwargs and training_kwargs[key] != fixed[key]:
            raise ValueError(f"`{key}` must be {fixed[key]!r} for the prior, got {training_kwargs[key]!r}.")
    arguments = {**PRIOR_TRAINING_DEFAULTS, **training_kwargs, **fixed}
    if eval_dataset is not None and "eval_strategy" not in training_kwargs:
        arguments["eval_strategy"] = "epoch"
    args = TrainingArguments(output_dir=output_dir, **arguments)
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=data_collator,
        callbacks=callbacks,
    )


def train_prior(
    model: nn.Module,
    train_dataset,
    output_dir: str,
    *,
    resume_from_checkpoint: str | bool | None = None,
    **kwargs,
) -> Trainer:
    """Builds the trainer ([`build_prior_trainer`]), trains (resuming from `resume_from_checkpoint`: a checkpoint
    directory, or True for the latest one in `output_dir`) and returns the trainer (`trainer.save_model()` writes
    safetensors)."""
    trainer = build_prior_trainer(model, train_dataset, output_dir, **kwargs)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


__all__ = ["PRIOR_TRAINING_DEFAULTS", "FlexTokARDataCollator", "build_prior_trainer", "train_prior"]
