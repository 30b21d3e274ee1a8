"""`flextok-hf train-classifier`: train the small evaluation classifier (`FlexTokImageClassifier`) with `Trainer`.

Every argument after the subcommand goes to `flextok_hf.training.classifier.parse_classifier_args`
(`ClassifierArguments` + `ClassifierTrainingArguments`, which includes all of `transformers.TrainingArguments`);
`flextok-hf train-classifier -h` lists them. The default run reproduces the shipped weights.
"""

import argparse
import shlex


def register(subparsers):
    # Prefix "+": the "--flags" are collected here and parsed by HfArgumentParser in `run`, which keeps transformers'
    # Trainer imports out of `flextok-hf --help`.
    parser = subparsers.add_parser(
        "train-classifier",
        help="Train the small evaluation classifier (MNIST + Animal-MNIST, 20 classes) with Trainer.",
        description="Run `flextok-hf train-classifier -h` for all flags.",
        add_help=False,
        prefix_chars="+",
    )
    parser.add_argument(
        "training_args", nargs="*", help="--output_dir DIR and any TrainingArguments / classifier flags"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.classifier import train_classifier

    argv = list(args.training_args)
    results = train_classifier(argv, command=shlex.join(["flextok-hf", "train-classifier", *argv]))
    for name, accuracy in results["test_accuracy"].items():
        print(f"{name}: test accuracy {accuracy:.4f}")
    print(f"Saved the classifier to {results['output_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point without the `flextok-hf` front end (used by `examples/train_classifier.py`)."""
    import sys

    parser = argparse.ArgumentParser(prog="flextok-hf")
    register(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["train-classifier", *(sys.argv[1:] if argv is None else argv)]))
