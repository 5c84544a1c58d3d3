"""The bad-input and fault matrix (issue 21, Deliver 2): the real CLI in subprocesses, no mocks.

Every case of the issue's defect list is one row here, its id ``d<N>-...`` naming the defect
it covers. Three kinds of case, each with its runner:

* :class:`Fails` (``test_bad_input_fails_in_one_line``): exit code 2, stderr exactly one line
  ``error: ...`` (one per bad file where several are named) naming the file / line / field,
  no traceback anywhere, and the artifacts that existed before (a run, an export, a dataset,
  a predictions file) byte-identical afterwards - no extra file, temp file or staging folder;
* :class:`Passes` (``test_valid_input_passes_quietly``): exit code 0 and nothing on stderr (the
  cases pass ``--quiet``): no warning from PIL, ONNX Runtime or libtiff, no traceback;
* ``test_a_killed_export_leaves_the_previous_one_and_is_recovered``: SIGKILL at the export's
  pause points, then a later export cleans up or rolls the commit forward.

Each case copies the session's shared artifacts (tests/conftest.py, tests/reliability/
conftest.py) into its own tmp_path before damaging them. Without the slow cases it runs in
about 110 s on 2 cores; whole trainings and extra kill points are marked slow (~60 s more).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.processes import kill_export_at

SLOW = pytest.mark.slow
# what must never reach stderr: a traceback, PIL's bomb warning, ONNX Runtime's graph
# warnings, libtiff's notes (and any other Python warning)
NOISE = ("Traceback", "DecompressionBombWarning", "[W:onnxruntime", "TIFFRead", "TIFF",
         "Warning:", "warnings.warn")
# a train run as small as the matrix needs (the shape of tiny_teacher)
TRAIN = ("--arch", "snet3", "--width", "0.5", "--size", "32", "--epochs", "1", "--batch-size",
         "32", "--workers", "0", "--quiet")
COMPRESS = ("--student", "snet3", "--width", "0.25", "--size", "32", "--epochs", "1",
            "--batch-size", "32", "--k", "16", "--workers", "0", "--quiet")


def opts(base: Sequence[str], **changes: str) -> list[str]:
    """``base`` with some options' values changed: ``opts(TRAIN, workers="1")``."""
    out = list(base)
    for name, value in changes.items():
        out[out.index("--" + name.replace("_", "-")) + 1] = value
    return out


# small_synth has 52 training images: batches of 4 see every one of them (the last partial
# batch is dropped)
SMALL = {"batch_size": "4"}


# -- running the CLI, snapshotting folders ---------------------------------------------------

def cli(args: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None,
        umask: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FACEDISTILL_")}
    full_env.update({"OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})})
    return subprocess.run([sys.executable, "-m", "facedistill", *map(str, args)],
                          capture_output=True, text=True, env=full_env, timeout=timeout,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def tree(path: Path) -> dict[str, str]:
    """Every entry under ``path`` (hidden ones included) -> its sha256, or ``dir/``; a file
    ``path`` -> {"": sha256}; a missing one -> {}."""
    if not path.exists():
        return {}
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): "dir/" if p.is_dir() else
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))}


def copy_into(src: Path, name: str | None = None) -> Callable[[Path], None]:
    """A ``fill`` of the read_only / full_disk fixtures: a copy of ``src`` (file or folder)."""

    def fill(folder: Path) -> None:
        dest = folder / (name or src.name)
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copyfile(src, dest)

    return fill


# -- the cases' shared material --------------------------------------------------------------

@dataclass
class Workspace:
    """A case's own tmp_path, the session's artifacts, and helpers that copy or damage them."""

    tmp: Path
    synth: Path  # tiny_synth, read-only: copy it (data()) before damaging it
    teacher: Path  # tiny_teacher's run folder
    export: Path  # its FP32 + FP16 export (matrix_export)
    request: pytest.FixtureRequest

    @property
    def onnx(self) -> Path:
        """The good FP32 ONNX file, as an export source (always pass --out with it)."""
        return self.export / "snet3.fp32.onnx"

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)

    def data(self, name: str = "data", small: bool = False) -> Path:
        """A copy of tiny_synth (480 images), or of small_synth (64) when ``small``."""
        dest = self.tmp / name
        shutil.copytree(self.fixture("small_synth") if small else self.synth, dest)
        return dest

    def run_dir(self, name: str = "run", src: Path | None = None) -> Path:
        dest = self.tmp / name
        shutil.copytree(src or self.teacher, dest)
        return dest

    def export_dir(self, name: str = "export") -> Path:
        dest = self.tmp / name
        shutil.copytree(self.export, dest)
        return dest

    def images(self, data: Path | None = None, split: int = 0) -> list[Path]:
        """The images of a split (0 train, 1 val, 2 test), in file order."""
        root = data or self.synth
        rows = [ln.split() for ln in (root / "list_eval_partition.txt").read_text().splitlines()]
        return [root / "img_align_celeba" / r[0] for r in rows if r[1] == str(split)]

    def truncated_train_image(self, data: Path, every: bool = False) -> Path:
        """Truncate the first training image (``every``: all of them); returns the first."""
        images = self.images(data)
        for path in images if every else images[:1]:
            path.write_bytes(path.read_bytes()[:60])
        return images[0]

    def config(self, text: str) -> Path:
        path = self.tmp / "facedistill.toml"
        path.write_text(text)
        return path


