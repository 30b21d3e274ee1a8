"""`flextok-hf showcase`: the README's main job — FlexTok at work on bundled images, offline, with the shipped models.

Writes `reconstructions.png` (bundled sample images, then their reconstructions from the first 1, 2, 4, ..., K tokens;
rows labelled with the image's class, columns with the budget) and `generations.png` (one row per prompt, images
generated from k tokens by the text-conditional prior), cells upscaled 4x (nearest), and prints the token ids.
"""

DEFAULT_PROMPTS = ("handwritten digit seven", "handwritten digit two", "a giraffe", "an elephant")


def register(subparsers):
    parser = subparsers.add_parser(
        "showcase",
        help="Reconstruct bundled images at several token budgets and generate images from prompts (offline).",
        description=__doc__,
    )
    parser.add_argument("--out", default="showcase", help="output folder (default: ./showcase)")
    parser.add_argument("--model", default=None, help="FlexTok pipeline/model folder or Hub id (default: shipped)")
    parser.add_argument(
        "--text2image", default=None, help="text-to-image pipeline folder or Hub id (default: shipped)"
    )
    parser.add_argument("--prompts", nargs="*", default=list(DEFAULT_PROMPTS))
    parser.add_argument("--num-images", type=int, default=4, help="images per prompt")
    parser.add_argument(
        "--num-tokens", type=int, default=None, help="tokens generated per image (default: the pipeline's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=4, help="integer upscaling of each cell (default: 4)")
    parser.add_argument("--no-labels", action="store_true", help="grids without row / column labels")
    parser.set_defaults(func=run)


def run(args) -> int:
    import os

    if args.scale < 1:
        raise ValueError(f"--scale must be an integer >= 1, got {args.scale}.")

    import torch

    from ..data import sample_images
    from ..pipeline_flextok import FlexTokPipeline
    from ..pipeline_flextok_text2image import load_generation_pipeline
    from ..pretrained import pretrained_path
    from ..visualization import labelled_grid

    os.makedirs(args.out, exist_ok=True)
    tokenizer = FlexTokPipeline.from_pretrained(args.model or pretrained_path("tokenizer"))
    names, images = zip(*sample_images(sources=("mnist", "animal_mnist")))
    result = tokenizer.coarse_to_fine(list(images), seed=args.seed)
    size = tokenizer.flextok.config.image_size
    originals = tokenizer.image_processor.postprocess(tokenizer.preprocess(list(images)).float(), "pil")
    grid = labelled_grid(
        [[original.resize((size, size)), *row] for original, row in zip(originals, result.images)],
        row_labels=None if args.no_labels else [name.split(": ", 1)[-1] for name in names],
        column_labels=None
        if args.no_labels
        else ["original"] + [f"{k} token{'s' if k > 1 else ''}" for k in result.budgets],
        scale=args.scale,
    )
    path = os.path.join(args.out, "reconstructions.png")
    grid.save(path)
    print(f"{path}: rows = {len(images)} bundled images; columns = original, then the first {result.budgets} tokens")
    for name, ids in zip(names, result.token_ids):
        print(f"  {name}: {ids.tolist()}")

    generator = load_generation_pipeline(args.text2image or pretrained_path("text2image"))
    rows, num_tokens = [], None
    for index, prompt in enumerate(args.prompts):
        out = generator(
            prompt,
            num_tokens=args.num_tokens,
            num_images_per_prompt=args.num_images,
            generator=torch.Generator().manual_seed(args.seed + index),
        )
        rows.append([image.resize((size, size)) for image in out.images])
        num_tokens = len(out.token_ids[0])
        print(f"  {prompt!r}: {out.token_ids[0].tolist()}")
    path = os.path.join(args.out, "generations.png")
    columns = [f"#{i + 1}, {num_tokens} tok." for i in range(args.num_images)]
    if args.no_labels:
        labelled_grid(rows, scale=args.scale).save(path)
    else:
        labelled_grid(rows, row_labels=list(args.prompts), column_labels=columns, scale=args.scale).save(path)
    print(f"{path}: one row per prompt {list(args.prompts)}")
    return 0
