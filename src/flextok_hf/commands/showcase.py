"""`flextok-hf showcase`: the README's main job — FlexTok at work on bundled images, offline, with the shipped models.

Writes `reconstructions.png` (bundled sample images, then their reconstructions from the first 1, 2, 4, ..., K tokens)
and `generations.png` (one row per prompt, images generated from k tokens by the text-conditional prior) and prints
the token ids.
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
    parser.set_defaults(func=run)


def run(args) -> int:
    import os

    import torch
    from diffusers.utils import make_image_grid

    from ..data import sample_images
    from ..pipeline_flextok import FlexTokPipeline
    from ..pipeline_flextok_text2image import load_generation_pipeline
    from ..pretrained import pretrained_path

    os.makedirs(args.out, exist_ok=True)
    tokenizer = FlexTokPipeline.from_pretrained(args.model or pretrained_path("tokenizer"))
    names, images = zip(*sample_images(sources=("mnist", "animal_mnist")))
    result = tokenizer.coarse_to_fine(list(images), generator=torch.Generator().manual_seed(args.seed))
    size = tokenizer.flextok.config.image_size
    originals = tokenizer.image_processor.postprocess(tokenizer.preprocess(list(images)).float(), "pil")
    cells = [cell for original, row in zip(originals, result.images) for cell in [original, *row]]
    path = os.path.join(args.out, "reconstructions.png")
    make_image_grid([c.resize((size, size)) for c in cells], rows=len(images), cols=1 + len(result.budgets)).save(path)
    print(f"{path}: rows = {len(images)} bundled images; columns = original, then the first {result.budgets} tokens")
    for name, ids in zip(names, result.token_ids):
        print(f"  {name}: {ids.tolist()}")

    generator = load_generation_pipeline(args.text2image or pretrained_path("text2image"))
    rows = []
    for index, prompt in enumerate(args.prompts):
        out = generator(
            prompt,
            num_tokens=args.num_tokens,
            num_images_per_prompt=args.num_images,
            generator=torch.Generator().manual_seed(args.seed + index),
        )
        rows.extend(out.images)
        print(f"  {prompt!r}: {out.token_ids[0].tolist()}")
    path = os.path.join(args.out, "generations.png")
    make_image_grid([im.resize((size, size)) for im in rows], rows=len(args.prompts), cols=args.num_images).save(path)
    print(f"{path}: one row per prompt {list(args.prompts)}")
    return 0
