"""`flextok-hf generate`: prompts (or class names / ids) -> a grid of images from a prior pipeline."""


def register(subparsers):
    parser = subparsers.add_parser(
        "generate",
        help="Generate images with a FlexTok text-to-image or class-to-image pipeline (a grid PNG).",
        description="One grid row per prompt, one column per image. For a class-conditional pipeline the prompts "
        "are class names (see the pipeline's id2label) or class ids.",
    )
    parser.add_argument("prompts", nargs="+", help="prompts, or class names / ids")
    parser.add_argument(
        "--model", required=True, help="pipeline folder (e.g. <train-prior output>/pipeline) or Hub id"
    )
    parser.add_argument("--out", default="generated.png", help="output grid PNG (default generated.png)")
    parser.add_argument("--num-images", type=int, default=4, help="images per prompt (default 4)")
    parser.add_argument("--num-tokens", type=int, default=None, help="k ids to sample (default: the pipeline's)")
    parser.add_argument("--prior-guidance-scale", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--decoder-guidance-scale", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--steps", type=int, default=None, help="decoder steps (default: the pipeline's)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--negative-prompt", default=None, help="text pipelines: the prior's unconditional branch")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def class_labels(pipe, prompts: list[str]) -> list[int | str]:
    """Names the pipeline knows stay names; other integer literals become class ids."""
    labels = pipe.labels
    return [p if p.strip() in labels or not p.strip().lstrip("-").isdigit() else int(p) for p in prompts]


def run(args) -> int:
    import os

    import torch
    from diffusers.utils import make_image_grid

    from ..pipeline_flextok_text2image import FlexTokText2ImagePipeline, load_generation_pipeline

    pipe = load_generation_pipeline(args.model)
    sampling = dict(
        num_tokens=args.num_tokens,
        prior_guidance_scale=args.prior_guidance_scale,
        decoder_guidance_scale=args.decoder_guidance_scale,
        num_inference_steps=args.steps,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=torch.Generator().manual_seed(args.seed),
    )
    if isinstance(pipe, FlexTokText2ImagePipeline):
        result = pipe(
            args.prompts, num_images_per_prompt=args.num_images, negative_prompt=args.negative_prompt, **sampling
        )
    else:
        if args.negative_prompt is not None:
            raise ValueError("`--negative-prompt` needs a text-to-image pipeline; this one is class-conditional.")
        result = pipe(class_labels(pipe, args.prompts), num_images_per_label=args.num_images, **sampling)
    grid = make_image_grid(result.images, rows=len(args.prompts), cols=args.num_images)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    grid.save(args.out)
    print(f"{len(result.images)} images ({len(args.prompts)} rows x {args.num_images}) written to {args.out}")
    for index, ids in enumerate(result.token_ids):
        print(f"{args.prompts[index // args.num_images]!r} #{index % args.num_images}: {ids.tolist()}")
    return 0
