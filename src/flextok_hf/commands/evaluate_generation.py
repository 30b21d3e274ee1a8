"""`flextok-hf evaluate-generation`: how often a prior's generations show the requested class, per token budget.

Conditions come from a labelled dataset: its distinct captions (text-to-image pipelines) or class ids
(class-to-image pipelines); the shipped classifier (or `--classifier`) labels the generated images. Writes
`generation_accuracy.{json,md,png}` (see `flextok_hf.evaluation_generation`). Sampling uses the settings stored in the
pipeline (`model_index.json`) unless a flag overrides them; the report records every setting used (`sampling`) and
where it came from (`sampling_source`).
"""

from __future__ import annotations

import argparse

from ..argument_parser import IntListAction

# Pipeline config key -> the flag that overrides it.
SAMPLING_FLAGS = {
    "prior_guidance_scale": "--prior-guidance-scale",
    "decoder_guidance_scale": "--decoder-guidance-scale",
    "num_inference_steps": "--num-inference-steps",
    "adaptive_guidance": "--[no-]adaptive-guidance",
}


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate-generation",
        help="Classifier accuracy of generated images per token budget (text- or class-to-image pipeline).",
        description=__doc__,
    )
    parser.add_argument("--model", default=None, help="generation pipeline folder or Hub id (default: shipped)")
    parser.add_argument("--dataset", default="mnist,animal_mnist", help="labelled dataset(s) giving the conditions")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--budgets", action=IntListAction, minimum=1, default=None, help="e.g. 1,2,4,8 (default: 1,2,4,...,K)"
    )
    parser.add_argument("--num-images", type=int, default=4, help="images per condition and budget (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior-guidance-scale", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--decoder-guidance-scale", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--num-inference-steps", type=int, default=None, help="default: the pipeline's")
    parser.add_argument(
        "--adaptive-guidance",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decoder APG (--adaptive-guidance) or plain CFG (--no-adaptive-guidance); default: the pipeline's",
    )
    parser.add_argument("--classifier", default=None, help="FlexTokImageClassifier folder (default: the shipped one)")
    parser.add_argument("--output-dir", required=True, help="folder for the report")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..data import load_image_dataset
    from ..evaluation_generation import (
        conditions_from_dataset,
        evaluate_conditional_generation,
        format_generation_markdown,
        write_generation_report,
    )
    from ..metrics.classifier import FlexTokImageClassifier, load_default_classifier
    from ..pipeline_flextok_text2image import FlexTokText2ImagePipeline, load_generation_pipeline
    from ..pretrained import pretrained_path

    pipeline = load_generation_pipeline(args.model or pretrained_path("text2image"))
    if args.classifier:
        classifier = FlexTokImageClassifier.from_pretrained(args.classifier, use_safetensors=True).eval()
    else:
        classifier = load_default_classifier()
    conditions, targets, names = [], [], []
    is_text = isinstance(pipeline, FlexTokText2ImagePipeline)
    if not is_text and "," in args.dataset:
        raise ValueError("`--dataset`: a class-to-image pipeline takes one dataset (its class ids are the prior's).")
    for name in args.dataset.split(","):
        dataset = load_image_dataset(name.strip(), args.split)
        column = "caption" if is_text else "label"
        found, found_targets = conditions_from_dataset(dataset, classifier, condition_column=column)
        conditions += found
        targets += found_targets
        names += found if is_text else [dataset.features["label"].int2str(c) for c in found]
    sampling, sampling_source = {}, {}
    for key, flag in SAMPLING_FLAGS.items():
        value = getattr(args, key)
        sampling[key], sampling_source[key] = (pipeline.config[key], "pipeline") if value is None else (value, flag)
    results = evaluate_conditional_generation(
        pipeline,
        conditions,
        targets,
        classifier,
        budgets=args.budgets,
        num_images_per_condition=args.num_images,
        seed=args.seed,
        condition_names=names,
        **sampling,
    )
    results["model"] = args.model or "shipped text2image"
    results["dataset"] = f"{args.dataset} ({args.split})"
    results["sampling_source"] = sampling_source
    paths = write_generation_report(results, args.output_dir)
    print(format_generation_markdown(results))
    print("Wrote " + ", ".join(paths.values()))
    return 0
