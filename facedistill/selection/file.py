"""``selection.json``: its format, the checked reader and the plot (no torch).

The file is written by :func:`facedistill.pipeline.selection.run_selection`; students read it
through :func:`read_selection` (``facedistill compress --selection``); both hold it as a
:class:`SelectionRecord`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.errors import UserError
from facedistill.io import atomic_path
from facedistill.records import check_format, read_json
from facedistill.selection.solver import Selection, normalise

FORMAT = "facedistill.selection/v1"

__all__ = ["FORMAT", "SelectionRecord", "plot_selection", "read_selection"]


def plot_selection(x: np.ndarray, sel: Selection, path: str | os.PathLike[str],
                   attributes: Sequence[str] | None = None) -> Path:
    """Two panels: X of the selected neurons against as many rejected ones (rows sorted by u),
    and the histogram of u for both groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    xh = normalise(x)
    chosen = np.zeros(x.shape[0], bool)
    chosen[sel.indices] = True
    rejected = np.flatnonzero(~chosen)
    show = min(sel.k, 200)
    top = sel.indices[np.argsort(-sel.u[sel.indices], kind="stable")][:show]
    rng = np.random.default_rng(0)
    others = rng.choice(rejected, size=min(show, rejected.shape[0]), replace=False) \
        if rejected.shape[0] else rejected
    others = others[np.argsort(-sel.u[others], kind="stable")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8), layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1.2, 1.1]})
    for ax, rows, title in ((axes[0], top, f"selected: top {len(top)} of {sel.k} by u"),
                            (axes[1], others, f"rejected: {len(others)} at random")):
        im = ax.imshow(xh[rows] if len(rows) else np.zeros((1, x.shape[1])), aspect="auto",
                       vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("attribute (column of X)")
    axes[0].set_ylabel("neuron, by decreasing u")
    fig.colorbar(im, ax=axes[1], label="normalised accuracy xh", shrink=0.9)
    bins = np.linspace(0, max(float(sel.u.max()), 1e-6), 40)
    axes[2].hist(sel.u[~chosen], bins=bins, alpha=0.6, label="rejected")
    axes[2].hist(sel.u[chosen], bins=bins, alpha=0.6, label="selected")
    axes[2].set_xlabel("informativeness u")
    axes[2].set_ylabel("neurons")
    axes[2].legend()
    fig.suptitle(f"neuron selection: {sel.k} of {x.shape[0]} ({sel.solver}, "
                 f"lam={sel.config.get('lam')})")
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return target



@dataclass(frozen=True)
class SelectionRecord:
    """A ``selection.json`` (:data:`FORMAT`), typed: what ``select`` writes and ``compress``
    and the pipeline read. Global neuron index ``i`` of teacher ``t`` is
    ``teachers[t]["offset"] + j``; ``u``/``q`` cover all ``candidates``; ``thresholds`` and
    ``selected`` the chosen ``indices`` only. ``path``: where it was read or written (not part
    of the file)."""

    k: int
    candidates: int
    indices: tuple[int, ...]
    solver: str = "exact"
    config: Mapping[str, Any] = field(default_factory=dict)  # solver settings, polarity, split
    attributes: tuple[str, ...] = ()
    teachers: tuple[Mapping[str, Any], ...] = ()  # path, sha256, arch, width, neurons, offset
    data: Mapping[str, Any] = field(default_factory=dict)  # root, split, images
    selected: tuple[Mapping[str, Any], ...] = ()  # index, teacher, neuron, u, q
    thresholds: tuple[float, ...] = ()
    u: tuple[float, ...] = ()
    q: tuple[float, ...] = ()
    b: float | None = None
    energies: tuple[float, ...] = ()
    iterations: int = 0
    converged: bool = False
    mean_x_selected: float | None = None
    mean_x_all: float | None = None
    redundancy: Mapping[str, Any] | None = None
    seconds: Mapping[str, float] = field(default_factory=dict)
    files: Mapping[str, str | None] = field(default_factory=dict)
    version: str | None = None  # the facedistill that wrote it
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object (``path`` left out; tuples as lists)."""
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}
        return {"format": FORMAT, **json.loads(json.dumps(body))}

    @classmethod
    def from_json(cls, rec: Any, path: str | os.PathLike[str] | None = None) -> SelectionRecord:
        """Checked: the format, ``k`` and the indices (distinct, in range); the other fields
        take their type's shape (files of older versions lack some)."""
        where = Path(path) if path is not None else None
        rec = check_format(rec, FORMAT, where)
        idx = rec.get("indices")
        n = rec.get("candidates")
        if (not isinstance(idx, list) or not isinstance(n, int) or len(idx) != rec.get("k")
                or not all(isinstance(i, int) and 0 <= i < n for i in idx)
                or len(set(idx)) != len(idx)):
            raise UserError("the selected indices are missing, repeated or out of range",
                            path=where, field="indices")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "path" or f.name not in rec:
                continue
            value = rec[f.name]
            kw[f.name] = tuple(value) if isinstance(value, list) else value
        try:
            return cls(**kw, path=where)
        except TypeError as exc:  # pragma: no cover - a field of the wrong shape
            raise UserError(f"malformed selection file: {exc}", path=where) from None

    def write(self, path: str | os.PathLike[str]) -> SelectionRecord:
        """Write it atomically to ``path``; the record with its ``path`` set."""
        from facedistill.io import atomic_write_json

        atomic_write_json(path, self.to_json())
        return replace(self, path=Path(path))


def read_selection(path: str | os.PathLike[str]) -> SelectionRecord:
    """A ``selection.json`` (or the folder holding it), checked: format, k, indices."""
    rec, p = read_json(path, "selection.json", "selection file")
    return SelectionRecord.from_json(rec, p)
