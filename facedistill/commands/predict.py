"""``facedistill predict``: the attributes of face images with an exported model (no torch).

Only :mod:`facedistill.runtime` is imported, inside the command, so the verb runs where torch
is not installed (a Jetson, a slim container).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from facedistill.clikit import EXIT_USER_ERROR, console, err_console, print_json, progress_bar
from facedistill.config import config_command, opt
from facedistill.errors import ConfigError, UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm",
                  ".pgm")


def expand_images(args: Sequence[Path]) -> list[Path]:
    """Files as given (in order); a folder stands for its image files (by suffix, sorted)."""
    out: list[Path] = []
    for arg in args:
        if arg.is_dir():
            found = sorted(p for p in arg.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder",
                                path=arg)
            out.extend(found)
        else:
            out.append(arg)  # a missing or unreadable file is reported when it is read
    return out


def annotation_targets(images: Sequence[Path], annotate: Path) -> list[Path]:
    """Where each annotated image goes: ``annotate`` itself for one image given an image file
    name, else ``annotate/<name>`` (``-2``, ``-3`` ... on clashes); never over an input."""
    from PIL import Image

    writable = Image.registered_extensions()
    as_file = not annotate.is_dir() and annotate.suffix != ""
    if as_file:
        if len(images) > 1:
            raise UserError("several images: give a folder, not a file name", field="--annotate",
                            path=annotate)
        targets = [annotate]
    else:
        targets, taken = [], set()
        for img in images:
            suffix = img.suffix.lower() if img.suffix.lower() in writable else ".png"
            name, k = f"{img.stem}{suffix}", 1
            while name in taken:
                k += 1
                name = f"{img.stem}-{k}{suffix}"
            taken.add(name)
            targets.append(annotate / name)
    inputs = {p.resolve() for p in images}
    for target in targets:
        if target.resolve() in inputs:
            raise UserError("would overwrite an input image: choose another folder",
                            path=target, field="--annotate")
    return targets


@dataclass(frozen=True)
class PredictConfig:
    """Which images, which model, how it runs, what is printed and drawn."""

    images: tuple[Path, ...] = opt(argument=True)
    model: Path = opt(help="Exported model: .onnx (ONNX Runtime) or .engine (TensorRT).")
    backend: Literal["auto", "ort", "ov", "trt"] = opt(
        "auto", "auto: by the model file's suffix (and the settings 'bench --tune' chose for it "
                "on this machine); ov: OpenVINO on the CPU (the [openvino] extra).")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N (auto: a GPU when ONNX Runtime has "
                              "one).")
    threads: int | None = opt(None, "Intra-op threads of ONNX Runtime or OpenVINO [default: one "
                                    "per physical core].", type=click.IntRange(min=0))
    spin: bool = opt(False, "Let ONNX Runtime's threads spin between calls: lower latency for "
                            "one model called back to back, slower beside other work "
                            "(docs/runtime.md).")
    detect: bool = opt(False, "Find faces (OpenCV Haar cascade, the 'detect' extra) and predict "
                              "each crop; without it every image is taken as one aligned face.")
    margin: float | None = opt(None, "With --detect: crop margin around each face box, as a "
                                     "fraction of its size [default: the model's training "
                                     "margin].", type=click.FloatRange(min=0))
    top: int | None = opt(None, "Show at most N positive attributes per face, ranked by margin "
                                "over their threshold (tables and --annotate; JSON always has "
                                "all) [default: all in tables, 3 on images].",
                          type=click.IntRange(min=1))
    reliability_floor: float = opt(0.6, "Flag as unreliable the attributes whose validation "
                                        "balanced accuracy (stored in the model) is under this "
                                        "fraction; they are left out of the positives shown "
                                        "and drawn unless --all. 0 flags none.")
    show_all: bool = opt(False, "Also show and draw positives of unreliable attributes, marked "
                                "so.", name="all")
    annotate: Path | None = opt(None, "Write the images with boxes and top attributes: a file "
                                      "for one image (OUT.jpg), else a folder.", metavar="OUT")
    batch_size: int = opt(32, type=click.IntRange(min=1))
    json: bool = opt(False, "Print JSON: every attribute's probability, decision, threshold, "
                            "margin and whether it is reliable.")
    quiet: bool = opt(False, "No progress bar.")

    def __post_init__(self) -> None:
        floor = self.reliability_floor
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not (
                math.isfinite(floor) and 0.0 <= floor <= 1.0):
            raise ConfigError(f"must be a fraction between 0 and 1 (0.6 = 60% validation "
                              f"balanced accuracy), not {floor!r}", field="reliability_floor")
        if self.margin is not None and not self.detect:
            raise ConfigError("needs --detect (it is the crop margin around found faces)",
                              field="margin")


@config_command("predict", PredictConfig)
def command(cfg: PredictConfig) -> None:
    """Predict the attributes of face IMAGES (files or folders) with an exported model.

    \b
    Without --detect each image should be a face crop like the training images; with --detect
    faces are found in whole photos, cropped with a margin and predicted one by one. An
    attribute is positive when its probability reaches the threshold stored in the model;
    positives are ranked by their margin over it (probability - threshold). Attributes whose
    validation balanced accuracy is under --reliability-floor are unreliable and not shown
    (--all shows them, marked). Probabilities and thresholds are both on the probability.
    """
    from facedistill.runtime import Predictor, load_image
    from facedistill.runtime.draw import annotate as draw
    from facedistill.runtime.draw import save_image

    images, model, backend, device, threads = (cfg.images, cfg.model, cfg.backend, cfg.device,
                                               cfg.threads)
    spin, detect, margin, top, annotate = cfg.spin, cfg.detect, cfg.margin, cfg.top, cfg.annotate
    batch_size, as_json, quiet, show_all = cfg.batch_size, cfg.json, cfg.quiet, cfg.show_all
    paths = expand_images(images)
    targets = annotation_targets(paths, annotate) if annotate is not None else None
    predictor = Predictor(model, backend=backend, device=device, threads=threads,
                          batch_size=batch_size, spin=spin,
                          reliability_floor=cfg.reliability_floor)
    if not as_json:
        _print_reliability(predictor, show_all)
    records: list[dict[str, Any]] = []
    failed = 0

    def run_one(path: Path) -> Any:
        if detect:
            return predictor.predict_faces(path, margin=margin)
        return predictor.predict_batch([path])[0]

    with progress_bar("predict", enabled=not quiet and not as_json and len(paths) > 1) as update:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            outcomes: list[Any]
            try:
                outcomes = [run_one(p) for p in chunk] if detect else \
                    predictor.predict_batch(chunk)
            except UserError:  # a bad file in the batch: go one by one to name every bad one
                outcomes = []
                for p in chunk:
                    try:
                        outcomes.append(run_one(p))
                    except UserError as exc:
                        outcomes.append(exc)
            for offset, (path, result) in enumerate(zip(chunk, outcomes, strict=True)):
                try:
                    if isinstance(result, UserError):
                        raise result
                    if targets is not None:
                        image = draw(load_image(path), result, top=top or 3, all=show_all)
                        save_image(image, targets[start + offset])
                except UserError as exc:
                    failed += 1
                    err_console.print(f"error: {exc.format()}", markup=False, soft_wrap=True)
                    records.append({"source": str(path), "error": exc.format()})
                    continue
                records.append(_record(path, result, detect))
                if not as_json:
                    _print(path, result, detect, top, show_all)
            update(min(start + batch_size, len(paths)), len(paths))
    if as_json:
        print_json({"model": predictor.describe(), "images": records, "failed": failed})
    elif targets is not None and failed < len(paths):
        where = targets[0] if len(targets) == 1 else targets[0].parent
        done = len(paths) - failed
        console.print(f"annotated {done} image{'s' * (done != 1)}: {where}",
                      markup=False, soft_wrap=True)
    if failed:  # every bad file has its line above; the good ones' results are out
        click.get_current_context().exit(EXIT_USER_ERROR)


def _record(path: Path, result: Any, detect: bool) -> dict[str, Any]:
    if detect:
        return {"source": str(path), "faces": [face.to_dict() for face in result]}
    return result.to_dict()


def _print_reliability(predictor: Any, show_all: bool) -> None:
    """One line, before the tables, on the attributes flagged unreliable (or on a model that
    cannot say)."""
    if predictor.val_balanced is None:
        console.print("note: this model carries no per-attribute validation accuracy (exported "
                      "before it was recorded): no attribute is flagged unreliable",
                      markup=False, soft_wrap=True)
        return
    flagged = predictor.unreliable
    if not flagged:
        return
    what = "shown and marked" if show_all else "left out (--all shows them)"
    console.print(f"note: {len(flagged)} attribute{'s' * (len(flagged) != 1)} under "
                  f"{100 * predictor.reliability_floor:g}% validation balanced accuracy "
                  f"{'are' if len(flagged) != 1 else 'is'} unreliable, {what}: "
                  f"{', '.join(flagged)}", markup=False, soft_wrap=True)


def _print(path: Path, result: Any, detect: bool, top: int | None, show_all: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    if detect and not result:
        console.print(f"[bold]{escape(str(path))}[/]: no face found", soft_wrap=True)
        return
    items = ([(f"face {i + 1} at {list(face.box)}", face.prediction)
              for i, face in enumerate(result)] if detect else [("", result)])
    for label, pred in items:
        positives = pred.positives(top=top, all=show_all)
        title = escape(f"{path}" + (f" - {label}" if label else ""))
        if not positives:
            console.print(f"[bold]{title}[/]: no positive attribute", soft_wrap=True)
            continue
        console.print(f"[bold]{title}[/]", soft_wrap=True)
        table = Table()
        table.add_column("attribute")
        table.add_column("probability", justify="right")
        table.add_column("threshold (prob.)", justify="right")
        table.add_column("margin", justify="right")
        flagged = show_all and any(not pred.is_reliable(name) for name, _ in positives)
        if flagged:
            table.add_column("")
        for name, p in positives:
            i = pred.attributes.index(name)
            row = [name, f"{p:.3f}", f"{pred.thresholds[i]:.3f}", f"{pred.margins[i]:+.3f}"]
            if flagged:
                row.append("" if pred.is_reliable(name) else "unreliable")
            table.add_row(*row)
        console.print(table)
