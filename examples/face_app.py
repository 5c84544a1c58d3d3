"""A small face app on the facedistill runtime: photos in, annotated photos and JSON out.

It finds the faces in every image of a folder (OpenCV's Haar cascade), predicts the 40
attributes of each face with an exported model, draws the boxes and the clearest positive
attributes (reliable ones, by margin over their threshold), and writes one JSON file with everything. It needs only the runtime (numpy, PIL,
onnxruntime) and, for detection, OpenCV: no torch.

    pip install 'facedistill[detect]'
    facedistill export runs/snet3 --onnx           # or any exported .onnx / .engine
    python examples/face_app.py --model runs/snet3/export/snet3.fp32.onnx \\
        --images photos/ --out annotated/ [--aligned] [--top 3] [--workers 4]

``--aligned`` skips detection: each image is taken as one aligned face crop (like CelebA's
img_align_celeba). A photo that cannot be read is reported and skipped; the app goes on.
One Predictor is shared by all worker threads (it is thread-safe).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from facedistill.errors import UserError
from facedistill.io import atomic_write_text
from facedistill.runtime import Predictor, load_image
from facedistill.runtime.detect import make_detector
from facedistill.runtime.draw import annotate, save_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def process(predictor: Predictor, path: Path, out_dir: Path, aligned: bool, top: int) -> dict:
    """Predict one photo, write its annotated copy, return its JSON record."""
    image = load_image(path)  # decoded once, used for predicting and drawing
    if aligned:
        prediction = predictor.predict(image)
        drawn = annotate(image, prediction, top=top)
        record = {"image": path.name, "attributes": prediction.to_dict()["attributes"]}
    else:
        faces = predictor.predict_faces(image)  # largest face first; [] when none
        drawn = annotate(image, faces, top=top)
        record = {"image": path.name, "faces": [face.to_dict() for face in faces]}
    save_image(drawn, out_dir / f"{path.stem}.jpg")
    return record


def summary(record: dict, top: int) -> str:
    """One line per image: what was found."""
    if "error" in record:
        return f"{record['image']}: skipped ({record['error']})"
    if "attributes" in record:
        groups = [record["attributes"]]
    else:
        groups = [face["attributes"] for face in record["faces"]]
        if not groups:
            return f"{record['image']}: no face found"
    described = []
    for attrs in groups:
        # the positives the annotation draws: reliable ones, by margin over the threshold
        positive = sorted((a for a in attrs.items() if a[1]["positive"] and a[1]["reliable"]),
                          key=lambda a: -a[1]["margin"])[:top]
        described.append(", ".join(f"{name} {v['probability']:.2f}" for name, v in positive)
                         or "no positive attribute")
    return f"{record['image']}: " + " | ".join(described)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="exported .onnx or .engine")
    ap.add_argument("--images", type=Path, required=True, help="folder of photos")
    ap.add_argument("--out", type=Path, required=True, help="folder for the results")
    ap.add_argument("--aligned", action="store_true", help="images are face crops: no detection")
    ap.add_argument("--top", type=int, default=3, help="attributes drawn per face")
    ap.add_argument("--workers", type=int, default=2, help="threads sharing one Predictor")
    args = ap.parse_args()

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if args.out.resolve() == args.images.resolve():
        raise SystemExit("--out must differ from --images (the inputs would be overwritten)")
    predictor = Predictor(args.model, threads=1)  # one ORT thread per worker thread
    if not args.aligned:
        try:  # fail now, not once per photo, when OpenCV (or its Haar cascades) is missing
            make_detector("haar")
        except UserError as exc:
            raise SystemExit(f"error: {exc.format()} (or pass --aligned for face crops)") from None

    def run(path: Path) -> dict:
        try:
            return process(predictor, path, args.out, args.aligned, args.top)
        except UserError as exc:  # an unreadable photo: report it, keep going
            return {"image": path.name, "error": exc.format()}

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        records = list(pool.map(run, paths))
    for record in records:
        print(summary(record, args.top))
    report = {"model": predictor.describe(), "images": records}
    atomic_write_text(args.out / "results.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {len(records)} records to {args.out / 'results.json'} and annotated images "
          f"to {args.out}/")


if __name__ == "__main__":
    main()
