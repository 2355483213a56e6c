"""The ``figures`` stage: the paper's Figures 2-5, drawn from the run directories
(docs/protocol.md, section 4 and "Figure axes, as printed").

Each ``figure_N`` function returns a matplotlib Figure built only from measured data (the runs'
``curve.csv``, ``marginal_likelihood.csv`` and final checkpoints) and, where the paper printed
curves, the paper's own curves from ``reports/reference/`` drawn thin in the same colour, so a
panel can be read against the paper's directly. Choices:

- **Seeds**: a configuration may be trained with several seeds (the tables' ``seed`` column). Each
  of our curves is the mean over its seeds at each evaluation, with a shaded band
  (:data:`FIGURE_BAND_CAPTIONS`; :mod:`pipeline.reporting.seed_statistics`); the legend title names the band
  and the number of seeds behind it. Figures 4 and 5 use the first (lowest-numbered) seed's model.
- **Figure 2** (lower bound vs training samples evaluated, log x): one panel per configuration,
  MNIST Nz = 3, 5, 10, 20, 200 on the top row and Frey Face Nz = 2, 5, 10, 20 below, the paper's
  legend. The band is the 95% Student-t interval of the mean over seeds (none with one seed). The
  axes are the paper's printed ranges, widened to include every mean of ours (our budgets are
  smaller than the paper's 10^8, so our curves end further left).
- **Figure 3** (marginal likelihood vs samples evaluated in millions, linear x): Ntrain = 1,000 and
  50,000, the mean over seeds of the Appendix D estimate, with a 95% band that combines the spread
  over seeds and the estimator's own standard error (averaged over the evaluated datapoints); with
  one seed it is the estimator's +-1.96 standard errors. The x-axis spans our budget, not the
  paper's 60 million (on a linear axis our curves would otherwise collapse onto the left edge);
  the paper's curves are drawn over the same span.
- **Figure 4** (learned 2-D manifolds, AEVB Nz = 2): cell centres z = Phi^-1((i + 0.5) / n) (the
  inverse Gaussian CDF of a linear grid on the unit square; n = 10 for Frey Face, 20 for MNIST),
  each cell the decoder mean; z_1 runs left to right, z_2 bottom to top.
- **Figure 5** (random samples, MNIST Nz = 2, 5, 10, 20): 10 x 10 decoder means at z ~ N(0, I)
  drawn with a fixed seed, dark digits on white as printed.
"""
from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from pipeline.plumbing.files import staged_folder, write_json  # noqa: E402
from pipeline.plumbing.params import lookup  # noqa: E402
from pipeline.reporting.reference import REFERENCE_DIR, Reference  # noqa: E402
from pipeline.runs.config import dataset_spec  # noqa: E402
from pipeline.runs.directory import MissingRunError  # noqa: E402
from pipeline.runs.results import find_run, load_curves, load_final_model, load_marginal_likelihoods  # noqa: E402
from pipeline.reporting.seed_statistics import summarize_frame  # noqa: E402

FIGURES_INDEX = "figures.json"

ALGORITHM_LABELS = {"aevb": "AEVB", "wake_sleep": "Wake-Sleep", "mcem": "MCEM"}
_PALETTE = sns.color_palette("deep")
ALGORITHM_COLOURS = {"aevb": _PALETTE[3], "wake_sleep": _PALETTE[0], "mcem": _PALETTE[2]}
SPLIT_STYLES = {"train": "--", "test": "-"}
DATASET_TITLES = {"mnist": "MNIST", "frey_face": "Frey Face"}

# What the shaded band around each of our curves is (the report quotes these).
FIGURE_BAND_CAPTIONS = {
    "fig2": "Shaded: the 95% Student-t interval of the mean lower bound over seeds (no band for a "
            "configuration with a single seed).",
    "fig3": "Shaded: the 95% interval of the mean Appendix D estimate over seeds, combining the spread "
            "over seeds (Student-t) with the estimator's own standard error (for a single seed, the "
            "estimator's +-1.96 standard errors).",
}
BAND_ALPHA = 0.2


