"""Figures 2 and 3 over several seeds per configuration: each of our curves is the mean over seeds
with a shaded 95% band (pipeline.reporting.seed_statistics), on constructed tables; and find_run's choice of
the first seed's run directory."""
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from scipy import stats

from pipeline.runs import results as results_module
from pipeline.reporting.figures import FIGURE_BAND_CAPTIONS, figure_2, figure_3, seed_count_text
from pipeline.runs.results import find_run
from pipeline.reporting.reference import REFERENCE_DIR, Reference
from pipeline.runs.directory import MissingRunError
from pipeline.reporting.seed_statistics import summarize

from .conftest import REPO

SAMPLES = [10_000, 25_000, 63_000, 160_000, 400_000, 1_000_000]
CHECKPOINTS = [100_000 * k for k in range(1, 11)]
# Seed offsets chosen so that the mean is neither the first seed nor the median.
SEED_OFFSETS = {0: 0.0, 1: 3.0, 2: -7.5}
NORMAL_95 = stats.norm.ppf(0.975)


@pytest.fixture(scope="module")
def reference():
    return Reference.load(REPO / REFERENCE_DIR)


def seed_value(base: float, seed: int, k: int) -> float:
    """A per-seed value whose spread over seeds changes with the evaluation index ``k``."""
    return base + SEED_OFFSETS[seed] * (1.0 + 0.3 * k)


# Figure 2: MNIST Nz = 20 (AEVB with 3 seeds, wake-sleep with 1) and Frey Face Nz = 2 (3 seeds each).
FIG2_SEEDS = {("mnist", "aevb"): [0, 1, 2], ("mnist", "wake_sleep"): [0],
              ("frey_face", "aevb"): [0, 1, 2], ("frey_face", "wake_sleep"): [0, 1, 2]}


def make_curves() -> pd.DataFrame:
    rows = []
    for (dataset, algorithm), seeds in FIG2_SEEDS.items():
        nz = 20 if dataset == "mnist" else 2
        final = -100.0 if algorithm == "aevb" else -105.0
        for seed in seeds:
            for split, gap in (("train", 2.0), ("test", 0.0)):
                for k, s in enumerate(SAMPLES):
                    base = final + gap - 30.0 * (1 - k / (len(SAMPLES) - 1))
                    for metric, value in (("lower_bound", seed_value(base, seed, k)), ("reconstruction", 1e3)):
                        rows.append({"samples_seen": s, "wall_seconds": s / 1e4, "split": split, "metric": metric,
                                     "value": value, "run": f"{dataset}_nz{nz}_{algorithm}", "seed": seed,
                                     "experiment": "fig2", "dataset": dataset, "algorithm": algorithm, "nz": nz,
                                     "hidden_units": 500, "ntrain": 50_000 if dataset == "mnist" else 1600,
                                     "binarize": "dynamic"})
    return pd.DataFrame(rows)


# Figure 3: AEVB and MCEM with 3 seeds, wake-sleep with 1; MCEM's extra seeds evaluated on the test
# split only; an importance-sampling cross-check for seed 0 at some checkpoints (not drawn).
FIG3_SEEDS = {"aevb": [0, 1, 2], "wake_sleep": [0], "mcem": [0, 1, 2]}


def make_marginal_likelihoods() -> pd.DataFrame:
    rows = []
    for ntrain in (1000, 50_000):
        for algorithm, seeds in FIG3_SEEDS.items():
            final = {"aevb": -140.0, "wake_sleep": -145.0, "mcem": -150.0}[algorithm]
            for seed in seeds:
                for k, c in enumerate(CHECKPOINTS):
                    for split in ("train", "test"):
                        if algorithm == "mcem" and seed > 0 and split == "train":
                            continue
                        base = final + (5 if split == "train" else 0) - 10 * (1 - c / CHECKPOINTS[-1])
                        common = {"samples_seen": c, "split": split, "points": 1000, "wall_seconds": 1.0,
                                  "run": f"mnist_ntrain{ntrain}_{algorithm}", "seed": seed, "experiment": "fig3",
                                  "dataset": "mnist", "algorithm": algorithm, "nz": 3, "hidden_units": 100,
                                  "ntrain": ntrain}
                        rows.append({**common, "estimator": "appendix_d", "value": seed_value(base, seed, k),
                                     "standard_error": 0.2 + 0.1 * seed + 0.05 * k})
                        if seed == 0 and k % 3 == 0:
                            rows.append({**common, "estimator": "importance_sampling", "value": base + 50.0,
                                         "standard_error": np.nan})
    return pd.DataFrame(rows)


