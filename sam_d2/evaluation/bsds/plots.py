"""Precision-recall plot of the BSDS boundary benchmark (iso-F contours, ODS point, humans)."""

import os
import tempfile

import numpy as np

from ...utils.atomic import atomic_open
from .metrics import EdgeBenchmarkResult

__all__ = ["BSDS500_HUMAN_RP", "check_plot_path", "save_pr_curve"]

#: (recall, precision) of human annotators on the BSDS500 test set, as plotted by the benchmark
#: (each annotator scored against the others; F = 0.80).
BSDS500_HUMAN_RP = (0.7235, 0.9014)


def save_pr_curve(result: EdgeBenchmarkResult, path: str, label: str = "") -> None:
    """Write the dataset precision-recall curve with iso-F contours and the ODS point (PNG/PDF),
    atomically.

    Args:
        result: a benchmark summary.
        path: output image path (the format follows the extension).
        label: legend name of the method.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    r = np.linspace(0.01, 1, 200)
    for f in np.arange(0.1, 1.0, 0.1):
        p = f * r / (2 * r - f)
        ok = (p > 0) & (p <= 1)
        ax.plot(r[ok], p[ok], color="0.85", linewidth=0.8)
    name = f"{label} " if label else ""
    ax.plot(
        result.recall,
        result.precision,
        linewidth=2,
        label=f"{name}[ODS={result.ods:.3f} OIS={result.ois:.3f} AP={result.ap:.3f}]",
    )
    ax.plot(result.ods_recall, result.ods_precision, "o", color="C3")
    ax.plot(*BSDS500_HUMAN_RP, "o", color="green", label="human [F=0.80]")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title("BSDS boundary benchmark")
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="lower left", fontsize=8)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", dpi=120)


def check_plot_path(path: str) -> None:
    """Fail early (before hours of matching) if ``path`` cannot receive a plot.

    Raises:
        ValueError: the extension is not an image format matplotlib writes, or the folder cannot
            be created or written to.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    if os.path.isdir(path):
        raise ValueError(f"plot path {path} is a folder, not a file")
    formats = FigureCanvasBase.get_supported_filetypes()
    extension = os.path.splitext(path)[1][1:].lower()
    if extension not in formats:
        raise ValueError(
            f"plot path {path} must end in an image extension, one of "
            f"{', '.join(sorted('.' + e for e in formats))}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"cannot write the plot {path}: {e.strerror or e}") from e