def seed_curve(rows: pd.DataFrame, standard_error: str | None = None) -> pd.DataFrame:
    """One curve of ours from the rows of all its seeds: per ``samples_seen`` the mean over seeds
    and the interval of :func:`pipeline.reporting.seed_statistics.summarize_frame` (``low``, ``high``), with
    ``n_seeds``; sorted by samples_seen."""
    return summarize_frame(rows, ["samples_seen"], standard_error=standard_error).sort_values("samples_seen")


def seed_count(rows: pd.DataFrame) -> int:
    """How many seeds a curve's rows come from (1 for a table without a ``seed`` column)."""
    if rows.empty:
        return 0
    if "seed" in rows.columns:
        return int(rows["seed"].nunique())
    return int(rows.groupby("samples_seen").size().max())


def seed_count_text(counts, single: str) -> str:
    """"n = 3", or "n = 1, 3" when the drawn curves differ, with what one seed shows (``single``)."""
    counts = sorted({int(n) for n in counts if n > 0})
    if not counts:
        return "no runs"
    text = "n = " + (str(counts[0]) if len(counts) == 1 else ", ".join(map(str, counts)) + " by curve")
    return text + (f"; n = 1: {single}" if counts[0] == 1 else "")


def _band_label(label: str) -> str:
    """The band's artist label: names its curve, and the leading underscore keeps it out of legends."""
    return f"_band: {label}"


def legend_label(algorithm: str, split: str) -> str:
    """The paper's legend entries: "AEVB (train)", "Wake-Sleep (test)", ..."""
    return f"{ALGORITHM_LABELS[algorithm]} ({split})"


