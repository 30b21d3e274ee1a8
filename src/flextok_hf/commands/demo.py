"""`flextok-hf demo`: the interactive Gradio demo (Tokenize and Generate tabs) on a local server."""


def register(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="Launch the interactive Gradio demo (tokenize / reconstruct at any budget, generate).",
        description="Serves the FlexTok demo. Without --model it uses the weights shipped with the package (an "
        "error tells you to pass --model when this installation has none).",
    )
    parser.add_argument(
        "--model", default=None, help="FlexTokPipeline or FlexTokModel folder, or a Hub id (default: shipped weights)"
    )
    parser.add_argument(
        "--text2image",
        default=None,
        help="text- or class-to-image pipeline folder or Hub id for the Generate tab (default: the shipped one when "
        "present; 'none' disables the tab)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 = all)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--share", choices=("yes", "no"), default="no", help="also open a public gradio.live link (default no)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests of one tab run at once (default 1)")
    parser.add_argument("--max-file-size", default="10mb", help="largest accepted upload (default 10mb)")
    parser.set_defaults(func=run)


def run(args) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"`--port` must be in [1, 65535], got {args.port}.")
    from ..demo import build_demo, launch_demo, load_demo_pipelines

    tokenizer, generator = load_demo_pipelines(args.model, args.text2image, device=args.device)
    demo = build_demo(tokenizer, generator, concurrency_limit=args.concurrency)
    launch_demo(demo, host=args.host, port=args.port, share=args.share == "yes", max_file_size=args.max_file_size)
    return 0
