"""Image grids a person can read: cells upscaled without blurring (nearest), rows and columns labelled."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def labelled_grid(
    rows: list[list[Image.Image]],
    row_labels: list[str] | None = None,
    column_labels: list[str] | None = None,
    scale: int = 4,
    padding: int = 4,
) -> Image.Image:
    """A grid of PIL images (`rows[r][c]`, all of one size) with labels left of each row and above each column.

    Args:
        rows: the cells, row by row (every row as long as the first).
        row_labels / column_labels: one text per row / column, or None for no labels.
        scale: integer upscaling of every cell (nearest neighbour, so small images stay crisp).
        padding: pixels between cells.
    """
    if not rows or not rows[0]:
        raise ValueError("`rows` must hold at least one row with at least one image.")
    if any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(f"every row must have {len(rows[0])} images, got {[len(row) for row in rows]}.")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"`scale` must be an integer >= 1, got {scale!r}.")
    for name, labels, count in (("row_labels", row_labels, len(rows)), ("column_labels", column_labels, len(rows[0]))):
        if labels is not None and len(labels) != count:
            raise ValueError(f"`{name}` must have {count} entries, got {len(labels)}.")
    font = ImageFont.load_default(size=14)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    width, height = rows[0][0].size
    cell_w, cell_h = width * scale, height * scale
    label_w = max((text_size(label)[0] for label in row_labels), default=0) + 2 * padding if row_labels else 0
    label_h = max((text_size(label)[1] for label in column_labels), default=0) + 2 * padding if column_labels else 0
    grid = Image.new(
        "RGB",
        (label_w + len(rows[0]) * (cell_w + padding) + padding, label_h + len(rows) * (cell_h + padding) + padding),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(column_labels or []):
        text_w, _ = text_size(label)
        draw.text((label_w + padding + c * (cell_w + padding) + (cell_w - text_w) // 2, padding), label, TEXT, font)
    for r, row in enumerate(rows):
        top = label_h + padding + r * (cell_h + padding)
        if row_labels:
            _, text_h = text_size(row_labels[r])
            draw.text((padding, top + (cell_h - text_h) // 2), row_labels[r], TEXT, font)
        for c, image in enumerate(row):
            cell = image.convert("RGB").resize((cell_w, cell_h), Image.NEAREST)
            grid.paste(cell, (label_w + padding + c * (cell_w + padding), top))
    return grid


__all__ = ["labelled_grid"]