@pytest.fixture
def ws(tiny_synth: Path, tiny_teacher: Path, matrix_export: Path, tmp_path: Path,
       request: pytest.FixtureRequest) -> Workspace:
    return Workspace(tmp_path, tiny_synth, tiny_teacher, matrix_export, request)


@dataclass
class Fails:
    """A bad input or a fault: exit 2 and one ``error:`` line holding every one of ``needles``
    (``each_line``: one line per entry, each holding its entry, in order); what ``keep`` lists
    is byte-identical afterwards, what ``absent`` lists does not exist."""

    args: Sequence[str | os.PathLike[str]]
    needles: Sequence[str | os.PathLike[str]] = ()
    keep: Sequence[Path] = ()
    absent: Sequence[Path] = ()
    each_line: Sequence[str | os.PathLike[str]] = ()
    not_in: Sequence[str] = ()  # what the line must not say
    env: Mapping[str, str] = field(default_factory=dict)
    within_s: float | None = None
    check: Callable[[subprocess.CompletedProcess[str]], None] | None = None


@dataclass
class Passes:
    """Valid input: exit 0, stderr empty; ``check`` looks at the result."""

    args: Sequence[str | os.PathLike[str]]
    check: Callable[[subprocess.CompletedProcess[str]], None] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    umask: int | None = None


FAILS: list[Any] = []
PASSES: list[Any] = []


Make = Callable[[Workspace], Any]  # a case: Workspace -> Fails | Passes


def case(case_id: str, *, slow: bool = False, xfail: str | None = None) -> Callable[[Make], Make]:
    """Register ``fn(ws) -> Fails | Passes`` as the case ``case_id`` of the matrix (in FAILS
    or PASSES, by its return annotation); ``xfail``: a known product defect, strictly."""

    def register(fn: Make) -> Make:
        marks = [SLOW] if slow else []
        if xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=xfail))
        table = PASSES if "Passes" in str(fn.__annotations__.get("return")) else FAILS
        table.append(pytest.param(fn, id=case_id, marks=marks))
        return fn

    return register


# -- 1: train --force / compress --force with a bad --data keep the old run -------------------

@case("d1-train-force-missing-data")
def _(ws: Workspace) -> Fails:
    run, nope = ws.run_dir(), ws.tmp / "nope"
    return Fails(["train", *TRAIN, "--data", nope, "--out", run, "--force"], [nope], keep=[run])


@case("d1-train-force-bad-label-line")
def _(ws: Workspace) -> Fails:
    run, data = ws.run_dir(), ws.data()
    attr = data / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 7"  # the first image's last label: not +-1
    attr.write_text("\n".join(lines) + "\n")
    return Fails(["train", *TRAIN, "--data", data, "--out", run, "--force"],
                 [f"{attr}:3"], keep=[run, data])


@case("d1-train-force-truncated-image")
def _(ws: Workspace) -> Fails:
    """Found only once training runs, after --force parked the old run: it is put back."""
    run, data = ws.run_dir(), ws.data(small=True)
    bad = ws.truncated_train_image(data)
    return Fails(["train", *opts(TRAIN, **SMALL), "--data", data, "--out", run, "--force"],
                 [bad], keep=[run, data])


@case("d1-compress-force-missing-data")
def _(ws: Workspace) -> Fails:
    run, nope = ws.run_dir(), ws.tmp / "nope"
    return Fails(["compress", "--teacher", ws.teacher, *COMPRESS, "--data", nope, "--out", run,
                  "--force"], [nope], keep=[run])


