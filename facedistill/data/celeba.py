"""The CelebA reader: one index parser for both on-disk layouts (no torch; the ``Dataset`` is
:mod:`facedistill.pipeline.data.dataset`).

Layouts:

* **txt** - the official release: whitespace-separated ``list_attr_celeba.txt`` (count line,
  header line, rows of -1/1), ``list_eval_partition.txt``, and the optional
  ``identity_CelebA.txt``, ``list_bbox_celeba.txt``, ``list_landmarks_align_celeba.txt`` and
  ``list_landmarks_celeba.txt``; images in ``img_align_celeba/`` or ``img_celeba/``.
* **csv** - the Kaggle repackaging: the same tables as comma-separated files with a header row
  (``list_attr_celeba.csv``, ...), images possibly nested one folder deeper
  (``img_align_celeba/img_align_celeba/``).

Each table is looked for with the layout's extension first, then the other one, in the root
and in the official release's ``Anno/``, ``Eval/`` and ``Img/`` sub-folders; a torchvision-style
``root/celeba/`` folder is found too. Runs of spaces, tabs, trailing spaces, CRLF line ends, a
UTF-8 byte-order mark and blank lines are accepted.

Every problem with the files is raised as :class:`~facedistill.errors.DataError` naming the
file, the 1-based line and, where one applies, the field, e.g.
``data/list_attr_celeba.txt:7: field 'Smiling': value '2' is not -1/1``.

:class:`CelebAIndex` (the parser) does not use torch; :class:`CelebA` wraps it as a
``torch.utils.data.Dataset``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facedistill.attributes import (
    ATTRIBUTES,
    BBOX_NAMES,
    LANDMARK_NAMES,
    NUM_ATTRIBUTES,
    SPLIT_NAMES,
)
from facedistill.errors import ConfigError, DataError
from facedistill.runtime.errors import ImageError
from facedistill.runtime.images import open_image

__all__ = [
    "BBOX_NAMES",
    "LANDMARK_NAMES",
    "VARIANTS",
    "CelebAIndex",
    "check_variant",
    "find_image_dir",
    "load_image",
    "resolve_root",
    "split_id",
]

VARIANTS: tuple[str, ...] = ("aligned", "wild")

ATTR_STEM = "list_attr_celeba"
PARTITION_STEM = "list_eval_partition"
IDENTITY_STEM = "identity_CelebA"
BBOX_STEM = "list_bbox_celeba"
LANDMARK_STEMS: dict[str, str] = {
    "aligned": "list_landmarks_align_celeba",
    "wild": "list_landmarks_celeba",
}
IMAGE_DIRS: dict[str, str] = {"aligned": "img_align_celeba", "wild": "img_celeba"}

# Sub-folders of the official Google Drive release, searched after the root itself.
_ANNOTATION_SUBDIRS = ("Anno", "Eval")
_IMAGE_SUBDIRS = ("Img",)

_SPLIT_IDS: dict[str, int] = {
    "train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2,
}  # fmt: skip

# Rows converted to numbers per batch: bounds the memory held as Python strings.
_CHUNK_ROWS = 8192

_ATTR_VALUES: dict[str, int] = {"1": 1, "-1": -1, "0": 0}


# ---------------------------------------------------------------------------------------
# Locating the files
# ---------------------------------------------------------------------------------------
def resolve_root(root: Path) -> Path:
    """``root`` itself, or ``root/celeba`` when only that one holds an attribute file."""
    if not root.is_dir():
        raise DataError("dataset folder does not exist", path=root)
    if _find_table([root, *(root / d for d in _ANNOTATION_SUBDIRS)], ATTR_STEM, ".txt"):
        return root
    nested = root / "celeba"
    if nested.is_dir() and _find_table(
        [nested, *(nested / d for d in _ANNOTATION_SUBDIRS)], ATTR_STEM, ".txt"
    ):
        return nested
    return root


def _find_table(dirs: Sequence[Path], stem: str, prefer: str) -> Path | None:
    """The first existing ``stem`` + extension, the ``prefer``-red extension first."""
    other = ".csv" if prefer == ".txt" else ".txt"
    for ext in (prefer, other):
        for d in dirs:
            path = d / f"{stem}{ext}"
            if path.is_file():
                return path
    return None


def _looked_for(root: Path, dirs: Sequence[Path], stem: str) -> str:
    where = ", ".join(
        "the dataset folder" if d == root else f"{d.relative_to(root)}/" for d in dirs
    )
    return f"looked for {stem}.txt and {stem}.csv in {where}"


def find_image_dir(root: str | os.PathLike[str], variant: str) -> Path | None:
    """The folder holding the ``variant``'s images under ``root``, or None.

    ``img_align_celeba/`` (or ``img_celeba/``), in the root or in ``Img/``; when it contains a
    folder of the same name (the Kaggle archive), that inner folder.
    """
    base = Path(root)
    name = IMAGE_DIRS[check_variant(variant)]
    for parent in (base, *(base / d for d in _IMAGE_SUBDIRS)):
        folder = parent / name
        if folder.is_dir():
            inner = folder / name
            return inner if inner.is_dir() else folder
    return None


def check_variant(variant: str) -> str:
    """``variant`` itself when it is "aligned" or "wild", else a ConfigError."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown CelebA variant {variant!r}; expected 'aligned' or 'wild'")
    return variant


