"""The paper's values (``reports/reference/``): its Figure 2 and 3 curves read from the PDF's
vector paths, its printed axes and right-edge values.

A run is compared with the paper **at the same number of training samples evaluated**: the
paper's curve interpolated linearly in log x (Figure 2) or x (Figure 3), using only points inside
the printed axes. Outside the range the paper shows, the answer is None ("off-axis"), never an
extrapolation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

PAPER_CURVE_NAMES = {"aevb": "AEVB", "wake_sleep": "WakeSleep", "mcem": "MCEM"}
REFERENCE_DIR = Path("reports/reference")


@dataclass(frozen=True)
class Reference:
    """The paper's curves and printed axes (``reports/reference/``)."""

    fig2: pd.DataFrame
    fig3: pd.DataFrame
    axes: dict

    @classmethod
    def load(cls, directory: Path) -> "Reference":
        directory = Path(directory)
        missing = [n for n in ("fig2_curves.csv", "fig3_curves.csv", "axes.yaml") if not (directory / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} lacks {', '.join(missing)}: the paper's reference values "
                                    f"ship with the repository in reports/reference/")
        return cls(pd.read_csv(directory / "fig2_curves.csv"), pd.read_csv(directory / "fig3_curves.csv"),
                   yaml.safe_load((directory / "axes.yaml").read_text()))

    def fig2_curve(self, dataset: str, nz: int, algorithm: str, split: str) -> pd.DataFrame:
        panel = f"{'MNIST' if dataset == 'mnist' else 'Frey'}_Nz{nz}"
        curve = f"{PAPER_CURVE_NAMES[algorithm]}_{split}"
        rows = self.fig2[(self.fig2.panel == panel) & (self.fig2.curve == curve) & (self.fig2.inside_axes == 1)]
        return rows.sort_values("training_samples_evaluated")

    def fig3_curve(self, ntrain: int, algorithm: str, split: str) -> pd.DataFrame:
        rows = self.fig3[(self.fig3.panel == f"Ntrain{ntrain}") & (self.fig3.curve == f"{PAPER_CURVE_NAMES[algorithm]}_{split}")
                         & (self.fig3.inside_axes == 1)]
        return rows.sort_values("training_samples_evaluated_millions")

    def fig2_at(self, dataset: str, nz: int, algorithm: str, split: str, samples: float) -> float | None:
        """The paper's Figure 2 value at ``samples`` (log-x interpolation), None off its axes."""
        curve = self.fig2_curve(dataset, nz, algorithm, split)
        return _interpolate(np.log10(curve.training_samples_evaluated.to_numpy(dtype=float)),
                            curve.lower_bound_per_datapoint.to_numpy(dtype=float), math.log10(samples))

    def fig3_at(self, ntrain: int, algorithm: str, split: str, samples: float) -> float | None:
        """The paper's Figure 3 value at ``samples`` (linear interpolation), None off its axes."""
        curve = self.fig3_curve(ntrain, algorithm, split)
        return _interpolate(curve.training_samples_evaluated_millions.to_numpy(dtype=float),
                            curve.marginal_loglik.to_numpy(dtype=float), samples / 1e6)

    def right_edge_test(self, figure: str, *keys) -> float | None:
        node = self.axes.get("right_edge_test", {}).get(figure, {})
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, (int, float)) else None


def _interpolate(x: np.ndarray, y: np.ndarray, at: float) -> float | None:
    if x.size < 2 or not x.min() <= at <= x.max():
        return None
    order = np.argsort(x, kind="stable")
    return float(np.interp(at, x[order], y[order]))
