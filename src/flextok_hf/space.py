"""A self-contained Hugging Face Space folder running the FlexTok demo (`flextok-hf export-space OUT_DIR`).

The folder holds `app.py`, `README.md` (Space front matter), `requirements.txt` (torch / transformers / diffusers
pinned to this environment; not gradio, which the Space provides via `sdk_version`), `wheels/flextok_hf-*.whl` (this
package, with the shipped default weights and metric scripts as package data), example images and, when the models
are local folders rather than the shipped defaults or Hub ids, copies of them under `models/`.

The Space build installs `requirements.txt` before the repository files are copied in, so a relative wheel path
cannot be listed there: `app.py` installs the bundled wheel into `./.packages` at start-up instead. With `--space-id`
the wheel is also listed in `requirements.txt` by its `resolve/main` URL, so the build installs it (public Spaces).
"""

from __future__ import annotations

import fnmatch
import glob
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SPACE_SDK_VERSION = "6.31.0"
SPACE_PYTHON_VERSION = "3.11"
PINNED_PACKAGES = ("torch", "transformers", "diffusers")  # pinned to the versions installed here
SPACE_PROVIDED = ("gradio", "gradio-client")  # installed by the Space from `sdk_version`
# Package data that must be inside the wheel (relative to the package folder).
PACKAGE_DATA_GLOBS = ("pretrained/**/*", "metrics/*/*.py", "templates/*")
# The Space's app.py, a package data file rendered by `render_app`.
APP_TEMPLATE = Path(__file__).resolve().parent / "templates" / "space_app.py"
# Files of a saved model / pipeline copied into the Space (safetensors and configs only: no pickles).
MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "README.md")


# ---------------------------------------------------------------------------------------------------------------------
# Wheel
# ---------------------------------------------------------------------------------------------------------------------
def find_source_dir() -> str:
    """The project folder of the imported `flextok_hf` (an editable install or a source checkout)."""
    import flextok_hf

    folder = os.path.dirname(os.path.abspath(flextok_hf.__file__))
    for _ in range(3):
        folder = os.path.dirname(folder)
        if os.path.isfile(os.path.join(folder, "setup.py")) and os.path.isdir(
            os.path.join(folder, "src", "flextok_hf")
        ):
            return folder
    raise ValueError(
        f"`source`: the installed flextok_hf ({flextok_hf.__file__}) is not inside a source checkout; pass the project "
        "folder (the one with setup.py) with --source."
    )


def build_wheel(source_dir: str, wheel_dir: str) -> str:
    """`pip wheel --no-deps` of a copy of the project (the checkout itself is left untouched); returns the wheel."""
    if not os.path.isfile(os.path.join(source_dir, "setup.py")):
        raise ValueError(f"`source_dir`: {source_dir!r} has no setup.py.")
    os.makedirs(wheel_dir, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
    with tempfile.TemporaryDirectory(prefix="flextok_hf_wheel_") as tmp:
        project = os.path.join(tmp, "project")
        os.makedirs(project)
        for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "LICENSE", "setup.cfg"):
            if os.path.isfile(os.path.join(source_dir, name)):
                shutil.copy2(os.path.join(source_dir, name), project)
        shutil.copytree(os.path.join(source_dir, "src"), os.path.join(project, "src"), ignore=ignore)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, project]
        # Offline with the installed setuptools first; an isolated build (fetches setuptools + wheel) otherwise.
        result = subprocess.run(command[:5] + ["--no-build-isolation"] + command[5:], capture_output=True, text=True)
        if result.returncode != 0:
            result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"Building the flextok_hf wheel failed:\n{result.stdout}\n{result.stderr}")
        built = glob.glob(os.path.join(tmp, "flextok_hf-*.whl"))
        if len(built) != 1:
            raise RuntimeError(f"Expected one flextok_hf wheel, found {built}.")
        target = os.path.join(wheel_dir, os.path.basename(built[0]))
        shutil.move(built[0], target)
    check_wheel(target, os.path.join(source_dir, "src", "flextok_hf"))
    return target