def panel_by_title(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def our_line(ax, label):
    lines = [line for line in ax.get_lines() if line.get_label() == label]
    assert len(lines) == 1, [line.get_label() for line in ax.get_lines()]
    return lines[0]


def bands(ax, label):
    return [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_label() == f"_band: {label}"]


def band_extent(band: PolyCollection, x: float) -> tuple[float, float]:
    """The band's (low, high) at ``x``: the fill_between polygon's vertices there."""
    vertices = np.concatenate([path.vertices for path in band.get_paths()])
    at = vertices[np.isclose(vertices[:, 0], x, rtol=1e-12, atol=0)]
    assert len(at) >= 2, f"the band has no vertices at x = {x}"
    return float(at[:, 1].min()), float(at[:, 1].max())


def the_legend(fig):
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + fig.legends
    assert len(legends) == 1
    return legends[0]


def legend_title(fig) -> str:
    return the_legend(fig).get_title().get_text()


def test_figure_2_draws_the_mean_over_seeds_with_a_t_interval_band(reference):
    curves = make_curves()
    fig = figure_2(curves, reference, [20], [2])
    bounds = curves[curves.metric == "lower_bound"]
    for title, dataset, nz in (("MNIST, $N_z = 20$", "mnist", 20), ("Frey Face, $N_z = 2$", "frey_face", 2)):
        ax = panel_by_title(fig, title)
        for algorithm, name in (("aevb", "AEVB"), ("wake_sleep", "Wake-Sleep")):
            for split in ("train", "test"):
                label = f"{name} ({split})"
                rows = bounds[(bounds.dataset == dataset) & (bounds.nz == nz) & (bounds.algorithm == algorithm)
                              & (bounds.split == split)]
                per_sample = rows.groupby("samples_seen").value
                line = our_line(ax, label)
                assert list(line.get_xdata()) == SAMPLES
                assert np.allclose(line.get_ydata(), per_sample.mean().loc[SAMPLES].to_numpy())
                seeds = FIG2_SEEDS[(dataset, algorithm)]
                if len(seeds) == 1:
                    assert bands(ax, label) == []  # one seed: no band
                    continue
                first = rows[rows.seed == 0].sort_values("samples_seen").value.to_numpy()
                assert not np.allclose(line.get_ydata(), first)  # the mean, not the first seed
                [band] = bands(ax, label)
                for s in SAMPLES:
                    values = rows[rows.samples_seen == s].value.to_numpy()
                    low, high = summarize(values).interval()
                    band_low, band_high = band_extent(band, s)
                    assert band_low == pytest.approx(low, abs=1e-6)
                    assert band_high == pytest.approx(high, abs=1e-6)
                    sd = values.std(ddof=1)  # not +-1 standard deviation
                    assert abs((band_high - band_low) - 2 * sd) > 1e-3
    title = legend_title(fig)
    assert "95% t interval over seeds" in title and "n = 1, 3" in title and "n = 1: no band" in title
    # the band stays out of the legend: the paper's entries follow ours as before
    assert [t.get_text() for t in the_legend(fig).get_texts()][:2] == ["AEVB (train)", "paper: AEVB (train)"]


def test_figure_2_legend_gives_one_seed_count_when_all_curves_share_it(reference):
    curves = make_curves()
    curves = curves[curves.dataset == "frey_face"]  # every Frey Face curve has 3 seeds
    fig = figure_2(curves, reference, [20], [2])
    title = legend_title(fig)
    assert "(n = 3)" in title and "n = 1" not in title


def test_figure_3_draws_the_mean_with_a_band_of_seed_spread_and_estimator_error(reference):
    ml = make_marginal_likelihoods()
    fig = figure_3(ml, reference, [1000, 50_000])
    appendix_d = ml[ml.estimator == "appendix_d"]
    for ax, ntrain in zip(fig.axes, (1000, 50_000)):
        assert ax.get_title() == f"MNIST, $N_{{train}} = {ntrain:,}$"
        assert len(ax.containers) == 0  # lines and bands, no error bars
        for algorithm, name in (("aevb", "AEVB"), ("wake_sleep", "Wake-Sleep"), ("mcem", "MCEM")):
            for split in ("train", "test"):
                label = f"{name} ({split})"
                rows = appendix_d[(appendix_d.ntrain == ntrain) & (appendix_d.algorithm == algorithm)
                                  & (appendix_d.split == split)]
                line = our_line(ax, label)
                assert np.allclose(line.get_xdata(), np.array(CHECKPOINTS) / 1e6)
                assert np.allclose(line.get_ydata(), rows.groupby("samples_seen").value.mean().loc[CHECKPOINTS])
                [band] = bands(ax, label)
                n_seeds = rows.seed.nunique()
                if n_seeds > 1:
                    first = rows[rows.seed == 0].sort_values("samples_seen").value.to_numpy()
                    assert not np.allclose(line.get_ydata(), first)
                for c in CHECKPOINTS:
                    at = rows[rows.samples_seen == c]
                    band_low, band_high = band_extent(band, c / 1e6)
                    if n_seeds == 1:  # the estimator's own +-1.96 standard errors
                        [value], [se] = at.value.to_numpy(), at.standard_error.to_numpy()
                        low, high = value - NORMAL_95 * se, value + NORMAL_95 * se
                    else:
                        low, high = summarize(at.value, at.standard_error).interval()
                        sd = at.value.std(ddof=1)
                        assert abs((band_high - band_low) - 2 * sd) > 1e-3  # not +-1 standard deviation
                    assert band_low == pytest.approx(low, abs=1e-6)
                    assert band_high == pytest.approx(high, abs=1e-6)
    # MCEM train is a single seed (the extra seeds were evaluated on the test split only)
    title = legend_title(fig)
    assert "n = 1, 3" in title and "±1.96" in title and "95% interval" in title


def test_band_captions_and_seed_count_text():
    assert set(FIGURE_BAND_CAPTIONS) == {"fig2", "fig3"}
    assert "95%" in FIGURE_BAND_CAPTIONS["fig2"] and "single seed" in FIGURE_BAND_CAPTIONS["fig2"]
    assert "standard error" in FIGURE_BAND_CAPTIONS["fig3"] and "1.96" in FIGURE_BAND_CAPTIONS["fig3"]
    assert seed_count_text([3, 3, 3], "no band") == "n = 3"
    assert seed_count_text([1, 1], "no band") == "n = 1; n = 1: no band"
    assert seed_count_text([3, 1, 3, 0], "no band") == "n = 1, 3 by curve; n = 1: no band"


def make_seed_dirs(root, configuration, seeds, with_config=True):
    for seed in seeds:
        run_dir = root / "fig2" / configuration / f"seed{seed}"
        (run_dir / "checkpoints").mkdir(parents=True)
        if with_config:
            (run_dir / "config.json").write_text(json.dumps({}))


def test_find_run_returns_the_first_seed_of_the_configuration(tmp_path):
    make_seed_dirs(tmp_path, "mnist_nz2_aevb", [3, 1])
    make_seed_dirs(tmp_path, "mnist_nz2_aevb", [0], with_config=False)  # not a run: no config.json
    make_seed_dirs(tmp_path, "mnist_nz5_aevb", [0])
    assert find_run(tmp_path, "fig2", "mnist", 2) == tmp_path / "fig2" / "mnist_nz2_aevb" / "seed1"
    assert find_run(tmp_path, "fig2", "mnist", 5, "aevb") == tmp_path / "fig2" / "mnist_nz5_aevb" / "seed0"


def test_find_run_orders_seeds_by_number(tmp_path):
    make_seed_dirs(tmp_path, "frey_face_nz2_aevb", [10, 2])
    assert find_run(tmp_path, "fig2", "frey_face", 2).name == "seed2"


def test_find_run_without_the_configuration_says_where_it_looked(tmp_path):
    make_seed_dirs(tmp_path, "mnist_nz20_aevb", [0], with_config=False)
    with pytest.raises(MissingRunError, match=r"mnist_nz20_aevb.*seed<N>"):
        find_run(tmp_path, "fig2", "mnist", 20)
    with pytest.raises(MissingRunError, match="no aevb run of mnist with Nz = 3"):
        find_run(tmp_path / "nowhere", "fig2", "mnist", 3)


def test_find_run_finds_a_configuration_named_otherwise_by_its_config(tmp_path, monkeypatch):
    make_seed_dirs(tmp_path, "mnist_nz2_h500_aevb", [4, 2])
    make_seed_dirs(tmp_path, "mnist_nz2_h500_wake_sleep", [0])
    stored = {"mnist_nz2_h500_aevb": ("mnist", 2, "aevb"), "mnist_nz2_h500_wake_sleep": ("mnist", 2, "wake_sleep")}

    def read_run_config(run_dir):
        dataset, nz, algorithm = stored[run_dir.parent.name]
        return SimpleNamespace(dataset=dataset, z_dim=nz, algorithm=algorithm)

    monkeypatch.setattr(results_module, "read_run_config", read_run_config)
    assert find_run(tmp_path, "fig2", "mnist", 2) == tmp_path / "fig2" / "mnist_nz2_h500_aevb" / "seed2"
    assert find_run(tmp_path, "fig2", "mnist", 2, "wake_sleep").parent.name == "mnist_nz2_h500_wake_sleep"
