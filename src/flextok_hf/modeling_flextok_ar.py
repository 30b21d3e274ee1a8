"""FlexTok autoregressive prior (stage 2): a LlamaGen-style GPT over FlexTok ids, built on transformers' Llama.

Sequence layout: `[c_0 … c_{P-1}, z_0 … z_{k-1}]`. The P condition slots hold condition embeddings (a class embedding
or projected text-encoder states); in `input_ids` they are marked by the placeholder `config.condition_token_id`
(= codebook_size), an id the output head cannot produce, so `generate()` never samples it. `forward` replaces the
slots that are present in its input (read from the KV-cache length) by the condition embeddings, so prefill, cached
decoding and cache-free decoding all see the same sequence.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaModel,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import can_return_tuple

from .configuration_flextok_ar import FlexTokARConfig
from .generation_flextok_ar import FlexTokARGenerationMixin, fork_rng_from_generator

# transformers 5.25 renamed the KV-cache argument and output field from `past_key_values` to `cache`; the prior takes
# either name and talks to Llama and `generate()` in the name of the installed version.
CACHE_KWARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def llama_config_from(config: FlexTokARConfig) -> LlamaConfig:
    """The `LlamaConfig` of the inner `LlamaModel` (vocabulary = the codebook; no special tokens)."""
    return LlamaConfig(
        vocab_size=config.codebook_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_sequence_length,
        initializer_range=config.initializer_range,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        attention_dropout=config.attention_dropout,
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation=config._attn_implementation,
    )


@torch.no_grad()
def encode_prompts(
    text_encoder: nn.Module, tokenizer, prompts: Sequence[str], num_condition_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs a (frozen) `AutoModel` text encoder on `prompts`.

    Returns `last_hidden_state` `[N, num_condition_tokens, C]` and the attention mask `[N, num_condition_tokens]`
    (prompts are padded/truncated to `num_condition_tokens` text tokens), on the encoder's device.
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"`prompts` must be a sequence of str, got {type(prompts).__name__}.")
    device = next(text_encoder.parameters()).device
    tokens = tokenizer(
        list(prompts), padding="max_length", truncation=True, max_length=num_condition_tokens, return_tensors="pt"
    ).to(device)
    states = text_encoder(**tokens).last_hidden_state
    return states, tokens["attention_mask"]


class FlexTokARConditionEmbedding(nn.Module):
    """Condition → the P prefix embeddings `[B, P, D]`; dropped samples get the null condition (for CFG).

    - class: `class_embedding` has `num_classes + 1` rows; row `num_classes` is the null class.
    - text: states `[B, L, C]` are truncated/padded to P slots and projected by a 2-layer MLP; padded slots and dropped
      samples take the learned `null_condition` `[P, D]`.
    """

    def __init__(self, config: FlexTokARConfig):
        super().__init__()
        self.condition_type = config.condition_type
        self.num_condition_tokens = config.num_condition_tokens
        self.num_classes = config.num_classes
        if self.condition_type == "class":
            self.class_embedding = nn.Embedding(config.num_classes + 1, config.hidden_size)
            self.null_condition = None
        else:
            self.text_projection = nn.Sequential(
                nn.Linear(config.text_hidden_size, config.hidden_size),
                nn.GELU(approximate="tanh"),
                nn.Linear(config.hidden_size, config.hidden_size),
            )
            self.null_condition = nn.Parameter(torch.zeros(config.num_condition_tokens, config.hidden_size))

    def forward(
        self,
        drop_mask: torch.BoolTensor,
        class_labels: torch.LongTensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.condition_type == "class":
            labels = torch.where(drop_mask, torch.full_like(class_labels, self.num_classes), class_labels)
            return self.class_embedding(labels)[:, None]
        num_slots = self.num_condition_tokens
        batch_size, length = text_hidden_states.shape[:2]
        if text_attention_mask is None:
            text_attention_mask = torch.ones(batch_size, length, device=text_hidden_states.device)
        states, keep = text_hidden_states[:, :num_slots], text_attention_mask[:, :num_slots].bool()
        if length < num_slots:
            states = F.pad(states, (0, 0, 0, num_slots - length))
            keep = F.pad(keep, (0, num_slots - length), value=False)
        weight = self.text_projection[0].weight
        condition = self.text_projection(states.to(device=weight.device, dtype=weight.dtype))
        keep = keep.to(condition.device) & ~drop_mask[:, None]
        return torch.where(keep[..., None], condition, self.null_condition[None].to(condition.dtype))


class FlexTokARForCausalLM(PreTrainedModel, FlexTokARGenerationMixin):
    """Autoregressive prior over FlexTok ids: condition prefix + Llama decoder (`self.model`) + `lm_head`.

    Training: `model(input_ids=token_ids [B, k], class_labels=[B])` (or `text_hidden_states`) returns the mean
    next-token cross-entropy over the k image ids. Sampling: [`generate_image_tokens`], or `generate()` directly with
    `input_ids` = P placeholders (`config.condition_token_id`) and the condition as keyword arguments.
    """

    config: FlexTokARConfig
    config_class = FlexTokARConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer"]
    _skip_keys_device_placement = [CACHE_KWARG]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    accepts_loss_kwargs = False  # the loss is a per-batch mean

    def __init__(self, config: FlexTokARConfig):
        super().__init__(config)
        self.condition_embedding = FlexTokARConditionEmbedding(config)
        self.model = LlamaModel(llama_config_from(config))
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.codebook_size, bias=False)
        self.post_init()
        # No EOS: plain `generate()` samples `max_num_tokens` ids from the full distribution by default.
        self.generation_config.do_sample = True
        self.generation_config.top_k = 0
        self.generation_config.top_p = 1.0
        self.generation_config.temperature = 1.0
        self.generation_config.max_new_tokens = config.max_num_tokens

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, FlexTokARConditionEmbedding) and module.null_condition is not None:
            init.normal_(module.null_condition, std=self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear):
        self.lm_head = value

    # ------------------------------------------------------------------ condition prefix
    def embed_condition(
        self,
        batch_size: int,
        class_labels: torch.LongTensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        condition_drop_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The P prefix embeddings `[B, P, D]`, with condition dropout (training) or an explicit drop mask."""
        config, device = self.config, next(self.condition_embedding.parameters()).device
        if config.condition_type == "class":
            if class_labels is None:
                raise ValueError("`class_labels` is required for condition_type='class'.")
            if text_hidden_states is not None:
                raise ValueError("`text_hidden_states` is not used by a class-conditional prior; pass `class_labels`.")
            class_labels = torch.as_tensor(class_labels, device=device).long().reshape(-1)
            rows = class_labels.shape[0]
            if ((class_labels < 0) | (class_labels > config.num_classes)).any():
                raise ValueError(
                    f"`class_labels` must lie in [0, {config.num_classes}] ({config.num_classes} = null class), "
                    f"got {class_labels.tolist()}."
                )
        else:
            if text_hidden_states is None:
                raise ValueError("`text_hidden_states` is required for condition_type='text'.")
            if class_labels is not None:
                raise ValueError("`class_labels` is not used by a text-conditional prior; pass `text_hidden_states`.")
            if text_hidden_states.ndim != 3 or text_hidden_states.shape[-1] != config.text_hidden_size:
                raise ValueError(
                    f"`text_hidden_states` must have shape [B, L, {config.text_hidden_size}], "
                    f"got {tuple(text_hidden_states.shape)}."
                )
            rows = text_hidden_states.shape[0]
            if text_attention_mask is not None and tuple(text_attention_mask.shape) != tuple(
                text_hidden_states.shape[:2]
            ):
                raise ValueError(
                    f"`text_attention_mask` must have shape {tuple(text_hidden_states.shape[:2])}, "
                    f"got {tuple(text_attention_mask.shape)}."
                )
        if rows != batch_size:
            raise ValueError(f"The condition has {rows} rows but `input_ids` has batch size {batch_size}.")
        if condition_drop_mask is None:
            if self.training and config.condition_dropout_prob > 0:
                draw_device = generator.device if generator is not None else device
                uniform = torch.rand(batch_size, generator=generator, device=draw_device).to(device)
                condition_drop_mask = uniform < config.condition_dropout_prob
            else:
                condition_drop_mask = torch.zeros(batch_size, dtype=torch.bool, device=device)
        condition_drop_mask = torch.as_tensor(condition_drop_mask, device=device).bool().reshape(-1)
        if condition_drop_mask.shape[0] != batch_size:
            raise ValueError(
                f"`condition_drop_mask` must have {batch_size} entries, got {condition_drop_mask.shape[0]}."
            )
        return self.condition_embedding(condition_drop_mask, class_labels, text_hidden_states, text_attention_mask)

    def _with_condition_slots(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, past_length: int
    ) -> tuple[torch.LongTensor, torch.Tensor | None]:
        """Prepends the P placeholders to a fresh sequence of image ids only (the training layout)."""
        placeholder = self.config.condition_token_id
        if past_length > 0 or input_ids.shape[1] == 0:
            return input_ids, attention_mask
        starts_with_slot = input_ids[:, 0] == placeholder
        if starts_with_slot.all():
            return input_ids, attention_mask
        if starts_with_slot.any():
            raise ValueError("`input_ids` rows must either all start with the condition placeholders or none of them.")
        slots = input_ids.new_full((input_ids.shape[0], self.config.num_condition_tokens), placeholder)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones(slots.shape), attention_mask], dim=1)
        return torch.cat([slots, input_ids], dim=1), attention_mask

    # ------------------------------------------------------------------ forward
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        class_labels: torch.LongTensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        condition_drop_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_loss: bool = True,
        generator: torch.Generator | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `[B, k]` or `[B, P + k]`): image ids in `[0, codebook_size)`,
                optionally preceded by the P condition placeholders (`config.condition_token_id`); with a KV cache,
                only the new positions.
            class_labels (`torch.LongTensor` of shape `[B]`): class ids in `[0, num_classes]` (`num_classes` = null).
            text_hidden_states (`torch.Tensor` of shape `[B, L, text_hidden_size]`): text-encoder states.
            text_attention_mask (`torch.Tensor` of shape `[B, L]`): 1 for real text tokens, 0 for padding.
            condition_drop_mask (`torch.BoolTensor` of shape `[B]`): True replaces the condition by the null condition.
                If omitted, drawn with probability `condition_dropout_prob` in training mode (from `generator` or the
                global RNG) and all False in eval mode.
            return_loss (`bool`): compute the next-token cross-entropy over the image ids (fresh sequences only).
            past_key_values / cache (`Cache`): the KV cache (`cache` is its name from transformers 5.25 on).

        Returns:
            `CausalLMOutputWithPast` with `loss` (mean over the k image ids) and `logits` `[B, L, codebook_size]`
            aligned with the (placeholder-prefixed) sequence: `logits[:, P - 1 + i]` predicts image id `i`.
        """
        if input_ids is None:
            raise ValueError("`input_ids` is required (image ids, optionally after the condition placeholders).")
        for name in ("inputs_embeds", "labels"):  # passed as None by generic wrappers (e.g. peft CAUSAL_LM)
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"`{name}` is not supported: pass image ids as `input_ids` (the loss uses them).")
        if input_ids.ndim != 2:
            raise ValueError(f"`input_ids` must have shape [B, L], got {tuple(input_ids.shape)}.")
        num_prefix, placeholder = self.config.num_condition_tokens, self.config.condition_token_id
        past_key_values = cache if cache is not None else past_key_values
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        input_ids, attention_mask = self._with_condition_slots(input_ids, attention_mask, past_length)
        num_slots = max(0, min(input_ids.shape[1], num_prefix - past_length))

        image_ids = input_ids[:, num_slots:]
        if (input_ids[:, :num_slots] != placeholder).any():
            raise ValueError(f"`input_ids` positions < {num_prefix} must hold the placeholder id {placeholder}.")
        if ((image_ids < 0) | (image_ids >= self.config.codebook_size)).any():
            raise ValueError(
                f"`input_ids` image positions must lie in [0, {self.config.codebook_size}), got values in "
                f"[{image_ids.min().item()}, {image_ids.max().item()}]."
            )
        inputs_embeds = self.model.embed_tokens(image_ids)
        if num_slots > 0:
            condition = self.embed_condition(
                input_ids.shape[0],
                class_labels,
                text_hidden_states,
                text_attention_mask,
                condition_drop_mask,
                generator,
            )
            condition = condition[:, past_length : past_length + num_slots].to(inputs_embeds)
            inputs_embeds = torch.cat([condition, inputs_embeds], dim=1)
        inputs_embeds = self.embedding_dropout(inputs_embeds)

        if use_cache is None:
            use_cache = not self.training
        outputs = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            use_cache=use_cache,
            **{CACHE_KWARG: past_key_values},
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state

        loss = None
        if return_loss and past_length == 0 and input_ids.shape[1] > num_prefix:
            logits = self.lm_head(hidden_states)
            targets = input_ids[:, num_prefix:]
            predictions = logits[:, num_prefix - 1 : -1].float()
            loss = F.cross_entropy(predictions.reshape(-1, predictions.shape[-1]), targets.reshape(-1))
            if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
                logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))
        else:
            logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_KWARG: getattr(outputs, CACHE_KWARG)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def register_auto_classes() -> None:
    """Registers the prior with `AutoConfig` / `AutoModelForCausalLM` (idempotent)."""
    AutoConfig.register(FlexTokARConfig.model_type, FlexTokARConfig, exist_ok=True)
    AutoModelForCausalLM.register(FlexTokARConfig, FlexTokARForCausalLM, exist_ok=True)


__all__ = [
    "FlexTokARConditionEmbedding",
    "FlexTokARForCausalLM",
    "encode_prompts",
    "fork_rng_from_generator",
    "llama_config_from",
    "register_auto_classes",
]
