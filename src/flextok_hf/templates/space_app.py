"""FlexTok demo Space: ordered 1D image tokens, reconstructions from any prefix, and generation.

Written by `flextok-hf export-space`. When flextok_hf is not installed yet, the wheel bundled in wheels/ is installed
into ./.packages at start-up (a Space installs requirements.txt before this folder is copied in). The environment
variables FLEXTOK_MODEL and FLEXTOK_TEXT2IMAGE (e.g. Space variables) override the models below.
"""

import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# A folder of this Space, a Hub id, or None (the weights shipped inside the flextok_hf wheel).
TOKENIZER = os.environ.get("FLEXTOK_MODEL", None)
# The Generate tab's pipeline: as above; None = the shipped one when present; "none" = no Generate tab.
TEXT2IMAGE = os.environ.get("FLEXTOK_TEXT2IMAGE", None)


def ensure_flextok_hf():
    """Makes `import flextok_hf` work: already installed, or the bundled wheel installed into ./.packages."""
    try:
        import flextok_hf  # noqa: F401

        return
    except ImportError:
        pass
    target = os.path.join(HERE, ".packages")
    if not os.path.isdir(os.path.join(target, "flextok_hf")):
        wheels = sorted(glob.glob(os.path.join(HERE, "wheels", "flextok_hf-*.whl")))
        if not wheels:
            raise ImportError("flextok_hf is not installed and wheels/ holds no wheel: run `flextok-hf export-space`.")
        pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target, wheels[-1]]
        subprocess.check_call(pip)
    sys.path.insert(0, target)


def local(path):
    """A folder of this Space (relative to app.py), else the value itself (a Hub id, None or "none")."""
    if path and os.path.isdir(os.path.join(HERE, path)):
        return os.path.join(HERE, path)
    return path


def examples():
    """The example images bundled in examples/ (None: the package's own samples)."""
    index = os.path.join(HERE, "examples", "examples.json")
    if not os.path.isfile(index):
        return None
    with open(index, encoding="utf-8") as handle:
        return [(item["caption"], os.path.join(HERE, "examples", item["file"])) for item in json.load(handle)]


ensure_flextok_hf()
from flextok_hf.demo import build_demo, launch_demo, load_demo_pipelines  # noqa: E402

tokenizer_pipeline, generation_pipeline = load_demo_pipelines(local(TOKENIZER), local(TEXT2IMAGE))
demo = build_demo(tokenizer_pipeline, generation_pipeline, examples=examples())

if __name__ == "__main__":
    launch_demo(demo)