def _widened(printed: tuple[float, float], values: np.ndarray, log: bool = False) -> tuple[float, float]:
    """The printed axis range, widened to hold ``values`` (with a small margin)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return printed
    low, high = min(printed[0], values.min()), max(printed[1], values.max())
    if log:
        return low / 1.2, high * 1.2
    margin = 0.03 * (high - low)
    return (low - margin if low < printed[0] else low), (high + margin if high > printed[1] else high)


def figure_2(curves: pd.DataFrame, reference: Reference, mnist_nz: list[int], frey_nz: list[int]) -> plt.Figure:
    """Figure 2: average lower bound per datapoint vs training samples evaluated (docs/protocol.md, section 4)."""
    bounds = curves[curves.metric == "lower_bound"]
    columns = max(len(mnist_nz), len(frey_nz))
    fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 6.4), squeeze=False)
    counts = []  # seeds behind each of our curves
    for row, (dataset, nzs) in enumerate((("mnist", mnist_nz), ("frey_face", frey_nz))):
        printed = reference.axes["fig2"][dataset]
        for col in range(columns):
            ax = axes[row][col]
            if col >= len(nzs):
                ax.axis("off")  # an empty slot holds the legend
                continue
            nz = nzs[col]
            panel = bounds[(bounds.dataset == dataset) & (bounds.nz == nz)]
            means = []
            for algorithm in ("aevb", "wake_sleep"):
                for split in ("train", "test"):
                    rows = panel[(panel.algorithm == algorithm) & (panel.split == split)]
                    ours = seed_curve(rows)
                    counts.append(seed_count(rows))
                    means.append(ours)
                    colour = ALGORITHM_COLOURS[algorithm]
                    label = legend_label(algorithm, split)
                    ax.plot(ours.samples_seen, ours["mean"], SPLIT_STYLES[split], color=colour, lw=1.6, label=label)
                    if (ours.n_seeds > 1).any():  # one seed: no spread to show
                        ax.fill_between(ours.samples_seen, ours.low, ours.high, color=colour, alpha=BAND_ALPHA,
                                        lw=0, label=_band_label(label))
                    paper = reference.fig2_curve(dataset, nz, algorithm, split)
                    ax.plot(paper.training_samples_evaluated, paper.lower_bound_per_datapoint,
                            SPLIT_STYLES[split], color=colour, lw=0.8, alpha=0.45,
                            label=f"paper: {legend_label(algorithm, split)}")
            if panel.empty:  # a partial set of runs (docs/paper-budget.md): said, not drawn
                ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", va="center", color="0.4")
            means = pd.concat(means)
            # the lower edge ignores the first evaluations (far below the printed range early on)
            late = means[means.samples_seen >= means.samples_seen.max() / 10]["mean"].to_numpy(dtype=float)
            ax.set_xscale("log")
            ax.set_xlim(*_widened(tuple(printed["xlim"]), panel.samples_seen.to_numpy(dtype=float), log=True))
            ax.set_ylim(*_widened(tuple(printed["ylim"]), late))
            ax.set_title(f"{DATASET_TITLES[dataset]}, $N_z = {nz}$")
            ax.set_xlabel("# Training samples evaluated")
            if col == 0:
                ax.set_ylabel(r"$\mathcal{L}$")
            ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    spare = [ax for row in axes for ax in row if not ax.axison]
    target = spare[0] if spare else fig
    target.legend(handles, labels, loc="center", fontsize=8, frameon=False,
                  title=f"thick: this run, mean over seeds\nband: 95% t interval over seeds\n"
                        f"({seed_count_text(counts, 'no band')})\nthin: the paper (Figure 2)")
    fig.suptitle("Figure 2: AEVB vs wake-sleep, lower bound per datapoint")
    fig.tight_layout()
    return fig


# How Figure 3 names each estimator of marginal_likelihood.csv.
ESTIMATOR_NAMES = {"appendix_d": "Appendix D", "importance_sampling": "importance sampling", "grid": "grid"}


def figure_3(marginal_likelihoods: pd.DataFrame, reference: Reference, ntrains: list[int],
             estimator: str = "appendix_d") -> plt.Figure:
    """Figure 3: estimated marginal likelihood vs training samples evaluated (millions)."""
    frame = marginal_likelihoods[marginal_likelihoods.estimator == estimator]
    fig, axes = plt.subplots(1, len(ntrains), figsize=(5.2 * len(ntrains), 4.2), squeeze=False)
    counts = []  # seeds behind each of our curves
    for col, ntrain in enumerate(ntrains):
        ax = axes[0][col]
        key = f"ntrain{ntrain}"
        printed = reference.axes["fig3"][key]
        panel = frame[frame.ntrain == ntrain]
        span = panel.samples_seen.max() / 1e6 if len(panel) else printed["xlim"][1]
        means = []
        for algorithm in ("wake_sleep", "mcem", "aevb"):
            colour = ALGORITHM_COLOURS[algorithm]
            for split in ("train", "test"):
                rows = panel[(panel.algorithm == algorithm) & (panel.split == split)]
                ours = seed_curve(rows, standard_error="standard_error")
                counts.append(seed_count(rows))
                means.append(ours)
                label = legend_label(algorithm, split)
                ax.plot(ours.samples_seen / 1e6, ours["mean"], SPLIT_STYLES[split], color=colour, lw=1.6, label=label)
                if ((ours.high - ours.low) > 0).any():  # none when no seed spread and no estimator error
                    ax.fill_between(ours.samples_seen / 1e6, ours.low, ours.high, color=colour, alpha=BAND_ALPHA,
                                    lw=0, label=_band_label(label))
                paper = reference.fig3_curve(ntrain, algorithm, split)
                paper = paper[paper.training_samples_evaluated_millions <= span * 1.05]
                ax.plot(paper.training_samples_evaluated_millions, paper.marginal_loglik, SPLIT_STYLES[split],
                        color=colour, lw=0.8, alpha=0.45, label=f"paper: {legend_label(algorithm, split)}")
        missing = [ALGORITHM_LABELS[a] for a in ("aevb", "wake_sleep", "mcem") if a not in set(panel.algorithm)]
        if missing:  # a partial set of runs: say which algorithms did not run
            ax.text(0.98, 0.02, "not run: " + ", ".join(missing), transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=8, color="0.4")
        ax.set_xlim(0, span * 1.05)
        ax.set_ylim(*_widened(tuple(printed["ylim"]), pd.concat(means)["mean"].to_numpy(dtype=float)))
        ax.set_title(f"MNIST, $N_{{train}} = {ntrain:,}$")
        ax.set_xlabel("# Training samples evaluated (millions)")
        if col == 0:
            ax.set_ylabel("Marginal log-likelihood")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
               title=f"thick: this run ({ESTIMATOR_NAMES[estimator]}), mean over seeds\n"
                     f"band: 95% interval, seed spread (t) and estimator s.e.\n"
                     f"({seed_count_text(counts, '±1.96 estimator s.e.')})\nthin: the paper (Figure 3)")
    fig.suptitle(f"Figure 3: marginal likelihood ({ESTIMATOR_NAMES[estimator]}), MNIST, $N_z = 3$")
    fig.tight_layout()
    return fig


def manifold_grid(n: int) -> torch.Tensor:
    """The (n * n, 2) latent points of Figure 4: z = Phi^-1((i + 0.5) / n) per axis, rows of the
    image from top (high z_2) to bottom, columns left to right (z_1)."""
    centres = torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    z2, z1 = torch.meshgrid(centres.flip(0), centres, indexing="ij")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=-1)


def tile_images(images: np.ndarray, rows: int, cols: int, shape: tuple[int, int]) -> np.ndarray:
    """(rows * cols, H * W) images -> one (rows * H, cols * W) mosaic, row-major."""
    height, width = shape
    return images.reshape(rows, cols, height, width).transpose(0, 2, 1, 3).reshape(rows * height, cols * width)


@torch.no_grad()
def decoder_means(model, z: torch.Tensor) -> np.ndarray:
    parameter = next(model.parameters())
    return model.decoder.mean(z.to(device=parameter.device, dtype=parameter.dtype)).cpu().double().numpy()


def figure_4(models: dict[str, object], cells: dict[str, int]) -> plt.Figure:
    """Figure 4: learned 2-D manifolds (AEVB, Nz = 2); ``models`` maps dataset -> model."""
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 5.8), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], models.items()):
        n = cells[dataset]
        images = decoder_means(model, manifold_grid(n))
        shape = dataset_spec(dataset).image_shape
        ax.imshow(tile_images(images, n, n, shape), cmap="gray" if dataset == "frey_face" else "gray_r",
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"({'a' if ax is axes[0][0] else 'b'}) Learned {DATASET_TITLES[dataset]} manifold")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(r"$z_1$: $\Phi^{-1}$ of a linear grid $\rightarrow$")
        ax.set_ylabel(r"$z_2$ $\rightarrow$")
    fig.suptitle("Figure 4: learned 2-D manifolds (AEVB, $N_z = 2$), decoder means")
    fig.tight_layout()
    return fig


def figure_5(models: dict[int, object], per_side: int, seed: int) -> plt.Figure:
    """Figure 5: random samples (decoder means at z ~ N(0, I)) from MNIST models; ``models`` maps
    Nz -> model. One generator seeded with ``seed`` per panel, so a panel does not depend on the
    others."""
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 4.0), squeeze=False)
    shape = dataset_spec("mnist").image_shape
    for ax, (nz, model) in zip(axes[0], sorted(models.items())):
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(per_side * per_side, nz, generator=generator, dtype=torch.float64)
        ax.imshow(tile_images(decoder_means(model, z), per_side, per_side, shape), cmap="gray_r", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(f"{nz}-D latent space")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Figure 5: random samples from AEVB models of MNIST (decoder means)")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, directory: Path, name: str, dpi: int = 110) -> list[Path]:
    """Write ``name``.png and ``name``.svg; no timestamps, so equal figures give equal files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    with plt.rc_context({"svg.hashsalt": "vaebench"}):
        for suffix, metadata in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
            path = directory / f"{name}.{suffix}"
            temporary = path.with_name(path.name + ".tmp")
            fig.savefig(temporary, format=suffix, dpi=dpi, bbox_inches="tight", metadata=metadata)
            temporary.replace(path)
            paths.append(path)
    plt.close(fig)
    return paths




