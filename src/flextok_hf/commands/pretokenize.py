"""`flextok-hf pretokenize`: run a trained FlexTok over image datasets once and store the ids (for the prior)."""


def register(subparsers):
    parser = subparsers.add_parser(
        "pretokenize",
        help="Tokenize image datasets with a FlexTok model into a datasets.Dataset of ids (+ label, caption).",
        description="Writes a DatasetDict (one entry per split) with `token_ids` (K ids per image) and the `label` "
        "(ClassLabel; label names of several datasets are merged) and `caption` columns, plus "
        "flextok_pretokenized.json (codebook size, K), with save_to_disk and/or push_to_hub.",
    )
    parser.add_argument("--model", required=True, help="FlexTok model or pipeline folder, or a Hub id")
    parser.add_argument(
        "--dataset", required=True, help="comma-separated dataset names (bundled, image folder, saved, Hub id)"
    )
    parser.add_argument("--split", default="train", help="comma-separated splits, e.g. train,test (default train)")
    parser.add_argument("--output-dir", default=None, help="save_to_disk folder")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also push to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--batch-size", type=int, default=64, help="images per tokenize call (default 64)")
    parser.add_argument("--max-samples", type=int, default=None, help="first N rows of each dataset and split")
    parser.add_argument("--seed", type=int, default=0, help="seed of VAE posterior sampling, if the model samples")
    parser.add_argument("--device", default=None, help="default: the accelerator if any, else cpu")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.pretokenize import pretokenize

    if args.output_dir is None and args.push_to_hub is None:
        raise ValueError("Pass `--output-dir` and/or `--push-to-hub`: the ids have to go somewhere.")
    result = pretokenize(
        args.model,
        args.dataset,
        splits=args.split,
        output_dir=args.output_dir,
        push_to_hub=args.push_to_hub,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        private=args.private or None,
        seed=args.seed,
        device=args.device,
    )
    for split, dataset in result.items():
        label = dataset.features.get("label")
        classes = f", {label.num_classes} classes" if label is not None else ""
        print(f"{split}: {len(dataset)} rows, columns {dataset.column_names}{classes}")
    for target in (args.output_dir, args.push_to_hub):
        if target is not None:
            print(f"written to {target}")
    return 0
