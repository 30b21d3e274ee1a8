"""`flextok-hf tokenize`: images -> FlexTok ids at a fixed budget or, with `--num-tokens auto`, the smallest budget per
image that reaches a quality target (JSON lines and/or a `datasets` folder)."""


def register(subparsers):
    parser = subparsers.add_parser(
        "tokenize",
        help="Tokenize images; --num-tokens auto picks per image the smallest budget reaching a quality target.",
        description="Writes one JSON line per image (its ids, budget and, with --num-tokens auto, the achieved "
        "quality) and/or a datasets folder (all K ids + the budget per image; the layout `pretokenize` writes, for "
        "training priors). With --num-tokens auto each image gets the smallest of the budgets 1, 2, 4, ..., K (within "
        "--min-tokens/--max-tokens) whose reconstruction reaches --target-psnr (or --max-feature-distance); an image "
        "that cannot gets the largest budget and target_met=false. Without --out and --dataset-dir the JSON lines "
        "are printed.",
    )
    parser.add_argument("images", nargs="+", help="image files, or folders of image files")
    parser.add_argument(
        "--model", default=None, help="FlexTokPipeline or FlexTokModel folder, or a Hub id (default: shipped weights)"
    )
    parser.add_argument("--num-tokens", default=None, help="'auto' or a budget in [1, K] (default: all K)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-psnr", type=float, default=None, help="auto: minimum PSNR in dB, in (0, 100]")
    target.add_argument(
        "--max-feature-distance",
        type=float,
        default=None,
        help="auto: maximum cosine distance of the shipped classifier's features, in [0, 2]",
    )
    parser.add_argument("--min-tokens", type=int, default=None, help="auto: smallest allowed budget (default 1)")
    parser.add_argument("--max-tokens", type=int, default=None, help="auto: largest allowed budget (default K)")
    parser.add_argument("--steps", type=int, default=None, help="auto: decoder steps (default: the pipeline's)")
    parser.add_argument(
        "--search-steps", type=int, default=None, help="auto: decoder steps of the search (default steps // 10)"
    )
    parser.add_argument(
        "--guidance-scale", type=float, default=None, help="auto: decoder guidance (default: the pipeline's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="auto: decoder noise seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument("--out", default=None, help="JSON lines file to write")
    parser.add_argument("--dataset-dir", default=None, help="datasets folder (save_to_disk) to write")
    parser.set_defaults(func=run)


def parse_num_tokens(text: str | None) -> int | str | None:
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"`--num-tokens` must be 'auto' or an integer budget, got {text!r}.") from None


def run(args) -> int:
    import json
    import sys

    from ..adaptive_budget import allowed_target_range, check_quality_target
    from ..pipeline_flextok import FlexTokPipeline
    from ..pretrained import pretrained_path
    from ..tokenize_images import (
        expand_image_paths,
        jsonl_records,
        save_ids_dataset,
        tokenize_image_files,
        write_jsonl,
    )

    num_tokens = parse_num_tokens(args.num_tokens)
    auto_flags = {
        "--target-psnr": args.target_psnr,
        "--max-feature-distance": args.max_feature_distance,
        "--min-tokens": args.min_tokens,
        "--max-tokens": args.max_tokens,
        "--steps": args.steps,
        "--search-steps": args.search_steps,
        "--guidance-scale": args.guidance_scale,
    }
    if num_tokens != "auto":
        given = [flag for flag, value in auto_flags.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} can only be used with `--num-tokens auto`.")
    elif args.target_psnr is None and args.max_feature_distance is None:
        raise ValueError("`--num-tokens auto` needs `--target-psnr` (dB) or `--max-feature-distance`.")
    else:  # check the target before loading the model
        flag, metric = ("--target-psnr", "psnr") if args.target_psnr is not None else ("--max-feature-distance", "")
        metric = metric or "feature_distance"
        value = auto_flags[flag]
        try:
            check_quality_target(value, metric, 1)
        except ValueError:
            raise ValueError(f"`{flag}` must be {allowed_target_range(metric)}, got {value}.") from None
    paths = expand_image_paths(args.images)  # before loading the model: fail fast on a wrong path
    pipe = FlexTokPipeline.from_pretrained(args.model or pretrained_path("tokenizer"))
    pipe.set_progress_bar_config(disable=True)
    auto = {}
    if num_tokens == "auto":
        metric = "psnr" if args.target_psnr is not None else "feature_distance"
        auto = dict(
            quality_target=args.target_psnr if metric == "psnr" else args.max_feature_distance,
            quality_metric=metric,
            min_tokens=args.min_tokens,
            max_tokens=args.max_tokens,
            num_inference_steps=args.steps,
            search_num_inference_steps=args.search_steps,
            guidance_scale=args.guidance_scale,
        )
    ids = tokenize_image_files(pipe, paths, num_tokens, seed=args.seed, batch_size=args.batch_size, **auto)
    report = sys.stdout
    if args.out is None and args.dataset_dir is None:  # stdout holds the JSON lines, the report goes to stderr
        report = sys.stderr
        for record in jsonl_records(ids):
            print(json.dumps(record))
    if args.out is not None:
        print(f"JSON lines written to {write_jsonl(ids, args.out)}", file=report)
    if args.dataset_dir is not None:
        save_ids_dataset(ids, pipe.flextok, args.dataset_dir)
        print(f"datasets folder written to {args.dataset_dir}", file=report)
    if num_tokens == "auto":
        unit = " dB" if auto["quality_metric"] == "psnr" else ""
        for row in ids:
            verdict = "met" if row["target_met"] else "NOT met: it gets the largest budget"
            quality = f"{auto['quality_metric']} {row['quality']:.3f}{unit}"
            print(f"{row['image']}: {row['num_tokens']} tokens, {quality} (target {verdict})", file=report)
        met, mean = sum(ids["target_met"]), sum(ids["num_tokens"]) / len(ids)
        print(f"{met}/{len(ids)} images met the target; mean budget {mean:.2f} tokens", file=report)
    return 0