def make_figures(runs_root: Path, out: Path, params: dict, reference_dir: Path = REFERENCE_DIR,
                 partial: bool = False) -> dict:
    """Draw Figures 2-5 into ``out`` (PNG and SVG) and index them in ``figures.json``.

    Every input is read first, and the figures are drawn into a staging folder and published
    together once all are drawn (:func:`pipeline.plumbing.files.staged_folder`, figures.json last): a run
    that fails midway (a missing Figure 4 run, say) leaves the previous figures as they were.

    ``partial`` (a partial set of runs, docs/paper-budget.md): a figure whose runs are all
    missing is not drawn (``figures.json`` lists it under ``not_drawn`` with the reason), a panel
    without runs says "not run"; unfinished runs are left out (:mod:`pipeline.runs.results`)."""
    start = time.perf_counter()
    experiments = lookup(params, "experiments")
    fig4 = experiments["fig4"]
    reference = Reference.load(reference_dir)
    curves = load_curves(runs_root, "fig2", missing_ok=partial)
    ml = load_marginal_likelihoods(runs_root, "fig3", missing_ok=partial)
    not_drawn = {}

    def final_model(dataset: str, nz: int):
        try:
            return load_final_model(find_run(runs_root, "fig2", dataset, nz))
        except MissingRunError:
            if not partial:
                raise
            return None

    manifold_models = {dataset: final_model(dataset, fig4[dataset]["nz"]) for dataset in ("frey_face", "mnist")}
    cells = {dataset: int(fig4[dataset]["manifold_cells"]) for dataset in manifold_models}
    sample_models = {nz: final_model("mnist", nz) for nz in fig4["samples_nz"]}
    drawings = {
        "fig2": lambda: figure_2(curves, reference, experiments["fig2"]["mnist"]["nz"],
                                 experiments["fig2"]["frey_face"]["nz"]),
        "fig3": lambda: figure_3(ml, reference, experiments["fig3"]["ntrain"]),
        "fig4": lambda: figure_4(manifold_models, cells),
        "fig5": lambda: figure_5(sample_models, int(fig4["samples_per_side"]), int(fig4["seed"])),
    }
    if partial:
        reasons = {"fig2": "no Figure 2 run finished" if curves.empty else None,
                   "fig3": "no Figure 3 marginal likelihoods" if ml.empty else None,
                   "fig4": "a manifold run (AEVB, Nz = 2) did not run"
                   if any(m is None for m in manifold_models.values()) else None,
                   "fig5": "a sample run (AEVB, Nz = " + ", ".join(str(n) for n, m in sample_models.items() if m is None)
                           + ") did not run" if any(m is None for m in sample_models.values()) else None}
        not_drawn = {name: reason for name, reason in reasons.items() if reason}
        drawings = {name: draw for name, draw in drawings.items() if name not in not_drawn}
    with staged_folder(out, last=FIGURES_INDEX) as staging:
        files = {name: save_figure(draw(), staging, name) for name, draw in drawings.items()}
        index = {"figures": {name: [p.name for p in paths] for name, paths in files.items()},
                 "band_captions": FIGURE_BAND_CAPTIONS,  # quoted by the report under each figure
                 "wall_seconds": round(time.perf_counter() - start, 1)}
        if partial:
            index["not_drawn"] = not_drawn
        write_json(staging / FIGURES_INDEX, index)
    return index
