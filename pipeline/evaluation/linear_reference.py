"""The linear-Gaussian floor on Frey Face: the exact log-likelihood of factor analysis and of
probabilistic PCA at each Figure 2 latent size, and of independent pixels (no latent at all), on
the same data the Figure 2 models see (pixel / 256, the same 1,600 / 365 split).

Factor analysis is p(z) = N(0, I), p(x|z) = N(W z + mu, Psi) with Psi diagonal, so
p(x) = N(mu, W W^T + Psi) is exact; probabilistic PCA is the same with Psi = s^2 I (Tipping & Bishop
1999); independent pixels is Psi alone (W = 0), the maximum-likelihood diagonal Gaussian. Each is
the special case of the paper's Gaussian MLP decoder (Appendix C.2) with a linear mean and a
constant variance, fitted by maximum likelihood (scikit-learn's ``FactorAnalysis`` and ``PCA``,
whose ``score`` is the mean exact log-likelihood), so any nonlinear model of that latent size that
learned something should beat it; the model the AEVB bound is a bound *for* is at least this good
only if training found it. The values are per datapoint, in nats, comparable with the Figure 2
bounds. Writes ``runs/linear_reference.csv``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA, FactorAnalysis

from pipeline.data.prepared import PIXEL_SCALE, load_prepared
from pipeline.plumbing.files import write_atomically

COLUMNS = ["dataset", "model", "nz", "split", "log_likelihood", "points", "wall_seconds"]
MODELS = ("factor_analysis", "probabilistic_pca")
INDEPENDENT_PIXELS = "independent_pixels"


def independent_pixels_log_likelihood(x_train: np.ndarray, x: np.ndarray) -> float:
    """Mean log N(x; mu, diag(var)) with mu, var the training set's per-pixel maximum-likelihood
    mean and variance: the model that ignores its latents."""
    mean, variance = x_train.mean(axis=0), x_train.var(axis=0)
    return float((-0.5 * (np.log(2 * np.pi * variance) + (x - mean) ** 2 / variance)).sum(axis=1).mean())


def fit_linear_model(model: str, nz: int, x_train: np.ndarray, seed: int = 0):
    """Factor analysis or probabilistic PCA with ``nz`` latents, fitted to ``x_train`` by maximum
    likelihood (deterministic: factor analysis's randomized SVD is seeded, within 0.01 nat of LAPACK's
    on Frey Face at a third of its time; PCA's SVD is the full one)."""
    if model == "factor_analysis":
        return FactorAnalysis(n_components=nz, svd_method="randomized", random_state=seed).fit(x_train)
    if model == "probabilistic_pca":
        return PCA(n_components=nz, svd_solver="full").fit(x_train)
    raise ValueError(f"unknown linear-Gaussian model {model!r}: expected one of {MODELS}")


def linear_reference(prepared_dir: str | Path, latent_sizes: list[int], dataset: str = "frey_face",
                     out: Path | None = None) -> pd.DataFrame:
    """Exact train and test log-likelihoods per datapoint of independent pixels and of factor
    analysis and probabilistic PCA at each latent size; written to ``out`` (atomically) if given."""
    data = load_prepared(dataset, prepared_dir)
    x_train = data["train_x"].reshape(len(data["train_x"]), -1).astype(np.float64) / PIXEL_SCALE
    x_test = data["test_x"].reshape(len(data["test_x"]), -1).astype(np.float64) / PIXEL_SCALE
    splits = {"train": x_train, "test": x_test}
    rows = []
    start = time.perf_counter()
    for split, x in splits.items():
        rows.append({"dataset": dataset, "model": INDEPENDENT_PIXELS, "nz": 0, "split": split,
                     "log_likelihood": independent_pixels_log_likelihood(x_train, x), "points": len(x),
                     "wall_seconds": round(time.perf_counter() - start, 3)})
    for nz in latent_sizes:
        for model in MODELS:
            start = time.perf_counter()
            fitted = fit_linear_model(model, int(nz), x_train)
            seconds = time.perf_counter() - start
            for split, x in splits.items():
                rows.append({"dataset": dataset, "model": model, "nz": int(nz), "split": split,
                             "log_likelihood": float(fitted.score(x)), "points": len(x),
                             "wall_seconds": round(seconds, 3)})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if out is not None:
        write_atomically(Path(out), lambda tmp: frame.to_csv(tmp, index=False))
    return frame


__all__ = ["COLUMNS", "INDEPENDENT_PIXELS", "MODELS", "fit_linear_model", "independent_pixels_log_likelihood",
           "linear_reference"]