@pytest.fixture(scope="module")
def compress_run(tiny_synth: Path, tiny_teacher: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (1 epoch) compress run of tiny_teacher: its selection/ folder included."""
    out = tmp_path_factory.mktemp("compress") / "student"
    done = cli(["compress", "--teacher", tiny_teacher, *COMPRESS, "--data", tiny_synth,
                "--out", out])
    assert done.returncode == 0, done.stderr
    return out


@case("d1-compress-force-truncated-image", slow=True)
def _(ws: Workspace) -> Fails:
    run, data = ws.run_dir(src=ws.fixture("compress_run")), ws.data()
    bad = ws.truncated_train_image(data)
    return Fails(["compress", "--teacher", ws.teacher, *COMPRESS, "--data", data, "--out", run,
                  "--force"], [bad], keep=[run, data])


@case("d1-compress-into-a-run-without-force", slow=True)
def _(ws: Workspace) -> Fails:
    """Refused (the folder holds a run): refused before anything in it is touched."""
    run, data = ws.run_dir(src=ws.fixture("compress_run")), ws.data()
    return Fails(["compress", "--teacher", ws.teacher, *COMPRESS, "--data", data, "--out", run],
                 [run, "already holds a run"], keep=[run, data])


# -- 2: a failing export leaves the previous good export byte-identical -----------------------

@case("d2-source-fails-the-checker")
def _(ws: Workspace) -> Fails:
    out, bad = ws.export_dir(), ws.fixture("bad_models")["checker"]
    return Fails(["export", bad, "--precision", "fp32", "--no-eval", "--out", out, "--quiet"],
                 [bad, "ONNX checker"], keep=[out])


@case("d2-corrupt-calibration-image")
def _(ws: Workspace) -> Fails:
    out, data = ws.export_dir(), ws.data()
    bad = ws.truncated_train_image(data)
    return Fails(["export", ws.onnx, "--precision", "fp16,int8", "--calib-n", "100000",
                  "--no-gate", "--data", data, "--out", out, "--quiet"],
                 [bad.name, f"nothing was written: {out} is as it was"], keep=[out, data])


@case("d2-full-disk-keeps-previous-export")
def _(ws: Workspace) -> Fails:
    """The disk holds the previous export (~1 MB) but not a second one beside it."""
    disk = ws.fixture("full_disk")("1536k", copy_into(ws.export), top_up=False)
    out = disk / ws.export.name
    return Fails(["export", ws.onnx, "--precision", "fp32,fp16", "--no-eval", "--out", out,
                  "--quiet"], [out, "No space left"], keep=[disk])


# -- 4: an error in a DataLoader worker is one line --------------------------------------------

@case("d4-worker-error-train")
def _(ws: Workspace) -> Fails:
    data = ws.data(small=True)
    bad = ws.truncated_train_image(data)
    return Fails(["train", *opts(TRAIN, workers="1", **SMALL), "--data", data, "--out",
                  ws.tmp / "r"], [bad], absent=[ws.tmp / "r" / "best.pt"],
                 check=_no_worker_text)


@case("d4-worker-error-eval")
def _(ws: Workspace) -> Fails:
    data, out = ws.data(small=True), ws.tmp / "eval.json"
    bad = ws.truncated_train_image(data)
    return Fails(["eval", ws.teacher, "--data", data, "--split", "train", "--workers", "1",
                  "--out", out, "--quiet"], [bad], absent=[out], check=_no_worker_text)


@case("d4-worker-error-select")
def _(ws: Workspace) -> Fails:
    data, out = ws.data(small=True), ws.tmp / "sel" / "selection.json"
    bad = ws.truncated_train_image(data)
    return Fails(["select", "--teacher", ws.teacher, "--data", data, "--split", "train",
                  "--k", "16", "--workers", "1", "--out", out, "--quiet"], [bad],
                 absent=[out], check=_no_worker_text)


@case("d4-worker-error-compress", slow=True)
def _(ws: Workspace) -> Fails:
    data = ws.data()
    bad = ws.truncated_train_image(data)
    return Fails(["compress", "--teacher", ws.teacher, *opts(COMPRESS, workers="1"), "--data",
                  data, "--out",
                  ws.tmp / "c"], [bad], absent=[ws.tmp / "c" / "best.pt"],
                 check=_no_worker_text)


def _no_worker_text(done: subprocess.CompletedProcess[str]) -> None:
    assert "Caught" not in done.stderr and "worker" not in done.stderr, done.stderr


# -- 5: write errors name the path: read-only folder, full disk -------------------------------

@case("d5-read-only-export-out")
def _(ws: Workspace) -> Fails:
    ro = ws.fixture("read_only")(copy_into(ws.export))
    out = ro / ws.export.name
    return Fails(["export", ws.onnx, "--precision", "fp32", "--no-eval", "--out", out,
                  "--quiet"], [out], keep=[ro])


@case("d5-read-only-train-out")
def _(ws: Workspace) -> Fails:
    ro = ws.fixture("read_only")()
    return Fails(["train", *opts(TRAIN, **SMALL), "--data", ws.fixture("small_synth"), "--out",
                  ro / "run"],
                 [ro / "run"],
                 keep=[ro])


@case("d5-read-only-eval-out")
def _(ws: Workspace) -> Fails:
    ro = ws.fixture("read_only")()
    return Fails(["eval", ws.teacher, "--data", ws.fixture("small_synth"), "--workers", "0",
                  "--out", ro / "eval.json", "--quiet"], [ro / "eval.json"], keep=[ro])


@case("d5-read-only-predict-annotate")
def _(ws: Workspace) -> Fails:
    ro = ws.fixture("read_only")()
    image = ws.images()[0]
    return Fails(["predict", image, "--model", ws.onnx, "--annotate", ro / "a.jpg", "--quiet"],
                 [ro / "a.jpg"], keep=[ro])


@case("d5-read-only-synth-out")
def _(ws: Workspace) -> Fails:
    ro = ws.fixture("read_only")()
    return Fails(["data", "synth", "--out", ro / "ds", "--n", "12", "--size", "16",
                  "--workers", "1", "--quiet"], [ro / "ds"], keep=[ro])


@case("d5-full-disk-predict-annotate")
def _(ws: Workspace) -> Fails:
    disk = ws.fixture("full_disk")("1m")
    image = ws.images()[0]
    return Fails(["predict", image, "--model", ws.onnx, "--annotate", disk / "a.jpg",
                  "--quiet"], [disk / "a.jpg", "No space left"], keep=[disk])


@case("d5-full-disk-eval-out")
def _(ws: Workspace) -> Fails:
    disk = ws.fixture("full_disk")("1m", copy_into(ws.teacher / "run.json", "eval.json"))
    out = disk / "eval.json"  # an older report there stays as it was
    return Fails(["eval", ws.teacher, "--data", ws.fixture("small_synth"), "--workers", "0",
                  "--out", out, "--quiet"], [out, "No space left"], keep=[disk])


@case("d5-full-disk-synth-out")
def _(ws: Workspace) -> Fails:
    disk = ws.fixture("full_disk")("1m")
    return Fails(["data", "synth", "--out", disk / "ds", "--n", "12", "--size", "16",
                  "--workers", "1", "--quiet"], [disk, "No space left"], keep=[disk])


@case("d5-full-disk-train-out", slow=True)
def _(ws: Workspace) -> Fails:
    disk = ws.fixture("full_disk")("1m", top_up=False)
    return Fails(["train", *opts(TRAIN, **SMALL), "--data", ws.fixture("small_synth"), "--out",
                  disk / "run"],
                 [disk / "run", "cannot write"], keep=[])


# -- 6: TOML values of the wrong type name the file and the dotted key ------------------------

CONFIG_CASES = [
    ("d6-data-is-an-integer", "[train]\ndata = 5\n", "train.data"),
    ("d6-lr-is-a-list", "[train]\nlr = [1, 2]\n", "train.lr"),
    ("d6-out-is-a-table", "[train]\nout = {}\n", "train.out"),
    ("d6-teacher-is-an-integer", "[compress]\nteacher = 5\n", "compress.teacher"),
    ("d6-a-python-name-is-no-key", "[bench]\nas_json = true\n", "bench.as_json"),
    ("d6-epochs-is-a-float", "[train]\nepochs = 1.5\n", "train.epochs"),
    ("d6-epochs-is-a-boolean", "[train]\nepochs = true\n", "train.epochs"),
    ("d6-epochs-is-zero", "[train]\nepochs = 0\n", "train.epochs"),
    ("d6-compress-epochs-is-zero", "[compress]\nepochs = 0\n", "compress.epochs"),
    ("d6-synth-ipi-is-a-string", "[data.synth]\nimages_per_identity = 'five'\n",
     "data.synth.images_per_identity"),
]


def _config_case(text: str, key: str, verb: str) -> Callable[[Workspace], Fails]:
    def make(ws: Workspace) -> Fails:
        path = ws.config(text)
        return Fails(["--config", path, *verb.split(), "--help"],
                     [path, f"field '{key}'"])

    return make


for _id, _text, _key in CONFIG_CASES:
    FAILS.append(pytest.param(_config_case(_text, _key, _key.rsplit(".", 1)[0].replace(".", " ")),
                              id=_id))


# -- 7: a huge image is refused fast, before it is decoded ------------------------------------

@case("d7-huge-jpeg-detect")
def _(ws: Workspace) -> Fails:
    huge = ws.fixture("huge_jpeg")
    return Fails(["predict", huge, "--model", ws.onnx, "--detect", "--quiet"],
                 [huge, "12000x12000", "FACEDISTILL_MAX_PIXELS"], within_s=10)


@case("d7-huge-jpeg-crop")
def _(ws: Workspace) -> Fails:
    huge = ws.fixture("huge_jpeg")
    return Fails(["predict", huge, "--model", ws.onnx, "--quiet"],
                 [huge, "FACEDISTILL_MAX_PIXELS"], within_s=10)


@case("d7-bad-pixel-budget-variable")
def _(ws: Workspace) -> Fails:
    return Fails(["predict", ws.images()[0], "--model", ws.onnx, "--quiet"],
                 ["FACEDISTILL_MAX_PIXELS", "lots"], env={"FACEDISTILL_MAX_PIXELS": "lots"})


# -- 8: metadata that does not fit the graph, in predict and bench ----------------------------

BAD_MODEL_CASES = [
    ("other-graph", "other_graph", "field 'output_names'"),
    ("thresholds", "thresholds", "field 'thresholds'"),
    ("input-size", "input_size", "field 'input_size'"),
]


def _bad_model_case(which: str, needle: str, verb: str) -> Callable[[Workspace], Fails]:
    def make(ws: Workspace) -> Fails:
        model = ws.fixture("bad_models")[which]
        args = ([verb, ws.images()[0], "--model", model, "--quiet"] if verb == "predict" else
                [verb, model, "--batch", "1", "--iters", "2", "--warmup", "1", "--data",
                 ws.synth, "--limit", "8", "--quiet"])
        return Fails(args, [f"error: {model}: ", needle])

    return make


for _verb in ("predict", "bench"):
    for _id, _which, _needle in BAD_MODEL_CASES:
        FAILS.append(pytest.param(_bad_model_case(_which, _needle, _verb),
                                  id=f"d8-{_id}-{_verb}"))


# -- 9, 10: unreadable dataset files ------------------------------------------------------------

@case("d9-bomb-first-image-no-images")
def _(ws: Workspace) -> Fails:
    data = ws.data()
    first = sorted((data / "img_align_celeba").iterdir())[0]
    first.write_bytes(ws.fixture("bomb_png"))
    return Fails(["data", "check", data, "--no-images", "--quiet"], [first], keep=[data],
                 within_s=20)


def _label_file_case(name: str, content: bytes) -> Callable[[Workspace], Fails]:
    def make(ws: Workspace) -> Fails:
        data = ws.data()
        (data / name).write_bytes(content)
        return Fails(["data", "check", data, "--quiet"], [data / name, "empty"], keep=[data])

    return make


for _id, _name, _content in [
    ("d10-attr-file-only-a-bom", "list_attr_celeba.txt", "\ufeff".encode()),
    ("d10-attr-file-only-a-nbsp", "list_attr_celeba.txt", "\u00a0".encode()),
    ("d10-partition-file-bom-and-nbsp", "list_eval_partition.txt", "\ufeff\u00a0\n".encode()),
    ("d10-identity-file-only-a-nbsp", "identity_CelebA.txt", "\u00a0\n".encode()),
]:
    FAILS.append(pytest.param(_label_file_case(_name, _content), id=_id))


# -- 11: option values out of range ------------------------------------------------------------

@case("d11-eval-batch-size-0")
def _(ws: Workspace) -> Fails:
    return Fails(["eval", ws.teacher, "--batch-size", "0"], ["--batch-size"])


@case("d11-select-batch-size-0")
def _(ws: Workspace) -> Fails:
    return Fails(["select", "--teacher", ws.teacher, "--batch-size", "0"], ["--batch-size"])


@case("d11-train-batch-size-0")
def _(ws: Workspace) -> Fails:
    return Fails(["train", "--batch-size", "0", "--out", ws.tmp / "r"], ["'--batch-size'"],
                 absent=[ws.tmp / "r"])


@case("d11-synth-images-per-identity-nan")
def _(ws: Workspace) -> Fails:
    out = ws.tmp / "ds"
    return Fails(["data", "synth", "--out", out, "--n", "12", "--images-per-identity", "nan"],
                 ["'--images-per-identity'", "nan"], absent=[out])


@case("d11-synth-images-per-identity-inf")
def _(ws: Workspace) -> Fails:
    out = ws.tmp / "ds"
    return Fails(["data", "synth", "--out", out, "--n", "12", "--images-per-identity", "inf"],
                 ["'--images-per-identity'", "inf"], absent=[out])


# -- 12: several bad files: each named, the good results kept ----------------------------------

@case("d12-predict-3-good-1-corrupt")
def _(ws: Workspace) -> Fails:
    folder = ws.tmp / "faces"
    folder.mkdir()
    good = ws.images()[:3]
    for i, src in enumerate(good):
        shutil.copyfile(src, folder / f"{2 * i}.jpg")
    bad = folder / "3.jpg"
    bad.write_bytes(good[0].read_bytes()[:50])

    def check(done: subprocess.CompletedProcess[str]) -> None:
        out = json.loads(done.stdout)
        records = {Path(r["source"]).name: r for r in out["images"]}
        assert out["failed"] == 1 and set(records) == {"0.jpg", "2.jpg", "3.jpg", "4.jpg"}
        assert all(len(records[n]["attributes"]) == 40 for n in ("0.jpg", "2.jpg", "4.jpg"))
        assert "attributes" not in records["3.jpg"] and records["3.jpg"]["error"]

    return Fails(["predict", folder, "--model", ws.onnx, "--json", "--quiet"], [bad],
                 keep=[folder], check=check)


@case("d12-data-check-3-bad-images")
def _(ws: Workspace) -> Fails:
    data = ws.data()
    bad = ws.images(data, split=1)[:3]  # the first three val images
    bad[0].write_bytes(b"garbage")
    bad[1].write_bytes(bad[1].read_bytes()[:40])
    bad[2].write_bytes(b"")
    return Fails(["data", "check", data, "--quiet"], each_line=bad, keep=[data])


# -- 13: a failed export into a fresh folder leaves nothing ------------------------------------

def _export_fails_calibrating(ws: Workspace, out: Path) -> list[str | Path]:
    """An INT8 export that fails calibrating (every training image truncated) into ``out``."""
    data = ws.data(small=True)
    ws.truncated_train_image(data, every=True)
    return ["export", ws.onnx, "--precision", "int8", "--calib-n", "8", "--no-gate", "--data",
            data, "--out", out, "--quiet"]


@case("d13-failed-export-fresh-out")
def _(ws: Workspace) -> Fails:
    out = ws.tmp / "export"
    return Fails(_export_fails_calibrating(ws, out), ["img_align_celeba", "cannot decode"],
                 absent=[out])


@case("d13-failed-export-fresh-out-says-it-was-new")
def _(ws: Workspace) -> Fails:
    out = ws.tmp / "export"
    return Fails(_export_fails_calibrating(ws, out),
                 [f"nothing was written: {out} was new and is removed again"],
                 not_in=["is as it was"], absent=[out])


@case("d13-failed-export-fresh-parent")
def _(ws: Workspace) -> Fails:
    """The folders that --out needed made are gone too, not only --out itself."""
    out = ws.tmp / "fresh" / "export"
    return Fails(_export_fails_calibrating(ws, out), ["img_align_celeba"],
                 absent=[ws.tmp / "fresh"])


# -- the runner of the failing cases -----------------------------------------------------------

@pytest.mark.parametrize("make", FAILS)
def test_bad_input_fails_in_one_line(make: Callable[[Workspace], Fails], ws: Workspace) -> None:
    c = make(ws)
    before = {p: tree(p) for p in c.keep}
    start = time.monotonic()
    done = cli(c.args, env=c.env)
    seconds = time.monotonic() - start
    shown = f"rc={done.returncode}\nstdout: {done.stdout[-1500:]}\nstderr: {done.stderr[-3000:]}"
    assert done.returncode == 2, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    lines = done.stderr.splitlines()
    want = len(c.each_line) or 1
    assert len(lines) == want and all(ln.startswith("error: ") and ln[7:].strip()
                                      for ln in lines), shown
    for needle in c.needles:
        assert str(needle) in lines[0], (str(needle), lines[0])
    for line, needle in zip(lines, c.each_line, strict=False):
        assert str(needle) in line, (str(needle), line)
    for wrong in c.not_in:
        assert wrong not in lines[0], (wrong, lines[0])
    for path, old in before.items():
        assert tree(path) == old, f"{path} changed"
    for path in c.absent:
        assert not path.exists(), f"{path} was left behind"
    if c.within_s is not None:
        assert seconds < c.within_s, f"took {seconds:.1f} s"
    if c.check:
        c.check(done)


# -- clean cases: valid input passes, nothing on stderr ----------------------------------------

@case("d3-int8-entropy-calib-45")
def _(ws: Workspace) -> Passes:
    return _calib_45(ws, "entropy")


@case("d3-int8-percentile-calib-45")
def _(ws: Workspace) -> Passes:
    return _calib_45(ws, "percentile")


def _calib_45(ws: Workspace, method: str) -> Passes:
    out = ws.tmp / "export"

    def check(done: subprocess.CompletedProcess[str]) -> None:
        report = json.loads((out / "export_report.json").read_text())
        calib = report["variants"]["int8"]["calibration"]
        assert report["variants"]["int8"]["status"] == "ok"
        assert (calib["method"], calib["n_images"]) == (method, 45)

    return Passes(["export", ws.onnx, "--precision", "int8", "--calib-n", "45",
                   "--calib-method", method, "--no-gate", "--no-eval", "--data",
                   ws.fixture("small_synth"), "--out", out, "--quiet"], check)


@case("d2-re-export-in-place-same-source")
def _(ws: Workspace) -> Passes:
    """Export the folder's own fp32 into the folder: the same source, so the fp16 is carried
    and the fp32 stays byte for byte."""
    out = ws.export_dir()
    before = tree(out)

    def check(done: subprocess.CompletedProcess[str]) -> None:
        after = tree(out)
        assert set(after) == set(before)
        assert after["snet3.fp32.onnx"] == before["snet3.fp32.onnx"]
        assert after["snet3.fp16.onnx"] == before["snet3.fp16.onnx"]
        report = json.loads((out / "export_report.json").read_text())
        assert report["variants"]["fp16"]["carried_from"]

    return Passes(["export", out / "snet3.fp32.onnx", "--precision", "fp32", "--no-eval",
                   "--quiet"], check)


@case("d13-stale-temp-files-swept")
def _(ws: Workspace) -> Passes:
    """What a killed writer left next to an artifact (an hour old) goes on the next write; a
    live writer's (fresh) temp file stays."""
    folder = ws.tmp / "ann"
    folder.mkdir()
    stale, fresh = folder / ".a.jpg.k1ll3d.tmp", folder / ".a.jpg.l1v3.tmp"
    for p in (stale, fresh):
        p.write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))

    def check(done: subprocess.CompletedProcess[str]) -> None:
        assert sorted(p.name for p in folder.iterdir()) == [fresh.name, "a.jpg"]

    return Passes(["predict", ws.images()[0], "--model", ws.onnx, "--annotate",
                   folder / "a.jpg", "--quiet"], check)


