"""Fuzzing the three readers of untrusted input: the CelebA annotation reader, the runtime's
image loader and the TOML config loader. Whatever bytes they get, they return a value or raise
the project's own one-line error; any other exception is a bug.

Each reader has a short fuzz (FUZZ_EXAMPLES, in `make test-fast`) and a long one marked slow
(SLOW_EXAMPLES; `make test` runs both, about 20 s on 2 cores). Examples are derandomized, so
a failure reproduces.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facedistill.errors import UserError
from tests.data.celeba_fixtures import write_celeba

FUZZ_EXAMPLES = 60
SLOW_EXAMPLES = 600
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow],
            "derandomize": True}


def _fast_and_long(body, strategies: dict, long_strategies: dict | None = None):
    """The short fuzz and the long one (marked slow) of one test body."""
    fast = settings(max_examples=FUZZ_EXAMPLES, **SETTINGS)(given(**strategies)(body))
    long = settings(max_examples=SLOW_EXAMPLES, **SETTINGS)(
        given(**(long_strategies or strategies))(body))
    return fast, pytest.mark.slow(long)


def _one_line(exc: UserError) -> None:
    text = exc.format()
    assert text and "\n" not in text and "Traceback" not in text


# -- the CelebA reader ------------------------------------------------------------------------

_TEMPLATE: dict[str, bytes] = {}


def _template() -> dict[str, bytes]:
    """The files of a small valid dataset (txt layout), written once."""
    if not _TEMPLATE:
        root = Path(tempfile.mkdtemp(prefix="fuzz-celeba-"))
        try:
            fx = write_celeba(root, wild=False)
            for path in fx.files.values():
                if path.is_file():
                    _TEMPLATE[str(path.relative_to(root))] = path.read_bytes()
            _TEMPLATE["__images__"] = str(fx.image_dirs["aligned"].relative_to(root)).encode()
            for img in fx.image_dirs["aligned"].iterdir():
                _TEMPLATE[str(img.relative_to(root))] = img.read_bytes()
        finally:
            shutil.rmtree(root)
    return _TEMPLATE


_TABLE_EDITS = st.lists(st.tuples(
    st.sampled_from(["replace_line", "insert_line", "delete_line", "truncate", "bytes"]),
    st.integers(0, 60),
    st.one_of(st.text(max_size=40), st.sampled_from(
        ["-1", "1", "0", "2", "nan", "1e309", "-", ",", "\ufeff", "\x00", "  ", "000001.jpg",
         "image_id 5_o_Clock_Shadow", "40", "999999999999999999999"])),
), min_size=1, max_size=4)


def _edit(blob: bytes, edits: list[tuple[str, int, str]]) -> bytes:
    lines = blob.split(b"\n")
    for op, at, text in edits:
        data = text.encode("utf-8", "surrogatepass")
        i = at % max(len(lines), 1)
        if op == "replace_line":
            lines[i] = data
        elif op == "insert_line":
            lines.insert(i, data)
        elif op == "delete_line" and lines:
            del lines[i]
        elif op == "truncate":
            joined = b"\n".join(lines)
            lines = joined[: len(joined) * (at % 100) // 100].split(b"\n")
        else:
            joined = bytearray(b"\n".join(lines))
            if joined:
                joined[(at * 7919) % len(joined)] = data[:1][0] if data else 0
            lines = bytes(joined).split(b"\n")
    return b"\n".join(lines)


def _fuzz_reader(which: str, edits: list[tuple[str, int, str]]) -> None:
    from facedistill.data.celeba import CelebAIndex

    files = _template()
    tables = sorted(k for k in files if k.endswith(".txt"))
    target = next((t for t in tables if which in t), tables[0])
    root = Path(tempfile.mkdtemp(prefix="fuzz-celeba-"))
    try:
        for rel, blob in files.items():
            if rel == "__images__":
                continue
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_edit(blob, edits) if rel == target else blob)
        try:
            index = CelebAIndex.load(root)
        except UserError as exc:
            _one_line(exc)
        else:  # what it accepted is a consistent index
            assert index.attrs.shape == (len(index.names), 40)
            assert set(np.unique(index.attrs)) <= {0, 1}
    finally:
        shutil.rmtree(root)


TABLES = ["attr", "partition", "identity", "bbox", "landmarks"]


test_celeba_reader_fuzz, test_celeba_reader_fuzz_long = _fast_and_long(
    _fuzz_reader, {"which": st.sampled_from(TABLES), "edits": _TABLE_EDITS})


# -- the runtime image loader -----------------------------------------------------------------

def _seed_images() -> list[bytes]:
    out = []
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (9, 7, 3), dtype=np.uint8)
    for fmt, mode in (("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("GIF", "P"),
                      ("BMP", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB")):
        buf = io.BytesIO()
        Image.fromarray(arr).convert(mode).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()
_IMAGE_BYTES = st.tuples(
    st.integers(0, len(SEEDS) - 1),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
    st.integers(0, 100),
).map(lambda t: _mutate(SEEDS[t[0]], t[1], t[2]))


def _mutate(blob: bytes, flips: list[tuple[int, int]], keep_pct: int) -> bytes:
    b = bytearray(blob[: max(1, len(blob) * keep_pct // 100)] if keep_pct < 100 else blob)
    for pos, value in flips:
        b[pos % len(b)] = value
    return bytes(b)


def _fuzz_image(blob: bytes) -> None:
    from facedistill.runtime.images import load_rgb, open_image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.img"
        path.write_bytes(blob)
        try:  # the file reader: the decoded image in its own mode
            img = open_image(path)
        except UserError as exc:
            _one_line(exc)
        else:
            assert img.width > 0 and img.height > 0
    try:  # what predict feeds the model: RGB uint8
        arr = load_rgb(blob)
    except UserError as exc:
        _one_line(exc)
    else:
        assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8


test_image_loader_fuzz, test_image_loader_fuzz_long = _fast_and_long(
    _fuzz_image, {"blob": _IMAGE_BYTES}, {"blob": _IMAGE_BYTES | st.binary(max_size=2048)})


# -- the TOML config loader -------------------------------------------------------------------

_KEYS = st.sampled_from(["train", "data", "data.synth", "compress", "bench", "export", "predict",
                         "pipeline", "trian", "x"])
_OPTS = st.sampled_from(["epochs", "lr", "data", "out", "teachers", "batch", "n", "size", "wild",
                         "deterministic", "weights", "k", "epoch", "seed", "precision"])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=2),
    max_leaves=5)


def _toml_value(v: object) -> str | None:
    import json
    import math

    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        items = [_toml_value(x) for x in v]
        return "[" + ", ".join(i for i in items if i is not None) + "]"
    items = [f"{json.dumps(k)} = {t}" for k, x in v.items() if (t := _toml_value(x)) is not None]
    return "{" + ", ".join(items) + "}"


def _fuzz_toml(text: str) -> None:
    from facedistill.cli import cli
    from facedistill.config import load_default_map

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            table = load_default_map(cli, path)
        except UserError as exc:
            _one_line(exc)
        else:
            assert isinstance(table, dict)


_DOCS = st.one_of(
    st.lists(st.tuples(_KEYS, _OPTS, _VALUES), max_size=4).map(lambda rows: "\n".join(
        f"[{t}]\n{o} = {v}" for t, o, x in rows if (v := _toml_value(x)) is not None)),
    st.text(max_size=80),
)


test_toml_loader_fuzz, test_toml_loader_fuzz_long = _fast_and_long(_fuzz_toml, {"text": _DOCS})
