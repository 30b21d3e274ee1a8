"""The `emoji` dataset: colour emoji rendered offline with PIL, captioned with their CLDR English names.

Source: Debian's `fonts-noto-color-emoji` (`NotoColorEmoji.ttf`, a bitmap font of 136x128 glyphs at size 109) and the
`emoji` package's `EMOJI_DATA` (names and qualification status). An entry is kept when it is fully qualified, the
font shapes it into a single glyph (one advance wide; needs Pillow's raqm layout for ZWJ sequences) and the glyph is
not blank (emoji newer than the installed font render as nothing). Skin-tone variants (Fitzpatrick modifiers
U+1F3FB..U+1F3FF) are excluded unless `skin_tones=True`.

Each glyph is cropped to its visible pixels, scaled down to fit if needed, centred on a 128x128 canvas and composited
on white (RGB). Captions: ":face_with_open_mouth:" -> "face with open mouth"; country and region flags, whose names in `emoji` are
bare ("France"), get "flag of France".

The font is looked up in this order: the `font_path` argument, `$FLEXTOK_HF_EMOJI_FONT`, `DEFAULT_EMOJI_FONT`.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from .bundled import png_bytes

DEFAULT_EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_FONT_ENV = "FLEXTOK_HF_EMOJI_FONT"
FONT_SIZE = 109  # the only size of the font's embedded colour bitmaps
CANVAS_SIZE = 128
SKIN_TONE_MODIFIERS = frozenset(chr(code) for code in range(0x1F3FB, 0x1F400))
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def choose_font_path(font_path: str | os.PathLike | None = None) -> Path:
    """The emoji font that would be used: `font_path`, else `$FLEXTOK_HF_EMOJI_FONT`, else the Debian path."""
    return Path(font_path or os.environ.get(EMOJI_FONT_ENV) or DEFAULT_EMOJI_FONT).expanduser()


def resolve_font_path(font_path: str | os.PathLike | None = None) -> Path:
    """Like `choose_font_path`, but raises `FileNotFoundError` with the install command when the file is missing."""
    path = choose_font_path(font_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Emoji font not found at {str(path)!r}. On Debian/Ubuntu install it with "
            f"`apt-get install fonts-noto-color-emoji`, or point font_path= / ${EMOJI_FONT_ENV} to NotoColorEmoji.ttf."
        )
    return path


def is_country_or_region_flag(text: str) -> bool:
    """Regional-indicator pairs (e.g. France) and tag sequences (England, Scotland, Wales), whose names lack 'flag'."""
    if len(text) == 2 and all(0x1F1E6 <= ord(char) <= 0x1F1FF for char in text):
        return True
    return text.startswith("\U0001f3f4") and any(0xE0020 <= ord(char) <= 0xE007F for char in text)


def emoji_caption(cldr_name: str, text: str = "") -> str:
    """':face_with_open_mouth:' -> 'face with open mouth'; the flag emoji `text` of ':France:' -> 'flag of France'."""
    words = " ".join(cldr_name.strip(":").replace("_", " ").translate(_QUOTES).split())
    return f"flag of {words}" if is_country_or_region_flag(text) else words


def render_emoji(text: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    """Renders one emoji to a `CANVAS_SIZE`² RGB image on white, or `None` when the glyph is blank."""
    width = max(int(round(font.getlength(text))), 1)
    glyph = Image.new("RGBA", (width, CANVAS_SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text((0, 0), text, font=font, embedded_color=True)
    box = glyph.getchannel("A").getbbox()
    if box is None:
        return None
    glyph = glyph.crop(box)
    scale = min(1.0, CANVAS_SIZE / max(glyph.size))
    if scale < 1.0:
        size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
        glyph = glyph.resize(size, Image.LANCZOS)
    canvas = Image.new("RGBA", (CANVAS_SIZE, CANVAS_SIZE), (255, 255, 255, 255))
    canvas.alpha_composite(glyph, ((CANVAS_SIZE - glyph.width) // 2, (CANVAS_SIZE - glyph.height) // 2))
    return canvas.convert("RGB")


def emoji_candidates(font: ImageFont.FreeTypeFont, skin_tones: bool = False) -> list[tuple[str, str]]:
    """(emoji, caption) for fully-qualified entries of `emoji.EMOJI_DATA` that the font shapes as one glyph."""
    try:
        import emoji
    except ImportError as error:
        raise ImportError("The 'emoji' dataset needs the emoji package: `pip install emoji`.") from error
    one_glyph = font.getlength("\U0001f600")  # grinning face: the advance of a single glyph
    candidates = []
    for text, info in emoji.EMOJI_DATA.items():
        if info.get("status") != emoji.STATUS["fully_qualified"]:
            continue
        if not skin_tones and any(char in SKIN_TONE_MODIFIERS for char in text):
            continue
        if font.getlength(text) > 1.05 * one_glyph:
            continue
        candidates.append((text, emoji_caption(info["en"], text)))
    return candidates


def build_emoji(skin_tones: bool = False, font_path: str | os.PathLike | None = None) -> Dataset:
    """Renders every kept emoji; columns `image` (128x128 RGB), `caption`, `emoji` (the character), `id`."""
    if not isinstance(skin_tones, bool):
        raise TypeError(f"skin_tones must be a bool, got {skin_tones!r}.")
    font = ImageFont.truetype(str(resolve_font_path(font_path)), FONT_SIZE)
    rows = {"image": [], "caption": [], "emoji": []}
    for text, caption in tqdm(emoji_candidates(font, skin_tones), desc="rendering emoji", leave=False):
        image = render_emoji(text, font)
        if image is None:
            continue
        rows["image"].append(png_bytes(image))
        rows["caption"].append(caption)
        rows["emoji"].append(text)
    rows["id"] = list(range(len(rows["emoji"])))
    features = Features(
        {"image": ImageFeature(), "caption": Value("string"), "emoji": Value("string"), "id": Value("int64")}
    )
    return Dataset.from_dict(rows, features=features)
