"""Draw predictions on an image (PIL ``ImageDraw``) and save it atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from facedistill.errors import UserError
from facedistill.io import atomic_path
from facedistill.runtime.results import FacePrediction, Prediction

BOX_COLOR = (0, 230, 118)
TEXT_COLOR = (255, 255, 255)
LABEL_BACKGROUND = (0, 0, 0)
#: the colours of a cascade's face regions, in the model's group order (cycled)
REGION_COLORS = ((255, 179, 0), (41, 182, 246), (236, 64, 122), (171, 71, 188),
                 (255, 238, 88), (121, 134, 203), (77, 182, 172))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: the bitmap font
        return ImageFont.load_default()


def label_lines(prediction: Prediction, top: int, all: bool = False) -> list[str]:
    """``name 0.93`` for the ``top`` positive attributes by margin over their threshold (or
    ``no attribute``); unreliable ones only with ``all``, marked ``(unreliable)``."""
    lines = [f"{name} {p:.2f}" + ("" if prediction.is_reliable(name) else " (unreliable)")
             for name, p in prediction.positives(top=top, all=all)]
    return lines or ["no attribute"]


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: list[str],
           font: ImageFont.ImageFont | ImageFont.FreeTypeFont, size: tuple[int, int]) -> None:
    text = "\n".join(lines)
    left, top, right, bottom = draw.multiline_textbbox(xy, text, font=font, spacing=2)
    width, height = size
    # keep the label inside the image: shift it left/up when it would run off
    dx = min(0, width - 1 - right) - min(0, left)
    dy = min(0, height - 1 - bottom) - min(0, top)
    xy = (xy[0] + dx, xy[1] + dy)
    box = (left + dx - 2, top + dy - 2, right + dx + 2, bottom + dy + 2)
    draw.rectangle(box, fill=LABEL_BACKGROUND)
    draw.multiline_text(xy, text, fill=TEXT_COLOR, font=font, spacing=2)


def _regions(draw: ImageDraw.ImageDraw, prediction: Prediction, scale: int,
             font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """A cascade's face regions: a thin coloured box per group with its name at the top-left."""
    for i, (name, (x, y, w, h)) in enumerate((prediction.regions or {}).items()):
        color = REGION_COLORS[i % len(REGION_COLORS)]
        x, y, w, h = (v * scale for v in (x, y, w, h))
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=color, width=max(1, scale // 2))
        draw.text((x + 2, y + 1), name, fill=color, font=font)


#: images with a shorter side under this are enlarged (nearest neighbour, by a whole factor)
#: before drawing, so that labels stay legible and a crop's face is not hidden under its text
MIN_DRAW_SIDE = 256


def annotate(image: Image.Image, result: Prediction | Sequence[FacePrediction],
             top: int = 3, all: bool = False) -> Image.Image:
    """A copy of ``image`` (RGB) with each face's box and its ``top`` positive attributes
    (reliable ones; unreliable too with ``all``), or, for a whole-image :class:`Prediction`,
    its attributes in the top-left corner. A cascade's predictions also show the face regions
    its part subnets looked at (a coloured, named box each). A small image (a face crop) is
    first enlarged by a whole factor to at least :data:`MIN_DRAW_SIDE` pixels, and a
    whole-image prediction's label then goes on a panel below it, not over the face."""
    out = image.convert("RGB")  # a copy even when already RGB
    scale = -(-MIN_DRAW_SIDE // max(1, min(out.size))) if min(out.size) < MIN_DRAW_SIDE else 1
    if scale > 1:
        out = out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)
    font_size = max(10, min(out.size) // 32)
    font = _font(font_size)
    small = _font(max(8, font_size * 3 // 4))
    if isinstance(result, Prediction):
        _regions(ImageDraw.Draw(out), result, scale, small)
        lines = label_lines(result, top, all)
        if scale > 1:  # a panel below the enlarged crop
            probe = ImageDraw.Draw(out).multiline_textbbox((0, 0), "\n".join(lines), font=font,
                                                           spacing=2)
            panel = Image.new("RGB", (out.width, out.height + probe[3] + 12), LABEL_BACKGROUND)
            panel.paste(out, (0, 0))
            out = panel
            _label(ImageDraw.Draw(out), (4, out.height - probe[3] - 6), lines, font, out.size)
            return out
        _label(ImageDraw.Draw(out), (4, 4), lines, font, out.size)
        return out
    draw = ImageDraw.Draw(out)
    line = max(2, min(out.size) // 200)
    for face in result:
        _regions(draw, face.prediction, scale, small)
    for face in result:
        x, y, w, h = (v * scale for v in face.box)
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=BOX_COLOR, width=line)
    for face in result:  # labels after all boxes, so no box is drawn over a label
        x, y, w, h = (v * scale for v in face.box)
        _label(draw, (x, y + h + line + 2), label_lines(face.prediction, top, all), font,
               out.size)
    return out


def save_image(image: Image.Image, path: str | os.PathLike[str], quality: int = 90) -> Path:
    """Write ``image`` atomically; the format follows the suffix (.jpg, .png, .webp, ...)."""
    p = Path(path)
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"cannot write images of type {p.suffix or '(no suffix)'!r}: use .jpg or "
                        ".png", path=p)
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    img = image.convert("RGB") if fmt == "JPEG" and image.mode != "RGB" else image
    try:
        with atomic_path(p) as tmp:
            img.save(tmp, format=fmt, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot write image: {exc.strerror or exc}", path=p) from None
    return p
