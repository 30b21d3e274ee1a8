"""`flextok-hf push`: a saved model / pipeline folder -> a Hub repo, with a rendered model card, in one commit."""

CARD_KINDS = ("tokenizer", "text2image", "class2image", "prior")  # = flextok_hf.hub.CARD_KINDS (kept import-free)


def register(subparsers):
    parser = subparsers.add_parser(
        "push",
        help="Publish a FlexTok model or pipeline folder to the Hub with a model card.",
        description="Uploads the folder's configs and safetensors weights (never Trainer checkpoints or pickles), the "
        "image processor of a FlexTokModel, and a model card rendered from what the folder holds (config, "
        "rate_distortion.json/.png, log_history.json, loss_curve.png, TRAINING.md, training_command.txt) unless the "
        "folder already has a README.md. Everything goes in one commit.",
    )
    parser.add_argument("folder", help="a save_pretrained folder (FlexTokModel, prior or pipeline), e.g. a run dir")
    parser.add_argument("--repo-id", required=True, help="target repo, 'namespace/name' (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--card-kind", choices=CARD_KINDS, default=None, help="card template (default: inferred)")
    parser.add_argument("--no-card", action="store_true", help="do not render a card")
    parser.add_argument("--model-name", default=None, help="card title (default: the repo name)")
    parser.add_argument("--description", default=None, help="card opening paragraph")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--dataset", action="append", default=None, help="training dataset id (repeatable)")
    parser.add_argument("--tag", action="append", default=None, help="extra tag (repeatable)")
    parser.add_argument("--base-model", default=None, help="repo id the model was fine-tuned from")
    parser.add_argument("--commit-message", default="Upload FlexTok model with flextok_hf")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import os

    from ..hub import model_card_from_folder, push_to_hub

    if not os.path.isdir(args.folder):
        raise ValueError(f"`folder` must be an existing directory, got {args.folder!r}.")
    card = None
    if args.no_card:
        card = False
    elif not os.path.isfile(os.path.join(args.folder, "README.md")):
        overrides = {"license": args.license, "model_name": args.model_name or args.repo_id.split("/")[-1]}
        for key, value in (
            ("description", args.description),
            ("datasets", args.dataset),
            ("tags", args.tag),
            ("base_model", args.base_model),
        ):
            if value is not None:
                overrides[key] = value
        card = model_card_from_folder(args.folder, kind=args.card_kind, repo_id=args.repo_id, **overrides)
    info = push_to_hub(
        args.folder,
        args.repo_id,
        card=card,
        private=args.private,
        token=args.token,
        commit_message=args.commit_message,
    )
    print(f"Pushed {args.folder} to {info.repo_url} ({info.commit_url})")
    return 0