@case("d13-stale-synth-staging-swept")
def _(ws: Workspace) -> Passes:
    staging = ws.tmp / ".ds.tmp-k1ll3d"  # a killed `data synth --out ds`, two days ago
    staging.mkdir()
    (staging / "000001.jpg").write_bytes(b"half")
    old = time.time() - 2 * 86400
    os.utime(staging, (old, old))

    def check(done: subprocess.CompletedProcess[str]) -> None:
        assert sorted(p.name for p in ws.tmp.iterdir()) == ["ds"]

    return Passes(["data", "synth", "--out", ws.tmp / "ds", "--n", "12", "--size", "16",
                   "--workers", "1", "--quiet"], check)


def _synth_mode(ws: Workspace, umask: int) -> Passes:
    out = ws.tmp / "ds"

    def check(done: subprocess.CompletedProcess[str]) -> None:
        assert out.stat().st_mode & 0o777 == 0o777 & ~umask
        for p in out.rglob("*"):
            want = (0o777 if p.is_dir() else 0o666) & ~umask
            assert p.stat().st_mode & 0o777 == want, p

    return Passes(["data", "synth", "--out", out, "--n", "12", "--size", "16", "--workers",
                   "1", "--quiet"], check, umask=umask)


@case("d14-synth-follows-umask-022")
def _(ws: Workspace) -> Passes:
    return _synth_mode(ws, 0o022)