def check_wheel(wheel: str, package_dir: str) -> list[str]:
    """Raises unless every package-data file of `package_dir` (default weights, metric scripts, card templates) is
    inside `wheel`; returns those files (wheel paths)."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = []
    for pattern in PACKAGE_DATA_GLOBS:
        for path in glob.glob(os.path.join(package_dir, pattern), recursive=True):
            if os.path.isfile(path) and "__pycache__" not in path and not path.endswith(".pyc"):
                expected.append("flextok_hf/" + os.path.relpath(path, package_dir).replace(os.sep, "/"))
    missing = sorted(set(expected) - names)
    if missing:
        raise RuntimeError(f"The wheel {wheel} lacks package data: {missing[:10]} (check setup.py package_data).")
    return sorted(expected)


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------
def _default_path(name: str) -> str | None:
    from .pretrained import pretrained_path

    try:
        return pretrained_path(name)
    except FileNotFoundError:
        return None


def copy_model(source: str, target: str) -> None:
    """Copies a saved model / pipeline folder (configs, safetensors, tokenizer files, model card only)."""
    for root, _, files in os.walk(source):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), source)
            if any(fnmatch.fnmatch(name, pattern) for pattern in MODEL_FILE_PATTERNS):
                os.makedirs(os.path.dirname(os.path.join(target, relative)), exist_ok=True)
                shutil.copy2(os.path.join(root, name), os.path.join(target, relative))
    if not glob.glob(os.path.join(target, "**", "*.safetensors"), recursive=True):
        raise ValueError(f"{source!r} holds no .safetensors weights; save the model with save_pretrained first.")


def referenced_packages(folder: str) -> list[str]:
    """pip names of the text-encoder packages a pipeline folder references (`flextok_reference.json`); a reference
    to a local folder cannot be shipped and raises."""
    from .text_encoders import REFERENCE_FILE, TEXT_ENCODER_PACKAGES

    packages = []
    for path in glob.glob(os.path.join(folder, "**", REFERENCE_FILE), recursive=True):
        with open(path, encoding="utf-8") as handle:
            reference = json.load(handle)
        if "package" in reference:
            packages.append(TEXT_ENCODER_PACKAGES.get(reference["package"], reference["package"].replace("_", "-")))
        else:
            raise ValueError(
                f"{path} references the local folder {reference.get('path')!r}, which a Space cannot reach; save the "
                "pipeline with its text encoder (save_pretrained(..., reference_text_encoder=False))."
            )
    return sorted(set(packages))


def _check_default_in_wheel(names: list[str], key: str) -> None:
    from .pretrained import DEFAULT_MODELS

    folder = "flextok_hf/pretrained/" + DEFAULT_MODELS[key].replace(os.sep, "/")
    if not any(f"{folder}/{name}" in names for name in ("config.json", "model_index.json")):
        raise ValueError(f"The wheel lacks the default {key} weights ({folder}); rebuild it from this checkout.")


# ---------------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------------
def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


def render_requirements(requires_dist: list[str], extra_packages: list[str] = (), wheel_url: str | None = None) -> str:
    """`requirements.txt` from flextok_hf's `Requires-Dist` entries: the base ones (torch / transformers /
    diffusers pinned to this environment), `extra_packages` (pinned when installed) and, with `wheel_url`, the
    wheel itself."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines, seen = [], set()
    for entry in requires_dist:
        requirement = Requirement(entry)
        name = canonicalize_name(requirement.name)
        if "extra" in str(requirement.marker or ""):
            continue
        if name in SPACE_PROVIDED or name in seen:
            continue
        version = _installed_version(requirement.name) if name in PINNED_PACKAGES else None
        requirement.marker = None
        lines.append(f"{requirement.name}=={version}" if version else str(requirement))
        seen.add(name)
    for package in extra_packages:
        name = canonicalize_name(Requirement(package).name)
        if name not in seen:
            version = _installed_version(package) if re.fullmatch(r"[A-Za-z0-9_.-]+", package) else None
            lines.append(f"{package}=={version}" if version else package)
            seen.add(name)
    header = [
        "# Installed by the Space build; gradio comes from `sdk_version` in README.md.",
        "# flextok_hf itself is the wheel in wheels/ (app.py installs it at start-up unless listed below).",
    ]
    if wheel_url:
        lines.append(f"flextok_hf @ {wheel_url}")
    return "\n".join(header + lines) + "\n"


