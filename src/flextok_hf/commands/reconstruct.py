"""`flextok-hf reconstruct`: images -> coarse-to-fine reconstruction grid + token ids."""


def register(subparsers):
    parser = subparsers.add_parser(
        "reconstruct",
        help="Tokenize images and reconstruct them from their first k tokens for several k (a grid PNG).",
        description="Writes a grid with one row per image: the original, then one reconstruction per token budget "
        "(all budgets start from the same noise). Prints each image's token ids.",
    )
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", required=True, help="FlexTokPipeline or FlexTokModel folder, or a Hub id")
    parser.add_argument(
        "--num-tokens", default=None, help="comma-separated budgets, e.g. 1,4,16 (default 1,2,4,...,K)"
    )
    parser.add_argument("--out", default="reconstruction.png", help="output grid PNG")
    parser.add_argument("--steps", type=int, default=None, help="decoder steps (default: the pipeline's)")
    parser.add_argument(
        "--guidance-scale", type=float, default=None, help="decoder guidance (default: the pipeline's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def parse_budgets(text: str | None) -> list[int] | None:
    if text is None:
        return None
    from ..argument_parser import parse_int_list

    try:
        return parse_int_list(text, "--num-tokens", minimum=1)
    except ValueError:
        raise ValueError(
            f"`--num-tokens` must be comma-separated positive integers (e.g. 1,4,16), got {text!r}."
        ) from None


def run(args) -> int:
    import os

    from diffusers.utils import make_image_grid

    from ..image_processing_flextok import load_image_file
    from ..pipeline_flextok import FlexTokPipeline

    budgets = parse_budgets(args.num_tokens)
    images = [load_image_file(path, "images").convert("RGB") for path in args.images]  # before the model: fail fast
    pipe = FlexTokPipeline.from_pretrained(args.model)
    num_registers = pipe.flextok.config.num_registers
    if budgets is not None and max(budgets) > num_registers:
        raise ValueError(
            f"`--num-tokens` must be at most K = {num_registers} for this model, got {args.num_tokens!r}."
        )
    result = pipe.coarse_to_fine(
        images,
        budgets=budgets,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
    )
    size = pipe.flextok.config.image_size
    originals = pipe.image_processor.postprocess(pipe.preprocess(images).float(), "pil")
    cells = []
    for original, row in zip(originals, result.images):
        cells.extend([original.resize((size, size))] + list(row))
    grid = make_image_grid(cells, rows=len(images), cols=1 + len(result.budgets))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    grid.save(args.out)
    print(f"Columns: original, then budgets {result.budgets}. Grid written to {args.out}")
    for path, ids in zip(args.images, result.token_ids):
        print(f"{path}: {ids.tolist()}")
    return 0
