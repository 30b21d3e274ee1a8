"""`flextok-hf convert-official`: an apple/ml-flextok checkpoint -> a `save_pretrained` folder."""


def register(subparsers):
    parser = subparsers.add_parser(
        "convert-official",
        help="Convert an official apple/ml-flextok safetensors checkpoint (never instantiating its Hydra config).",
        description="Reads the checkpoint's Hydra metadata as data (allowlisted `_target_`s only) and writes a "
        "FlexTokModel folder (config.json + model.safetensors) plus its image processor.",
    )
    parser.add_argument(
        "src",
        help="official model.safetensors, a folder holding it (config in its metadata or in the folder's config.json), "
        "or a Hub id (needs a network)",
    )
    parser.add_argument("output_dir", help="folder to write")
    parser.add_argument(
        "--vae-config",
        help="JSON with the VAE's AutoencoderKL config (or the fixture-style wrapper file); default: a vae_config.json "
        "next to the checkpoint, else the config of the VAE repo named in the metadata (hf_hub_path), else the "
        "released SDXL-like shape with the checkpoint's latent channels",
    )
    parser.add_argument("--vae", help="diffusers AutoencoderKL folder or Hub id, for checkpoints without VAE tensors")
    parser.add_argument(
        "--image-size", type=int, default=None, help="override the image size (default: from the config)"
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..convert_official import convert_official_checkpoint

    model = convert_official_checkpoint(
        args.src,
        args.output_dir,
        vae_config=args.vae_config,
        vae=args.vae,
        image_size=args.image_size,
        dtype=getattr(torch, args.dtype),
    )
    _save_processor(model, args.output_dir)
    config = model.config
    print(
        f"Converted to {args.output_dir}: {config.image_size}px, {config.num_registers} registers, FSQ "
        f"{config.fsq_levels}, encoder {config.encoder_num_layers}x{config.encoder_hidden_size}, decoder "
        f"{config.decoder_num_layers}x{config.decoder_hidden_size}."
    )
    return 0


def _save_processor(model, output_dir):
    from ..image_processing_flextok import FlexTokImageProcessor

    FlexTokImageProcessor.from_model_config(model.config).save_pretrained(output_dir)