@case("d14-synth-follows-umask-027")
def _(ws: Workspace) -> Passes:
    return _synth_mode(ws, 0o027)


@case("d15-exif-orientation-predict")
def _(ws: Workspace) -> Passes:
    """A JPEG tagged 'rotate 90' predicts as the same pixels stored upright, and not as the
    stored pixels (the orientation matters for this face)."""
    from PIL import Image

    src = Image.open(ws.images()[0]).convert("RGB")
    tagged = ws.tmp / "tagged.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    src.save(tagged, exif=exif, quality=95)
    stored = Image.open(tagged)
    stored.load()
    raw = stored.copy()  # the stored pixels, not transposed
    raw.save(ws.tmp / "raw.png")
    raw.transpose(Image.Transpose.ROTATE_270).save(ws.tmp / "upright.png")

    def probs(path: Path) -> list[float]:
        done = cli(["predict", path, "--model", ws.onnx, "--json", "--quiet"])
        assert done.returncode == 0, done.stderr
        attrs = json.loads(done.stdout)["images"][0]["attributes"]
        return [a["probability"] for a in attrs.values()]

    def check(done: subprocess.CompletedProcess[str]) -> None:
        got = [a["probability"] for a in json.loads(done.stdout)["images"][0]["attributes"]
               .values()]
        upright, sideways = probs(ws.tmp / "upright.png"), probs(ws.tmp / "raw.png")
        assert max(abs(a - b) for a, b in zip(got, upright, strict=True)) < 1e-5
        assert max(abs(a - b) for a, b in zip(got, sideways, strict=True)) > 1e-3

    return Passes(["predict", tagged, "--model", ws.onnx, "--json", "--quiet"], check)