def split_id(split: str | int) -> int | None:
    """0/1/2 for a train/val/test split name or id, None for ``"all"``."""
    if isinstance(split, str):
        key = split.strip().lower()
        if key == "all":
            return None
        if key in _SPLIT_IDS:
            return _SPLIT_IDS[key]
        if key in ("0", "1", "2"):
            return int(key)
    elif isinstance(split, (int, np.integer)) and not isinstance(split, bool) and 0 <= split <= 2:
        return int(split)
    raise ConfigError(f"unknown split {split!r}; expected train, val, test, all or 0/1/2")


# ---------------------------------------------------------------------------------------
# Reading one table
# ---------------------------------------------------------------------------------------
def _read_lines(path: Path) -> list[str]:
    """The file's lines (split on LF only, so line numbers match what editors show)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror or exc}", path=path) from None
    if not data.strip():
        raise DataError("file is empty", path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column}",
            path=path,
            line=line,
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():  # only a byte-order mark, or Unicode blanks (no-break spaces, ...)
        raise DataError("file is empty", path=path)
    return text.split("\n")


@dataclass
class _Table:
    """One parsed table: image names, the 1-based line of each row, the values."""

    path: Path
    names: list[str]
    lines: np.ndarray  # int64 [M]
    values: np.ndarray  # [M, ncols]
    columns: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def positions(self) -> dict[str, int]:
        """Name -> row; a repeated name is a DataError naming both lines."""
        index = dict(zip(self.names, range(len(self.names)), strict=True))
        if len(index) != len(self.names):
            seen: dict[str, int] = {}
            for row, name in enumerate(self.names):
                if name in seen:
                    raise DataError(
                        f"duplicate image '{name}' (also on line {self.lines[seen[name]]})",
                        path=self.path,
                        line=int(self.lines[row]),
                    )
                seen[name] = row
        return index


class _Converter:
    """Turns batches of value tokens into numbers, raising DataError at the first bad one.

    ``locate(k)`` maps a flat token index of the batch being converted to (line, column).
    """

    dtype: Any = np.float64

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = columns
        self.chunks: list[np.ndarray] = []

    def error(self, message: str, line: int, col: int) -> DataError:
        return DataError(message, path=self.path, line=line, field=self.columns[col])

    def add(self, tokens: list[str], locate: Callable[[int], tuple[int, int]]) -> None:
        self.chunks.append(self.convert(tokens, locate))

    def convert(self, tokens: list[str], locate: Callable[[int], tuple[int, int]]) -> np.ndarray:
        raise NotImplementedError

    def finish(self) -> np.ndarray:
        if not self.chunks:
            return np.zeros((0, len(self.columns)), dtype=self.dtype)
        flat = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        return flat.reshape(-1, len(self.columns))


class _IntConverter(_Converter):
    dtype = np.int64

    def convert(self, tokens: list[str], locate: Callable[[int], tuple[int, int]]) -> np.ndarray:
        try:
            return np.fromiter(map(int, tokens), np.int64, len(tokens))
        except (ValueError, OverflowError):
            pass
        out = np.empty(len(tokens), np.int64)
        for k, token in enumerate(tokens):
            try:
                out[k] = int(token)
            except ValueError:
                raise self.error(f"value '{token.strip()}' is not an integer", *locate(k)) from None
            except OverflowError:
                raise self.error(f"value '{token.strip()}' is out of range", *locate(k)) from None
        return out


class _FloatConverter(_Converter):
    dtype = np.float32

    def convert(self, tokens: list[str], locate: Callable[[int], tuple[int, int]]) -> np.ndarray:
        try:
            values = np.fromiter(map(float, tokens), np.float64, len(tokens))
        except ValueError:
            for k, token in enumerate(tokens):
                try:
                    float(token)
                except ValueError:
                    raise self.error(
                        f"value '{token.strip()}' is not a number", *locate(k)
                    ) from None
            raise  # unreachable: some token failed above
        bad = ~np.isfinite(values)
        if bad.any():
            k = int(np.argmax(bad))
            raise self.error(f"value '{tokens[k].strip()}' is not a finite number", *locate(k))
        return values.astype(np.float32)


class _AttrConverter(_Converter):
    """-1/1 values, or 0/1 when the whole file uses 0/1 (decided once the file is read).

    A 0 in a file that also holds a -1 is an error at the first 0.
    """

    dtype = np.int8

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        super().__init__(path, columns)
        self.has_negative = False
        self.first_zero: tuple[int, int] | None = None  # (line, column)

    def convert(self, tokens: list[str], locate: Callable[[int], tuple[int, int]]) -> np.ndarray:
        try:
            values = np.fromiter(map(_ATTR_VALUES.__getitem__, tokens), np.int8, len(tokens))
        except KeyError:
            values = np.empty(len(tokens), np.int8)
            for k, token in enumerate(tokens):
                value = _ATTR_VALUES.get(token.strip())
                if value is None:
                    self._observe(values[:k], locate)
                    raise self._bad_value(token.strip(), *locate(k)) from None
                values[k] = value
        self._observe(values, locate)
        return values

    def _observe(self, values: np.ndarray, locate: Callable[[int], tuple[int, int]]) -> None:
        if not values.size:
            return
        if not self.has_negative and (values == -1).any():
            self.has_negative = True
        if self.first_zero is None:
            zeros = values == 0
            if zeros.any():
                self.first_zero = locate(int(np.argmax(zeros)))

    def _bad_value(self, token: str, line: int, col: int) -> DataError:
        if self.has_negative and self.first_zero is not None:
            return self._zero_error()
        try:
            int(token)
        except ValueError:
            return self.error(f"value '{token}' is not an integer (expected -1/1)", line, col)
        allowed = "0/1" if self.first_zero is not None else "-1/1"
        return self.error(f"value '{token}' is not {allowed}", line, col)

    def _zero_error(self) -> DataError:
        assert self.first_zero is not None
        line, col = self.first_zero
        return self.error(
            "value '0' is not -1/1 (the file also uses -1; 0/1 is accepted only when the whole "
            "file uses 0/1)",
            line,
            col,
        )

    def finish(self) -> np.ndarray:
        values = super().finish()
        if self.has_negative and self.first_zero is not None:
            raise self._zero_error()
        return (values > 0).astype(np.int8)


@dataclass(frozen=True)
class _Spec:
    """How one table looks: its value columns, its txt preamble and its value type."""

    stem: str
    columns: tuple[str, ...]
    converter: type[_Converter]
    txt_count: bool = False  # txt: line 1 is the image count
    txt_header: bool = False  # txt: line 2 names the columns
    csv_header_check: bool = True  # csv: the header's value columns must equal ``columns``
    what: str = "values"  # for messages: "40 attribute values", ...


_ATTR_SPEC = _Spec(
    ATTR_STEM, ATTRIBUTES, _AttrConverter, True, True, True, f"{NUM_ATTRIBUTES} attribute values"
)
_PARTITION_SPEC = _Spec(PARTITION_STEM, ("partition",), _IntConverter, what="partition id")
_IDENTITY_SPEC = _Spec(
    IDENTITY_STEM, ("identity",), _IntConverter, csv_header_check=False, what="identity"
)
_BBOX_SPEC = _Spec(BBOX_STEM, BBOX_NAMES, _FloatConverter, True, True, True, "4 box values")
_LANDMARK_SPECS = {
    variant: _Spec(stem, LANDMARK_NAMES, _FloatConverter, True, True, True, "10 landmark values")
    for variant, stem in LANDMARK_STEMS.items()
}


def _header_error(spec: _Spec, got: Sequence[str], path: Path, line: int) -> DataError | None:
    """None when ``got`` equals the expected value-column names, else the error to raise.

    The message names the first differing column (counted among the value columns, the
    image-name column excluded) with what was expected and what the file has.
    """
    expected = spec.columns
    if tuple(got) == expected:
        return None
    if spec is _ATTR_SPEC:
        noun, hint = "attribute", f"CelebA's {len(expected)} attribute names in order"
    else:
        noun, hint = "column", "expected header: " + " ".join(expected)
    for col, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            return DataError(
                f"{noun} {col + 1} is named '{have}', expected '{want}' ({hint})",
                path=path,
                line=line,
            )
    if len(got) < len(expected):
        message = f"{len(got)} {noun} names, first missing: '{expected[len(got)]}'"
    else:
        message = f"{len(got)} {noun} names, first extra: '{got[len(expected)]}'"
    return DataError(f"{message} ({hint})", path=path, line=line)


def _read_table(path: Path, spec: _Spec) -> _Table:
    """Parse one txt or csv table (by extension) into names, line numbers and values."""
    # Millions of short-lived lists make the cyclic GC rescan everything again and again
    # (5x slower on the real files); none of them can form a cycle.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_table(path, spec)
    finally:
        if enabled:
            gc.enable()


def _parse_table(path: Path, spec: _Spec) -> _Table:
    csv = path.suffix.lower() == ".csv"
    lines = _read_lines(path)
    ncols = len(spec.columns)
    width = ncols + 1
    converter = spec.converter(path, spec.columns)

    # Preamble: count line and header line (txt), header line (csv).
    i = 0
    count: tuple[int, int] | None = None  # (value, line)

    def next_nonblank(start: int) -> int:
        while start < len(lines) and not lines[start].strip():
            start += 1
        return start

    if csv:
        i = next_nonblank(i)
        header = [f.strip() for f in lines[i].strip().split(",")]
        has_header = True
        if not spec.csv_header_check:
            # identity: a header is optional; it is there when the value column is not a number
            try:
                int(header[-1])
                has_header = False
            except ValueError:
                has_header = True
        if has_header:
            if spec.csv_header_check:
                # the image-name column may be unnamed or missing from the header
                got = header if len(header) == ncols else header[1:]
                err = _header_error(spec, got, path, i + 1)
                if err is not None:
                    raise err
            elif len(header) != width:
                raise DataError(
                    f"expected {width} header fields (image name, {spec.what}), got {len(header)}",
                    path=path,
                    line=i + 1,
                )
            i += 1
    else:
        if spec.txt_count:
            i = next_nonblank(i)
            tokens = lines[i].split()
            try:
                if len(tokens) != 1:
                    raise ValueError
                count = (int(tokens[0]), i + 1)
            except ValueError:
                shown = lines[i].strip()
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                raise DataError(
                    f"expected the image count on the first line, got '{shown}'",
                    path=path,
                    line=i + 1,
                ) from None
            i += 1
        if spec.txt_header:
            i = next_nonblank(i)
            if i >= len(lines):
                raise DataError("the header line is missing", path=path, line=i + 1)
            got = lines[i].split()
            if got and got[0] == "image_id":
                got = got[1:]
            err = _header_error(spec, got, path, i + 1)
            if err is not None:
                raise err
            i += 1

    # Rows, a block of lines at a time: split, check the widths, convert the values.
    names: list[str] = []
    line_blocks: list[np.ndarray] = []
    for start in range(i, len(lines), _CHUNK_ROWS):
        block = lines[start : start + _CHUNK_ROWS]
        if csv:
            rows = [line.strip().split(",") for line in block]
        else:
            rows = [line.split() for line in block]
        lengths = list(map(len, rows))
        bad_row: int | None = None
        if lengths.count(width) == len(rows):
            numbers = np.arange(start + 1, start + len(rows) + 1, dtype=np.int64)
        else:  # blank lines to skip, or a row of the wrong width
            keep = []
            for k, n in enumerate(lengths):
                if n == width:
                    keep.append(k)
                elif n and (n != 1 or rows[k][0]):  # csv: a blank line splits into ['']
                    bad_row = k
                    break
            numbers = np.asarray(keep, dtype=np.int64) + (start + 1)
            rows = [rows[k] for k in keep]
        flat = list(chain.from_iterable(rows))
        block_names = flat[0::width]
        del flat[0::width]
        names += [n.strip() for n in block_names] if csv else block_names

        def locate(k: int, numbers: np.ndarray = numbers) -> tuple[int, int]:
            return int(numbers[k // ncols]), k % ncols

        if flat:
            converter.add(flat, locate)  # an earlier bad value is reported before a bad row
        line_blocks.append(numbers)
        if bad_row is not None:
            sep = "comma-separated fields" if csv else "values"
            raise DataError(
                f"expected {width} {sep} (image name + {spec.what}), got {lengths[bad_row]}",
                path=path,
                line=start + bad_row + 1,
            )

    line_array = np.concatenate(line_blocks) if line_blocks else np.zeros(0, np.int64)
    values = converter.finish()
    if count is not None and count[0] != len(names):
        raise DataError(
            f"the count line says {count[0]} images but the file has {len(names)} rows",
            path=path,
            line=count[1],
        )
    if not names:
        raise DataError("the file has no image rows", path=path)
    table = _Table(path, names, line_array, values, spec.columns)
    if isinstance(converter, _AttrConverter):
        table.extra["values"] = "-1/1" if converter.has_negative else "0/1"
    return table


# ---------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------
def _align(attr: _Table, attr_pos: dict[str, int], other: _Table, *, exact: bool) -> np.ndarray:
    """Rows of ``other`` in the attribute file's order.

    Every image of the attribute file needs a row in ``other``; with ``exact`` every row of
    ``other`` must also be an image of the attribute file.
    """
    if other.names == attr.names:  # the usual case; attr has no duplicates, so neither has other
        return np.arange(len(attr.names))
    pos = other.positions()
    order = np.empty(len(attr.names), dtype=np.int64)
    for row, name in enumerate(attr.names):
        j = pos.get(name)
        if j is None:
            raise DataError(
                f"image '{name}' has no row in {other.path}",
                path=attr.path,
                line=int(attr.lines[row]),
            )
        order[row] = j
    if exact and len(pos) != len(attr_pos):
        for row, name in enumerate(other.names):
            if name not in attr_pos:
                raise DataError(
                    f"image '{name}' is not listed in {attr.path}",
                    path=other.path,
                    line=int(other.lines[row]),
                )
    return order


@dataclass
class CelebAIndex:
    """Everything CelebA's annotation files say, as numpy arrays in the attribute file's order.

    Build it with :meth:`load`. ``attrs`` is int8 [M, 40] in {0, 1} (CelebA's -1 becomes 0),
    ``partition`` int8 [M] (0 train, 1 val, 2 test), ``identity`` int64 [M], ``bbox`` float32
    [M, 4] (x_1, y_1, width, height in ``img_celeba`` pixels) and ``landmarks`` float32 [M, 10]
    (the file matching ``variant``); the last three are None when their file is absent.
    """

    root: Path
    variant: str
    layout: str  # "txt" or "csv": the attribute file's format
    image_dir: Path
    names: list[str]
    attrs: np.ndarray
    partition: np.ndarray
    identity: np.ndarray | None = None
    bbox: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    files: dict[str, Path] = field(default_factory=dict)  # role -> file read
    attr_values: str = "-1/1"  # what the attribute file used: "-1/1" or "0/1"

    attribute_names: tuple[str, ...] = ATTRIBUTES

    @classmethod
    def load(
        cls,
        root: str | os.PathLike[str],
        *,
        variant: str = "aligned",
        check_images: bool = True,
    ) -> CelebAIndex:
        """Detect the layout under ``root`` and parse every annotation file.

        ``variant`` picks the image folder (``aligned``: ``img_align_celeba``, ``wild``:
        ``img_celeba``) and the landmark file. With ``check_images`` every listed image must
        exist in the image folder (one directory listing, no stat per file).

        Raises DataError for a missing required file or folder and for any bad row.
        """
        check_variant(variant)
        root = resolve_root(Path(root))
        ann_dirs = [root, *(root / d for d in _ANNOTATION_SUBDIRS)]

        attr_path = _find_table(ann_dirs, ATTR_STEM, ".txt")
        if attr_path is None:
            raise DataError(
                f"no CelebA attribute file ({_looked_for(root, ann_dirs, ATTR_STEM)})",
                path=root,
            )
        layout = "csv" if attr_path.suffix.lower() == ".csv" else "txt"
        prefer = attr_path.suffix.lower()
        partition_path = _find_table(ann_dirs, PARTITION_STEM, prefer)
        if partition_path is None:
            raise DataError(
                "no CelebA partition file, which is needed for the train/val/test split "
                f"({_looked_for(root, ann_dirs, PARTITION_STEM)})",
                path=root,
            )

        attr = _read_table(attr_path, _ATTR_SPEC)
        attr_pos = attr.positions()
        attr_values = attr.extra["values"]
        part = _read_table(partition_path, _PARTITION_SPEC)
        bad = (part.values < 0) | (part.values > 2)
        if bad.any():
            row = int(np.argmax(bad[:, 0]))
            raise DataError(
                f"partition id '{int(part.values[row, 0])}' is not 0 (train), 1 (val) or 2 (test)",
                path=part.path,
                line=int(part.lines[row]),
                field="partition",
            )
        partition = part.values[_align(attr, attr_pos, part, exact=True), 0].astype(np.int8)
        files = {"attributes": attr_path, "partition": partition_path}

        identity = bbox = landmarks = None
        optional: list[tuple[str, _Spec]] = [
            ("identity", _IDENTITY_SPEC),
            ("bbox", _BBOX_SPEC),
            ("landmarks", _LANDMARK_SPECS[variant]),
        ]
        for role, spec in optional:
            path = _find_table(ann_dirs, spec.stem, prefer)
            if path is None:
                continue
            table = _read_table(path, spec)
            values = table.values[_align(attr, attr_pos, table, exact=False)]
            files[role] = path
            if role == "identity":
                identity = values[:, 0].astype(np.int64)
            elif role == "bbox":
                _check_boxes(table)
                bbox = np.ascontiguousarray(values, dtype=np.float32)
            else:
                landmarks = np.ascontiguousarray(values, dtype=np.float32)

        image_dir = find_image_dir(root, variant)
        if image_dir is None:
            image_dir = root / IMAGE_DIRS[variant]
            if check_images:
                raise DataError(
                    f"no image folder for the {variant} variant (looked for "
                    f"{IMAGE_DIRS[variant]}/ and Img/{IMAGE_DIRS[variant]}/)",
                    path=root,
                )
        elif check_images:
            _check_images_exist(attr, image_dir)

        return cls(
            root=root,
            variant=variant,
            layout=layout,
            image_dir=image_dir,
            names=attr.names,
            attrs=np.ascontiguousarray(attr.values, dtype=np.int8),
            partition=partition,
            identity=identity,
            bbox=bbox,
            landmarks=landmarks,
            files=files,
            attr_values=attr_values,
        )

    def __len__(self) -> int:
        return len(self.names)

    def select(self, split: str | int) -> np.ndarray:
        """Positions (int64) of the images in ``split``: train/val/test, 0/1/2 or all."""
        sid = split_id(split)
        if sid is None:
            return np.arange(len(self.names), dtype=np.int64)
        return np.flatnonzero(self.partition == sid).astype(np.int64)

    def split_sizes(self) -> dict[str, int]:
        """Number of images in each of train, val and test."""
        counts = np.bincount(self.partition.astype(np.int64), minlength=3)
        return {name: int(counts[i]) for i, name in enumerate(SPLIT_NAMES)}

    def image_path(self, position: int) -> Path:
        """Path of the image at ``position`` (an index into ``names``)."""
        return self.image_dir / self.names[position]


def _check_boxes(table: _Table) -> None:
    sizes = table.values[:, 2:4]
    bad = (sizes <= 0).any(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        col = 2 if sizes[row, 0] <= 0 else 3
        value = table.values[row, col]
        raise DataError(
            f"value '{value:g}' must be > 0 (a box needs a positive size)",
            path=table.path,
            line=int(table.lines[row]),
            field=BBOX_NAMES[col],
        )


def _check_images_exist(attr: _Table, image_dir: Path) -> None:
    """Every image of the attribute file is in ``image_dir`` (one listing, no stat each)."""
    try:
        with os.scandir(image_dir) as entries:
            present = {entry.name for entry in entries}
    except OSError as exc:
        raise DataError(f"cannot list the image folder: {exc.strerror}", path=image_dir) from None
    if present.issuperset(attr.names):
        return
    for row, name in enumerate(attr.names):
        if name not in present:
            raise DataError(
                f"image '{name}' not found: {image_dir / name}",
                path=attr.path,
                line=int(attr.lines[row]),
            )


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------
def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode one image with the runtime's reader (the same pixel budget and
    EXIF orientation as ``predict``); a missing, unreadable, truncated or oversized file is a
    DataError naming it. PIL's ``LOAD_TRUNCATED_IMAGES`` stays False: a truncated JPEG fails.
    """
    try:
        return open_image(path)
    except ImageError as exc:
        raise DataError(exc.message, path=exc.path) from None
