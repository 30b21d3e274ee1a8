"""`flextok-hf evaluate`: rate-distortion report (and optional linear probe) of a saved FlexTok model.

Writes `rate_distortion.json`, `rate_distortion.md` and `rate_distortion.png` to `--output-dir` (see
`flextok_hf.evaluation`). Images are preprocessed with the image processor saved in the model folder, or one built
from the model's config. The decoder samples with the settings stored in the evaluated pipeline (`model_index.json`:
steps, guidance scale, adaptive guidance; a bare model folder gets `FlexTokPipeline`'s defaults) unless a flag
overrides them; the report records the values used and where each came from (`sampling_source`).
"""

from __future__ import annotations

import argparse

from ..argument_parser import IntListAction


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="Rate-distortion evaluation (PSNR, MAE, SSIM, classifier-feature FD, accuracy) per token budget.",
        description="Tokenizes each image once and detokenizes it with every budget and decoder seed. Writes "
        "rate_distortion.{json,md,png}. The FD uses the shipped classifier's features: it is not FID.",
    )
    parser.add_argument(
        "--model", required=True, help="folder written by FlexTokModel.save_pretrained, or a FlexTok pipeline folder"
    )
    parser.add_argument(
        "--dataset", required=True, help="bundled dataset name (see flextok_hf.data), folder or Hub id"
    )
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--num-samples", type=int, default=256, help="first N images of the split (default: 256)")
    parser.add_argument(
        "--budgets", action=IntListAction, minimum=1, default=None, help="e.g. 1,2,4,8 (default: 1,2,4,...,K)"
    )
    parser.add_argument("--seeds", action=IntListAction, default=[0, 1, 2], help="decoder seeds (default: 0,1,2)")
    parser.add_argument(
        "--num-inference-steps",
        type=int,
        default=None,
        help="decoder steps of the stored sampler (default: the pipeline's stored value)",
    )
    parser.add_argument(
        "--guidance-scale", type=float, default=None, help="guidance scale w; 1 disables (default: the pipeline's)"
    )
    parser.add_argument(
        "--adaptive-guidance",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="APG (--adaptive-guidance) or plain CFG (--no-adaptive-guidance); default: the pipeline's",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per decoder call (default: 64)")
    parser.add_argument("--classifier", default=None, help="FlexTokImageClassifier folder (default: the shipped one)")
    parser.add_argument("--linear-probe", action="store_true", help="add a linear probe on the FSQ codes")
    parser.add_argument("--probe-train-split", default="train", help="split the probe trains on (default: train)")
    parser.add_argument("--probe-train-samples", type=int, default=2000, help="probe training images (default 2000)")
    parser.add_argument("--probe-test-samples", type=int, default=500, help="probe test images (default 500)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--output-dir", required=True, help="folder for the report")
    parser.set_defaults(func=run)


SAMPLING_FLAGS = {
    "num_inference_steps": "--num-inference-steps",
    "guidance_scale": "--guidance-scale",
    "adaptive_guidance": "--[no-]adaptive-guidance",
}


def load_model_and_processor(path: str, device=None):
    """The evaluated model (eval mode), its image processor and the decoder sampling defaults stored with it.

    `path` is anything `FlexTokPipeline.from_pretrained` loads (a pipeline or model folder, an official checkpoint, a
    Hub id). The processor is the folder's `preprocessor_config.json` when it has one, else built from the model
    config. Returns `(model, processor, defaults)` with `defaults` = the pipeline config's `num_inference_steps`,
    `guidance_scale` and `adaptive_guidance` (for a text-/class-to-image pipeline: its decoder settings) and its
    `scheduler` (the saved sampler)."""
    import os

    import torch

    from ..image_processing_flextok import FlexTokImageProcessor
    from ..pipeline_flextok import FlexTokPipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = FlexTokPipeline.from_pretrained(path)
    defaults = {key: pipe.config[key] for key in SAMPLING_FLAGS}
    defaults["scheduler"] = pipe.scheduler
    model = pipe.flextok.to(device).eval()
    folder = os.path.join(path, "flextok") if os.path.isfile(os.path.join(path, "model_index.json")) else path
    if os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        processor = FlexTokImageProcessor.from_pretrained(folder)
    else:
        processor = FlexTokImageProcessor.from_model_config(model.config)
    return model, processor, defaults


def resolve_sampling(args, defaults: dict) -> tuple[dict, dict]:
    """`(settings, sources)`: each sampling setting from its flag when given, else the stored default; `sources` says
    which (the flag, or `"pipeline"`)."""
    settings, sources = {}, {}
    for key, flag in SAMPLING_FLAGS.items():
        value = getattr(args, key)
        settings[key], sources[key] = (defaults[key], "pipeline") if value is None else (value, flag)
    if "scheduler" in defaults:
        settings["scheduler"], sources["scheduler"] = defaults["scheduler"], "pipeline"
    return settings, sources


def run(args) -> int:
    from ..data import load_image_dataset
    from ..evaluation import evaluate_rate_distortion, format_markdown, linear_probe, write_report

    model, processor, defaults = load_model_and_processor(args.model, args.device)
    sampling, sampling_source = resolve_sampling(args, defaults)
    classifier = None
    if args.classifier is not None:
        from ..metrics.classifier import FlexTokImageClassifier

        classifier = FlexTokImageClassifier.from_pretrained(args.classifier, use_safetensors=True)
        classifier = classifier.to(model.device).eval()
    dataset = load_image_dataset(args.dataset, args.split)
    feature_network = None
    if classifier is not None:
        from ..metrics.classifier import ClassifierFeatureNetwork

        feature_network = ClassifierFeatureNetwork(classifier)
    results = evaluate_rate_distortion(
        model,
        dataset,
        budgets=args.budgets,
        num_samples=args.num_samples,
        seeds=args.seeds,
        **sampling,
        batch_size=args.batch_size,
        image_processor=processor,
        feature_network=feature_network,
        classifier=classifier,
    )
    results["model"] = args.model
    results["dataset"] = f"{args.dataset} ({args.split})"
    results["sampling_source"] = sampling_source
    if args.linear_probe:
        if "label" not in dataset.column_names:
            raise ValueError(f"--linear-probe needs labels, but dataset {args.dataset!r} has no `label` column.")
        results["linear_probe"] = linear_probe(
            model,
            load_image_dataset(args.dataset, args.probe_train_split),
            dataset,
            budgets=results["budgets"],
            num_train=args.probe_train_samples,
            num_test=args.probe_test_samples,
            batch_size=args.batch_size,
            image_processor=processor,
        )
    paths = write_report(results, args.output_dir)
    print(format_markdown(results))
    print("Wrote " + ", ".join(paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point without the `flextok-hf` front end (used by `examples/evaluate_tokenizer.py`)."""
    import sys

    parser = argparse.ArgumentParser(prog="flextok-hf")
    register(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["evaluate", *(sys.argv[1:] if argv is None else argv)]))
