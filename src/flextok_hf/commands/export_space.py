"""`flextok-hf export-space OUT_DIR`: a self-contained Hugging Face Space folder running the FlexTok demo.

The work is done by `flextok_hf.space.export_space` (see there for the folder's contents).
"""

from __future__ import annotations

import glob
import os

from ..space import (  # noqa: F401  (the names this command module has always offered)
    SPACE_PYTHON_VERSION,
    SPACE_SDK_VERSION,
    build_wheel,
    check_wheel,
    copy_model,
    export_space,
    find_source_dir,
    referenced_packages,
    render_app,
    render_readme,
    render_requirements,
    write_examples,
)


def register(subparsers):
    parser = subparsers.add_parser(
        "export-space",
        help="Write a deployable Hugging Face Space folder (app.py, README front matter, requirements, wheel).",
        description="Builds a wheel of this package into OUT_DIR/wheels (the shipped default weights are package "
        "data), renders app.py / README.md / requirements.txt and copies local --model / --text2image folders. "
        "Upload the folder with `hf upload <user>/<space> OUT_DIR --repo-type space`.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (must be empty or absent)")
    parser.add_argument("--model", default=None, help="FlexTok pipeline folder or Hub id (default: shipped weights)")
    parser.add_argument(
        "--text2image",
        default=None,
        help="generation pipeline folder or Hub id (default: the shipped one when present; 'none' = no Generate tab)",
    )
    parser.add_argument("--space-id", default=None, help="user/space: also list the wheel by URL in requirements")
    parser.add_argument("--title", default="FlexTok", help="Space title (default FlexTok)")
    parser.add_argument("--source", default=None, help="flextok_hf project folder (default: found from the install)")
    parser.add_argument("--wheel", default=None, help="ship this prebuilt flextok_hf wheel instead of building one")
    parser.add_argument("--no-examples", action="store_true", help="do not bundle the sample images")
    parser.set_defaults(func=run)


def run(args) -> int:
    out = export_space(
        args.out_dir,
        model=args.model,
        text2image=args.text2image,
        space_id=args.space_id,
        title=args.title,
        source_dir=args.source,
        wheel=args.wheel,
        examples=not args.no_examples,
    )
    print(f"Space written to {out}:")
    for path in sorted(glob.glob(os.path.join(out, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            print(f"  {os.path.relpath(path, out)} ({os.path.getsize(path):,} bytes)")
    return 0