@case("d16-data-check-good-dataset")
def _(ws: Workspace) -> Passes:
    def check(done: subprocess.CompletedProcess[str]) -> None:
        assert json.loads(done.stdout)["images"] == 480

    return Passes(["data", "check", ws.synth, "--json", "--quiet"], check)


@case("d16-predict-json-good-image")
def _(ws: Workspace) -> Passes:
    def check(done: subprocess.CompletedProcess[str]) -> None:
        out = json.loads(done.stdout)
        assert out.get("failed", 0) == 0 and len(out["images"][0]["attributes"]) == 40

    return Passes(["predict", ws.images()[0], "--model", ws.onnx, "--json", "--quiet"], check)


@case("d16-predict-tiff-and-png")
def _(ws: Workspace) -> Passes:
    from PIL import Image

    folder = ws.tmp / "formats"
    folder.mkdir()
    img = Image.open(ws.images()[0]).convert("RGB")
    img.save(folder / "a.tif", compression="tiff_deflate")
    img.save(folder / "b.png")
    img.convert("RGBA").save(folder / "c.png")

    def check(done: subprocess.CompletedProcess[str]) -> None:
        assert len(json.loads(done.stdout)["images"]) == 3

    return Passes(["predict", folder, "--model", ws.onnx, "--json", "--quiet"], check)


