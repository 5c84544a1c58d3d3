"""``selection.json``: its format, the checked reader and the plot (no torch).

The file is written by :func:`facedistill.pipeline.selection.run_selection`; students read it
through :func:`read_selection` (``facedistill compress --selection``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facedistill.errors import UserError
from facedistill.io import atomic_path
from facedistill.selection.solver import Selection, normalise

FORMAT = "facedistill.selection/v1"

__all__ = ["FORMAT", "plot_selection", "read_selection"]


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



def read_selection(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``selection.json`` (or the folder holding it), checked: format, k, indices."""
    p = Path(path)
    if p.is_dir():
        p = p / "selection.json"
    try:
        rec = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError("no selection file here", path=p) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"not a readable selection file ({exc})", path=p) from None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise UserError(f"not a {FORMAT} file", path=p)
    idx = rec.get("indices")
    n = rec.get("candidates")
    if (not isinstance(idx, list) or not isinstance(n, int) or len(idx) != rec.get("k")
            or not all(isinstance(i, int) and 0 <= i < n for i in idx)
            or len(set(idx)) != len(idx)):
        raise UserError("the selected indices are missing, repeated or out of range",
                        path=p, field="indices")
    rec["path"] = str(p)
    return rec