def render_app(tokenizer: str | None = None, text2image: str | None = None) -> str:
    """The Space's `app.py` (the package file `templates/space_app.py`, which runs as is with the shipped defaults)
    with the default models set; `tokenizer` / `text2image` are Space folders, Hub ids or None (shipped defaults)."""
    app = APP_TEMPLATE.read_text(encoding="utf-8")
    for variable, value in (("FLEXTOK_MODEL", tokenizer), ("FLEXTOK_TEXT2IMAGE", text2image)):
        default = f'os.environ.get("{variable}", None)'
        if app.count(default) != 1:
            raise ValueError(f"{APP_TEMPLATE} must read {variable} exactly once as `{default}`.")
        app = app.replace(default, f'os.environ.get("{variable}", {value!r})')
    return app


def render_readme(title: str = "FlexTok", models: list[str] = (), body: str | None = None) -> str:
    """`README.md` with the Space front matter (`sdk: gradio`, `sdk_version`, `python_version`, `app_file`, ...)."""
    from huggingface_hub import SpaceCardData

    data = SpaceCardData(
        title=title,
        emoji="🧩",
        colorFrom="indigo",
        colorTo="pink",
        sdk="gradio",
        sdk_version=SPACE_SDK_VERSION,
        python_version=SPACE_PYTHON_VERSION,
        app_file="app.py",
        pinned=False,
        license="apache-2.0",
        models=list(models) or None,
        tags=["flextok", "image-tokenizer", "text-to-image", "rectified-flow"],
        short_description="Ordered 1D image tokens, decodable from any prefix",
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body if body is not None else _README_BODY.format(title=title)}"


def bundled_examples() -> list:
    """The bundled `(caption, image)` samples (`flextok_hf.data.sample_images`), skipping sources whose package or
    font is missing; the demo's default examples."""
    try:
        from .data.samples import SAMPLE_SOURCES, sample_images
    except ImportError:
        return []
    samples = []
    for source in SAMPLE_SOURCES:
        try:
            samples += sample_images((source,))
        except (ImportError, OSError, ValueError):
            continue
    return samples