@case("d16-big-image-under-a-raised-budget")
def _(ws: Workspace) -> Passes:
    """144 Mpx (over PIL's 89 Mpx warning) under a raised budget: read, and no bomb warning."""
    return Passes(["predict", ws.fixture("huge_jpeg"), "--model", ws.onnx, "--json",
                   "--quiet"], env={"FACEDISTILL_MAX_PIXELS": "200000000"})


@case("d16-bench-good-model")
def _(ws: Workspace) -> Passes:
    def check(done: subprocess.CompletedProcess[str]) -> None:
        assert json.loads(done.stdout)["rows"]

    return Passes(["bench", ws.onnx, "--batch", "1", "--iters", "2", "--warmup", "1",
                   "--data", ws.synth, "--limit", "8", "--json", "--quiet"], check)


@pytest.mark.parametrize("make", PASSES)
def test_valid_input_passes_quietly(make: Callable[[Workspace], Passes], ws: Workspace) -> None:
    c = make(ws)
    done = cli(c.args, env=c.env, umask=c.umask)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout
    noise = [n for n in NOISE if n in done.stderr]
    assert done.stderr == "" and not noise, done.stderr[-3000:]
    if c.check:
        c.check(done)


# -- 2, 13: SIGKILL at the export's pause points -------------------------------------------------

