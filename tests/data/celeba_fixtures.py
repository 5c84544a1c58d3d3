"""Write small CelebA-format folders (real tiny JPEGs) for the reader's tests.

:func:`make_data` gives a 12-image dataset whose numbers are known by hand:

* partition ``[0, 0, 0, 1, 0, 2, 0, 1, 2, 0, 1, 2]``: train positions 0 1 2 4 6 9, val 3 7 10,
  test 5 8 11 (6 / 3 / 3 images);
* identity ``[10, 10, 10, 20, 20, 30, 40, 40, 50, 50, 60, 70]``: 7 identities; train holds
  {10, 20, 40, 50}, val {20, 40, 60}, test {30, 50, 70}; 3 of them (20, 40, 50) are in more
  than one split;
* Smiling on images 0-5 (50 % overall, train 4/6, val 1/3, test 1/3), Male on every third
  image from 0 (4/12), Young on all, Bald on none; the other attributes are seeded-random.

Aligned images (12x14, WxH) are a solid colour ``colors[i]``; wild images (40x48) are grey
with a ``colors[i]`` square exactly at the bounding box.

:func:`write_celeba` writes that data in the official txt layout or the Kaggle csv one, with
options for the irregularities real files have (CRLF, runs of spaces and tabs, trailing spaces,
blank lines, 0/1 values, nested image folder, the official Anno/Eval/Img sub-folders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facedistill.attributes import ATTRIBUTES, INDEX

LANDMARK_HEADER = (
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
    "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
)
BBOX_HEADER = "image_id x_1 y_1 width height"

ALIGNED_SIZE = (12, 14)  # (width, height)
WILD_SIZE = (40, 48)
BOX_SIDE = 16
GREY = (128, 128, 128)

PALETTE = [
    (220, 30, 30), (30, 190, 40), (40, 60, 220), (230, 200, 20), (200, 40, 200),
    (20, 200, 210), (240, 140, 20), (120, 40, 160), (250, 250, 250), (10, 10, 10),
    (150, 220, 60), (90, 60, 30),
]  # fmt: skip


@dataclass
class CelebAData:
    """The content of a fixture dataset (attrs in {0, 1})."""

    names: list[str]
    attrs: np.ndarray  # int8 [M, 40]
    partition: np.ndarray  # int8 [M]
    identity: np.ndarray  # int64 [M]
    bbox: np.ndarray  # float32 [M, 4], in wild-image pixels
    landmarks_align: np.ndarray  # float32 [M, 10]
    landmarks_wild: np.ndarray  # float32 [M, 10]
    colors: list[tuple[int, int, int]]

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class Fixture:
    """A written dataset: its root, its content and the files written (role -> path)."""

    root: Path
    data: CelebAData
    layout: str
    files: dict[str, Path] = field(default_factory=dict)
    image_dirs: dict[str, Path] = field(default_factory=dict)

    def attr_line(self, k: int) -> int:
        """1-based line of image ``k`` in the attribute file."""
        return k + (3 if self.layout == "txt" else 2)

    def partition_line(self, k: int) -> int:
        return k + (1 if self.layout == "txt" else 2)

    def annotation_line(self, k: int) -> int:
        """Line of image ``k`` in the bbox and landmark files."""
        return k + (3 if self.layout == "txt" else 2)


def make_data(n: int = 12, seed: int = 0) -> CelebAData:
    """The hand-checked 12-image content (or ``n`` images following the same patterns)."""
    rng = np.random.default_rng(seed)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    attrs = (rng.random((n, len(ATTRIBUTES))) < 0.4).astype(np.int8)
    idx = np.arange(n)
    attrs[:, INDEX["Smiling"]] = idx < n // 2
    attrs[:, INDEX["Male"]] = idx % 3 == 0
    attrs[:, INDEX["Young"]] = 1
    attrs[:, INDEX["Bald"]] = 0
    base_partition = [0, 0, 0, 1, 0, 2, 0, 1, 2, 0, 1, 2]
    base_identity = [10, 10, 10, 20, 20, 30, 40, 40, 50, 50, 60, 70]
    partition = np.array([base_partition[i % 12] for i in idx], dtype=np.int8)
    identity = np.array([base_identity[i % 12] + 100 * (i // 12) for i in idx], dtype=np.int64)
    bbox = np.stack(
        [4 + (idx % 4) * 4, 6 + (idx % 3) * 5, np.full(n, BOX_SIDE), np.full(n, BOX_SIDE)], axis=1
    ).astype(np.float32)
    landmarks_align = rng.integers(0, 12, size=(n, 10)).astype(np.float32)
    landmarks_wild = rng.integers(0, 40, size=(n, 10)).astype(np.float32)
    colors = [PALETTE[i % len(PALETTE)] for i in idx]
    return CelebAData(
        names, attrs, partition, identity, bbox, landmarks_align, landmarks_wild, colors
    )


def _sep(messy: bool, i: int, j: int) -> str:
    if not messy:
        return " "
    return (" ", "  ", "\t", " \t ", "   ")[(i * 7 + j) % 5]


def _join(values: list[str], messy: bool, row: int) -> str:
    out = values[0]
    for j, v in enumerate(values[1:]):
        out += _sep(messy, row, j) + v
    return out + ("  " if messy and row % 2 == 0 else "")


def _write(path: Path, lines: list[str], crlf: bool, messy: bool) -> Path:
    eol = "\r\n" if crlf else "\n"
    text = eol.join(lines) + eol + (eol if messy else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def write_celeba(
    root: Path,
    data: CelebAData | None = None,
    *,
    layout: str = "txt",
    crlf: bool = False,
    messy: bool = False,
    zero_one: bool = False,
    nested: bool = False,
    official_dirs: bool = False,
    identity: bool = True,
    bbox: bool = True,
    landmarks: bool = True,
    aligned: bool = True,
    wild: bool = True,
    bbox_image_id: bool = True,
    landmark_image_id: bool = False,
) -> Fixture:
    """Write ``data`` (default :func:`make_data`) under ``root`` in ``layout`` "txt" or "csv".

    ``messy``: runs of spaces, tabs, trailing spaces and a blank last line (txt), spaces around
    commas are not used (csv). ``zero_one``: attribute values 0/1 instead of -1/1. ``nested``:
    images in ``img_align_celeba/img_align_celeba/`` (Kaggle). ``official_dirs``: tables in
    ``Anno/`` and ``Eval/``, images in ``Img/``. ``bbox_image_id`` / ``landmark_image_id``:
    whether the txt bbox / landmark header starts with ``image_id``.
    """
    data = data or make_data()
    root.mkdir(parents=True, exist_ok=True)
    fx = Fixture(root=root, data=data, layout=layout)
    csv = layout == "csv"
    ext = ".csv" if csv else ".txt"
    anno = root / "Anno" if official_dirs else root
    evald = root / "Eval" if official_dirs else root
    imgs = root / "Img" if official_dirs else root
    n = len(data)

    def table(
        path: Path, header: list[str] | None, rows: list[list[str]], count: bool, txt_header: bool
    ) -> Path:
        if csv:
            lines = [",".join(header)] if header else []
            lines += [",".join(r) for r in rows]
        else:
            lines = [str(len(rows))] if count else []
            if txt_header and header is not None:
                lines.append(" ".join(header) + (" " if messy else ""))
            lines += [_join(r, messy, i) for i, r in enumerate(rows)]
        return _write(path, lines, crlf, messy)

    cells = data.attrs.astype(int) if zero_one else data.attrs.astype(int) * 2 - 1
    fmt = "{}" if (csv or zero_one) else "{:2d}"
    attr_rows = [[data.names[i], *(fmt.format(v) for v in cells[i])] for i in range(n)]
    fx.files["attributes"] = table(
        anno / f"list_attr_celeba{ext}",
        ["image_id", *ATTRIBUTES] if csv else list(ATTRIBUTES),
        attr_rows,
        count=True,
        txt_header=True,
    )
    fx.files["partition"] = table(
        evald / f"list_eval_partition{ext}",
        ["image_id", "partition"] if csv else None,
        [[data.names[i], str(int(data.partition[i]))] for i in range(n)],
        count=False,
        txt_header=False,
    )
    if identity:
        fx.files["identity"] = table(
            anno / f"identity_CelebA{ext}",
            ["image_id", "identity"] if csv else None,
            [[data.names[i], str(int(data.identity[i]))] for i in range(n)],
            count=False,
            txt_header=False,
        )
    if bbox:
        header = BBOX_HEADER.split()
        fx.files["bbox"] = table(
            anno / f"list_bbox_celeba{ext}",
            header if (csv or bbox_image_id) else header[1:],
            [[data.names[i], *(str(int(v)) for v in data.bbox[i])] for i in range(n)],
            count=True,
            txt_header=True,
        )
    if landmarks:
        header = LANDMARK_HEADER.split()
        header = ["image_id", *header] if (csv or landmark_image_id) else header
        for key, stem, values in (
            ("landmarks_align", "list_landmarks_align_celeba", data.landmarks_align),
            ("landmarks_wild", "list_landmarks_celeba", data.landmarks_wild),
        ):
            fx.files[key] = table(
                anno / f"{stem}{ext}",
                header,
                [[data.names[i], *(str(int(v)) for v in values[i])] for i in range(n)],
                count=True,
                txt_header=True,
            )

    if aligned:
        folder = imgs / "img_align_celeba"
        if nested:
            folder = folder / "img_align_celeba"
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(data.names):
            Image.new("RGB", ALIGNED_SIZE, data.colors[i]).save(
                folder / name, quality=95, subsampling=0
            )
        fx.image_dirs["aligned"] = folder
    if wild:
        folder = imgs / "img_celeba"
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(data.names):
            img = Image.new("RGB", WILD_SIZE, GREY)
            x, y, w, h = (int(v) for v in data.bbox[i])
            img.paste(data.colors[i], (x, y, x + w, y + h))
            img.save(folder / name, quality=95, subsampling=0)
        fx.image_dirs["wild"] = folder
    return fx


# ---------------------------------------------------------------------------------------
# Editing written files (line numbers are 1-based; line ends are kept)
# ---------------------------------------------------------------------------------------
def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def set_line(path: Path, line: int, text: str | bytes) -> None:
    """Replace line ``line`` with ``text`` (keeping a CR line end if it had one)."""
    lines = _lines(path)
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if lines[line - 1].endswith(b"\r"):
        raw += b"\r"
    lines[line - 1] = raw
    path.write_bytes(b"\n".join(lines))


def get_line(path: Path, line: int) -> str:
    return _lines(path)[line - 1].decode("utf-8").rstrip("\r")


def delete_line(path: Path, line: int) -> None:
    lines = _lines(path)
    del lines[line - 1]
    path.write_bytes(b"\n".join(lines))


def append_line(path: Path, text: str) -> None:
    """Add a row at the end (after the last non-empty line)."""
    body = path.read_bytes().rstrip(b"\r\n")
    path.write_bytes(body + b"\n" + text.encode("utf-8") + b"\n")


def set_field(path: Path, line: int, column: int, value: str) -> None:
    """Set the ``column``-th field (0 = image name) of a row, in either layout."""
    text = get_line(path, line)
    if path.suffix == ".csv":
        parts = text.split(",")
        parts[column] = value
        set_line(path, line, ",".join(parts))
    else:
        parts = text.split()
        parts[column] = value
        set_line(path, line, " ".join(parts))