def write_examples(folder: str) -> int:
    """The bundled sample images as PNGs plus `examples.json` (file -> caption); returns how many."""
    samples = bundled_examples()
    if not samples:
        return 0
    os.makedirs(folder, exist_ok=True)
    index = []
    for number, (caption, image) in enumerate(samples):
        name = f"{number:02d}_{re.sub(r'[^a-z0-9]+', '-', caption.lower()).strip('-')[:40]}.png"
        image.save(os.path.join(folder, name))
        index.append({"file": name, "caption": caption})
    with open(os.path.join(folder, "examples.json"), "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=2)
    return len(index)


# ---------------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------------
def export_space(
    out_dir: str,
    model: str | None = None,
    text2image: str | None = None,
    space_id: str | None = None,
    title: str = "FlexTok",
    source_dir: str | None = None,
    wheel: str | None = None,
    examples: bool = True,
) -> str:
    """Writes the Space folder and returns its path (see the module docstring).

    Args:
        model: FlexTok pipeline/model folder (copied into `models/tokenizer`) or Hub id; None = the shipped weights.
        text2image: generation pipeline folder (copied into `models/text2image`) or Hub id; None = the shipped one
            when present; `"none"` = no Generate tab.
        space_id: `user/space` the folder will be pushed to; lists the wheel by its URL in `requirements.txt`.
        source_dir: the project folder the wheel is built from (default: that of the imported package).
        wheel: a prebuilt `flextok_hf-*.whl` to ship instead of building one (e.g. for a non-editable install).
    """
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(f"`out_dir`: {out_dir!r} is not empty; pass a new or empty folder.")
    if space_id is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", space_id):
        raise ValueError(f"`space_id` must look like 'user/space', got {space_id!r}.")
    if model is None and _default_path("tokenizer") is None:
        raise ValueError(
            "`model`: this installation ships no default FlexTok weights; pass a FlexTok pipeline folder or Hub id "
            "(--model)."
        )
    for name, value in (("model", model), ("text2image", text2image)):
        if value is None or os.path.isdir(value) or (name == "text2image" and value.lower() == "none"):
            continue
        if os.path.exists(value) or not re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", value):
            raise ValueError(f"`{name}`: {value!r} is neither an existing folder nor a Hub id ('user/name').")
    if wheel is not None and not (os.path.basename(wheel).startswith("flextok_hf-") and zipfile.is_zipfile(wheel)):
        raise ValueError(f"`wheel`: {wheel!r} is not a flextok_hf wheel file.")
    os.makedirs(out_dir, exist_ok=True)
    if wheel is None:
        wheel = build_wheel(source_dir or find_source_dir(), os.path.join(out_dir, "wheels"))
    else:
        os.makedirs(os.path.join(out_dir, "wheels"))
        wheel = shutil.copy2(wheel, os.path.join(out_dir, "wheels"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode("utf-8")
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]

    models, text_packages, settings = [], [], {}
    for key, value, folder in (
        ("tokenizer", model, "models/tokenizer"),
        ("text2image", text2image, "models/text2image"),
    ):
        if value is not None and value.lower() == "none":
            settings[key] = "none"
        elif value is None:  # the shipped default (inside the wheel); the tokenizer's was checked above
            default = _default_path(key)
            settings[key] = None if default is not None else "none"
            if default is not None:
                _check_default_in_wheel(names, key)
                text_packages += referenced_packages(default)
        elif os.path.isdir(value):
            copy_model(value, os.path.join(out_dir, folder))
            text_packages += referenced_packages(os.path.join(out_dir, folder))
            settings[key] = folder
        else:  # a Hub id, downloaded by the Space at start-up
            settings[key] = value
            models.append(value)

    wheel_url = None
    if space_id is not None:
        wheel_url = f"https://huggingface.co/spaces/{space_id}/resolve/main/wheels/{os.path.basename(wheel)}"
    files = {
        "app.py": render_app(settings["tokenizer"], settings["text2image"]),
        "requirements.txt": render_requirements(requires, text_packages, wheel_url),
        "README.md": render_readme(title, models),
        ".gitattributes": "*.whl filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs "
        "-text\n*.png filter=lfs diff=lfs merge=lfs -text\n",
    }
    for name, text in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    if examples:
        write_examples(os.path.join(out_dir, "examples"))
    return out_dir


_README_BODY = """# {title}

Interactive demo of **FlexTok** ([arXiv 2502.13967](https://arxiv.org/abs/2502.13967)), built with the `flextok_hf`
package: a 1D image tokenizer whose tokens are *ordered* from coarse to fine, so any prefix of 1, 2, 4, ..., K
tokens decodes (with a rectified-flow decoder) to a complete image.

- **Tokenize**: upload an image (or pick an example) to see its token ids, the coarse-to-fine reconstructions at
  every power-of-two budget, the reconstruction at a chosen budget, and PSNR against the input per budget.
- **Generate** (when the Space ships a prior): a prompt or class -> images from the first k tokens sampled by an
  autoregressive prior, rendered by the same decoder.

Run it locally with `pip install "flextok_hf[demo]"` and `flextok-hf demo` (or `python app.py` in this folder).
The API is also reachable with `gradio_client`: endpoints `/tokenize`, `/reconstruct` and `/generate`.
"""


__all__ = [
    "SPACE_SDK_VERSION",
    "copy_model",
    "referenced_packages",
    "export_space",
    "build_wheel",
    "check_wheel",
    "render_app",
    "render_readme",
    "render_requirements",
    "write_examples",
    "bundled_examples",
    "find_source_dir",
]