def _consistent(out: Path) -> dict[str, Any]:
    """The report lists files whose bytes it records; no staging folder, no temp file."""
    report = json.loads((out / "export_report.json").read_text())
    for name, v in report["variants"].items():
        if v["status"] == "ok":
            assert tree(Path(v["path"]))[""] == v["sha256"], name
    assert not [p for p in out.iterdir() if p.name.startswith(".")], list(out.iterdir())
    return report


@pytest.mark.parametrize("point", [
    pytest.param("export:int8", id="d2-kill-during-int8"),
    pytest.param("export:journal", id="d13-kill-after-the-journal", marks=SLOW),
    pytest.param("export:commit", id="d13-kill-mid-commit", marks=SLOW),
])
def test_a_killed_export_leaves_the_previous_one_and_is_recovered(point: str,
                                                                  ws: Workspace) -> None:
    """Killed while building: the previous export is byte-identical but for the abandoned
    staging folder. Killed once the commit is decided: the next export finishes it first.
    Either way the next export leaves a consistent folder and no leftovers."""
    out = ws.export_dir()
    before = tree(out)
    kill_export_at(point, ws.onnx, out, ws.synth)
    after = tree(out)
    staged = {k for k in after if k.startswith(".export-")}
    assert staged, "the killed export left no staging folder: was it killed in time?"
    if point == "export:int8":
        assert {k: v for k, v in after.items() if k not in staged} == before
    done = cli(["export", ws.onnx, "--precision", "fp32", "--no-eval", "--out", out, "--quiet"])
    assert done.returncode == 0 and done.stderr == "", done.stderr
    report = _consistent(out)
    if point == "export:int8":
        assert tree(out)["snet3.fp16.onnx"] == before["snet3.fp16.onnx"]
        assert set(report["variants"]) == {"fp32", "fp16"}
    else:  # rolled forward: the killed export's int8 is there, and listed
        assert set(report["variants"]) == {"fp32", "fp16", "int8"}
