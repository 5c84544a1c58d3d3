"""Pictures of the synthetic dataset: a contact sheet of faces with some of their positive
attributes, and one picture per attribute showing the same face without / with it.

    python benchmarks/synth_gallery.py [--out docs/img/synth_samples.png]
        [--pairs-out docs/img/synth_attributes.png] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facedistill.attributes import ATTRIBUTES
from facedistill.data.synth_model import sample_face, sample_identity, with_attribute
from facedistill.data.synth_render import render_aligned, render_wild

# Shown under each face when positive (the rest would not fit).
SHOWN = ("Male", "Young", "Smiling", "Eyeglasses", "Wearing_Hat", "Bald", "Black_Hair",
         "Blond_Hair", "Brown_Hair", "Gray_Hair", "Wavy_Hair", "Heavy_Makeup", "No_Beard",
         "Bangs", "Blurry", "Wearing_Necktie", "Wearing_Earrings", "Chubby", "Pale_Skin")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/img/synth_samples.png"))
    ap.add_argument("--pairs-out", type=Path, default=Path("docs/img/synth_attributes.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--rows", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    cell, text_h, scale = 128, 40, 2
    sheet = Image.new("RGB", (args.cols * cell, args.rows * (cell + text_h) + cell + 20), "white")
    draw = ImageDraw.Draw(sheet)
    faces = []
    for i in range(args.cols * args.rows):
        face = sample_face(sample_identity(rng), rng)
        faces.append(face)
        img, _ = render_aligned(face, cell // scale, rng, i)
        x, y = (i % args.cols) * cell, (i // args.cols) * (cell + text_h)
        sheet.paste(img.resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        words = [a.replace("Wearing_", "").replace("_Hair", " hair").replace("_", " ")
                 for a in SHOWN if face.labels[a]]
        if not face.labels["Male"]:
            words.insert(0, "Female")
        words = [w for w in words if w != "No Beard"] + ([] if face.labels["No_Beard"] else
                                                          ["Beard"])
        for k in range(0, min(len(words), 6), 2):
            draw.text((x + 2, y + cell + 1 + 6 * k), ", ".join(words[k:k + 2]), fill="black")
    y0 = args.rows * (cell + text_h) + 10
    draw.text((4, y0 - 10), "in the wild (--wild), with bbox and landmarks:", fill="black")
    x = 0
    for i, face in enumerate(faces[: args.cols]):
        img, box, marks = render_wild(face, 48, rng, i)
        d = ImageDraw.Draw(img)
        d.rectangle((box[0], box[1], box[0] + box[2], box[1] + box[3]), outline=(255, 0, 0))
        for px, py in marks.reshape(-1, 2):
            d.point((px, py), fill=(0, 255, 0))
        img.thumbnail((cell - 4, cell - 14))
        if x + img.width > sheet.width:
            break
        sheet.paste(img, (x, y0 + 4))
        x += img.width + 4
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.convert("P", palette=Image.Palette.ADAPTIVE, colors=255).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    attribute_pairs(args.pairs_out, args.seed)
    print(f"wrote {args.pairs_out}")


def attribute_pairs(out: Path, seed: int, cols: int = 5, size: int = 64, zoom: int = 2) -> None:
    """For every attribute, one face rendered without (left) and with (right) it."""
    rng = np.random.default_rng(seed + 1)
    cell, label_h = size * zoom, 14
    rows = -(-len(ATTRIBUTES) // cols)
    sheet = Image.new("RGB", (cols * (2 * cell + 8), rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, name in enumerate(ATTRIBUTES):
        face = sample_face(sample_identity(rng), rng)
        x, y = (i % cols) * (2 * cell + 8), (i // cols) * (cell + label_h)
        for k, value in enumerate((False, True)):
            img, _ = render_aligned(with_attribute(face, name, value), size,
                                    np.random.default_rng(seed), i)
            sheet.paste(img.resize((cell, cell), Image.Resampling.NEAREST), (x + k * cell, y))
        draw.text((x + 2, y + cell + 1), f"{name}: no | yes", fill="black")
    sheet.convert("P", palette=Image.Palette.ADAPTIVE, colors=255).save(out, optimize=True)


if __name__ == "__main__":
    main()
