"""Figures, claim verdicts, metrics and the report, on constructed data (the smoke-profile
integration test checks them on real runs)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.reporting.claims import FAIL, NO_DATA, PASS, evaluate_claims
from pipeline.reporting.figures import figure_2, figure_3, figure_4, figure_5, manifold_grid, tile_images
from pipeline.reporting.metrics import build_metrics
from pipeline.reporting.reference import REFERENCE_DIR, Reference
from pipeline.reporting.render import Block, markdown_links, render_html, render_markdown
from vae_core import ModelConfig, VariationalAutoEncoder

from .conftest import REPO

SETTINGS = {"better_bound_margin": 0.0, "faster_fraction": 0.5, "overfitting_tolerance": 1.0,
            "mcem_throughput_fraction": 0.5}
SAMPLES = [10_000, 25_000, 63_000, 160_000, 400_000, 1_000_000]
MNIST_NZ, FREY_NZ = [3, 5, 10, 20, 200], [2, 5, 10, 20]


@pytest.fixture(scope="module")
def reference():
    return Reference.load(REPO / REFERENCE_DIR)


def bound_curve(final: float, samples=SAMPLES, rate: float = 1.0):
    """A rising curve that ends at ``final``; larger ``rate`` = faster convergence."""
    span = math.log10(samples[-1] / samples[0])
    return [final - 40 * (1 - math.log10(s / samples[0]) / span) ** (1 + rate) for s in samples]


def make_curves(aevb_final=-100.0, ws_final=-105.0, gap=2.0, gap_largest=2.0, aevb_rate=2.0, ws_rate=0.0):
    rows = []
    for dataset, nzs in (("mnist", MNIST_NZ), ("frey_face", FREY_NZ)):
        for nz in nzs:
            for algorithm, final, rate in (("aevb", aevb_final, aevb_rate), ("wake_sleep", ws_final, ws_rate)):
                this_gap = gap_largest if (nz == nzs[-1] and algorithm == "aevb") else gap
                for split, offset in (("train", this_gap), ("test", 0.0)):
                    for s, v in zip(SAMPLES, bound_curve(final + offset, rate=rate)):
                        rows.append({"samples_seen": s, "wall_seconds": s / 1e4, "split": split, "metric": "lower_bound",
                                     "value": v, "run": f"{dataset}_nz{nz}_{algorithm}", "experiment": "fig2",
                                     "dataset": dataset, "algorithm": algorithm, "nz": nz, "hidden_units": 500,
                                     "ntrain": 50_000 if dataset == "mnist" else 1600})
    return pd.DataFrame(rows)


def make_marginal_likelihoods(aevb=-140.0, ws=-145.0, mcem=-150.0):
    rows = []
    checkpoints = [100_000 * k for k in range(1, 11)]
    for ntrain in (1000, 50_000):
        for algorithm, final in (("aevb", aevb), ("wake_sleep", ws), ("mcem", mcem)):
            for c in checkpoints:
                for split in ("train", "test"):
                    value = final + (5 if split == "train" else 0) - 10 * (1 - c / checkpoints[-1])
                    rows.append({"samples_seen": c, "split": split, "estimator": "appendix_d", "value": value,
                                 "standard_error": 0.1, "points": 1000, "wall_seconds": 1.0,
                                 "run": f"mnist_ntrain{ntrain}_{algorithm}", "experiment": "fig3",
                                 "dataset": "mnist", "algorithm": algorithm, "nz": 3, "hidden_units": 100,
                                 "ntrain": ntrain})
    return pd.DataFrame(rows)


def make_finals(mcem_speed=2_000.0):
    rows = []
    for ntrain in (1000, 50_000):
        for algorithm, speed in (("aevb", 40_000.0), ("wake_sleep", 20_000.0), ("mcem", mcem_speed)):
            rows.append({"run": f"mnist_ntrain{ntrain}_{algorithm}", "experiment": "fig3", "dataset": "mnist",
                         "algorithm": algorithm, "nz": 3, "hidden_units": 100,
                         "ntrain": ntrain, "samples_seen": 1_000_000,
                         "training_samples_per_second": speed, "trial_seconds": 1.0, "train_seconds": 10.0,
                         "eval_seconds": 1.0, "step_size": 0.02, "device": "cpu"})
    return pd.DataFrame(rows)


def make_variance(b_over_a=0.5):
    rows = []
    for dataset, nzs in (("mnist", MNIST_NZ), ("frey_face", FREY_NZ)):
        for nz in nzs:
            for estimator, scale in (("A", 1.0), ("B", b_over_a)):
                rows.append({"run": f"{dataset}_nz{nz}_aevb", "dataset": dataset, "nz": nz, "estimator": estimator,
                             "gradient_variance": 100.0 * scale, "value_variance": 10.0 * scale, "wall_seconds": 0.1})
    return pd.DataFrame(rows)


def verdicts(**changes):
    data = {"curves": make_curves(), "ml": make_marginal_likelihoods(), "finals": make_finals(),
            "variance": make_variance()}
    data.update(changes)
    claims = evaluate_claims(data["curves"], data["ml"], data["finals"], data["variance"], SETTINGS)
    return {claim.key: claim.verdict for claim in claims}


def test_every_claim_passes_on_data_that_supports_it():
    assert set(verdicts().values()) == {PASS}


@pytest.mark.parametrize("changes, claim", [
    ({"curves": make_curves(aevb_final=-106.0)}, "aevb_better_bound"),
    ({"curves": make_curves(aevb_rate=0.0, ws_rate=2.0, ws_final=-100.5)}, "aevb_converges_faster"),
    ({"curves": make_curves(gap_largest=5.0)}, "no_overfitting_with_more_latents"),
    ({"ml": make_marginal_likelihoods(aevb=-146.0)}, "aevb_fastest_marginal_likelihood"),
    ({"finals": make_finals(mcem_speed=30_000.0)}, "mcem_impractical_on_full_set"),
    ({"ml": make_marginal_likelihoods(mcem=-139.0, aevb=-140.0, ws=-145.0)}, "mcem_impractical_on_full_set"),
    ({"variance": make_variance(b_over_a=1.2)}, "estimator_b_lower_variance"),
])
def test_a_claim_verdict_flips_when_its_data_says_otherwise(changes, claim):
    result = verdicts(**changes)
    assert result[claim] == FAIL, result


def test_a_claim_without_data_says_so():
    assert verdicts(variance=None)["estimator_b_lower_variance"] == NO_DATA


def test_metrics_are_flat_with_stable_keys():
    curves, ml, finals, variance = make_curves(), make_marginal_likelihoods(), make_finals(), make_variance()
    claims = evaluate_claims(curves, ml, finals, variance, SETTINGS)
    metrics = build_metrics(curves, ml, finals, variance, claims)
    assert metrics["fig2/mnist/nz20/aevb/test_lb"] == pytest.approx(-100.0)
    assert metrics["fig2/frey_face/nz2/wake_sleep/train_lb"] == pytest.approx(-103.0)
    assert metrics["fig3/ntrain50000/mcem/test_ml"] == pytest.approx(-150.0)
    assert metrics["fig3/ntrain1000/aevb/test_ml_se"] == pytest.approx(0.1)
    assert metrics["speed/fig3/mnist_ntrain1000_mcem/samples_per_second"] == 2_000.0
    assert metrics["estimator_variance/mnist/nz3/b_gradient_variance"] == 50.0
    assert metrics["claims/aevb_better_bound"] == 1
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values())
    assert list(metrics) == sorted(metrics)


def test_figure_2_has_one_panel_per_configuration_with_the_papers_legend(reference):
    fig = figure_2(make_curves(), reference, MNIST_NZ, FREY_NZ)
    panels = [ax for ax in fig.axes if ax.axison]  # the spare slot holds the legend
    titles = [ax.get_title() for ax in panels]
    assert titles == [f"MNIST, $N_z = {nz}$" for nz in MNIST_NZ] + [f"Frey Face, $N_z = {nz}$" for nz in FREY_NZ]
    legend = [ax for ax in fig.axes if not ax.axison][0].get_legend()
    assert [t.get_text() for t in legend.get_texts()][:2] == ["AEVB (train)", "paper: AEVB (train)"]
    for ax in panels:
        labels = [line.get_label() for line in ax.get_lines()]
        assert {"AEVB (train)", "AEVB (test)", "Wake-Sleep (train)", "Wake-Sleep (test)"} <= set(labels)
        assert ax.get_xscale() == "log"
        ours = next(line for line in ax.get_lines() if line.get_label() == "AEVB (test)")
        assert list(ours.get_xdata()) == SAMPLES
    mnist20 = panels[3]
    paper = next(line for line in mnist20.get_lines() if line.get_label() == "paper: AEVB (test)")
    assert len(paper.get_xdata()) > 10  # the paper's curve is drawn from reports/reference
    low, high = mnist20.get_ylim()
    assert low <= -150 and high >= -95  # at least the printed range


def test_figure_3_has_the_two_training_set_sizes_with_bands(reference):
    fig = figure_3(make_marginal_likelihoods(), reference, [1000, 50_000])
    assert [ax.get_title() for ax in fig.axes] == ["MNIST, $N_{train} = 1,000$", "MNIST, $N_{train} = 50,000$"]
    ours = {f"{a} ({s})" for a in ("AEVB", "Wake-Sleep", "MCEM") for s in ("train", "test")}
    for ax in fig.axes:
        assert {line.get_label() for line in ax.get_lines()} >= ours  # 3 algorithms x (train, test)
        assert len(ax.collections) == 6  # each with its band (the estimator's interval: one seed here)
        assert ax.get_xlim()[1] == pytest.approx(1.05)  # our budget in millions


def test_manifold_grid_is_the_inverse_gaussian_cdf_of_cell_centres():
    grid = manifold_grid(4)
    centres = torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(4, dtype=torch.float64) + 0.5) / 4)
    assert grid.shape == (16, 2)
    assert torch.allclose(grid[:4, 0], centres)  # first image row: z_1 left to right
    assert torch.allclose(grid[::4, 1], centres.flip(0))  # z_2 from top (high) to bottom


def test_tile_images_places_images_row_major():
    images = np.arange(6)[:, None].repeat(4, 1).astype(float)  # 6 images of 2 x 2, image k all k
    mosaic = tile_images(images, 2, 3, (2, 2))
    assert mosaic.shape == (4, 6)
    assert mosaic[0, 0] == 0 and mosaic[0, 2] == 1 and mosaic[2, 0] == 3 and mosaic[3, 5] == 5


def test_figures_4_and_5_show_decoder_means_in_the_papers_layout():
    torch.manual_seed(0)
    frey = VariationalAutoEncoder(ModelConfig(560, 2, 8, "gaussian")).double()
    mnist = {nz: VariationalAutoEncoder(ModelConfig(784, nz, 8, "bernoulli")).double() for nz in (2, 5, 10, 20)}
    fig4 = figure_4({"frey_face": frey, "mnist": mnist[2]}, {"frey_face": 10, "mnist": 20})
    assert [ax.images[0].get_array().shape for ax in fig4.axes] == [(280, 200), (560, 560)]
    expected = mnist[2].decoder.mean(manifold_grid(20)[:1]).detach().numpy().reshape(28, 28)
    assert np.allclose(fig4.axes[1].images[0].get_array()[:28, :28], expected)
    fig5 = figure_5(mnist, per_side=10, seed=3)
    assert [ax.get_title() for ax in fig5.axes] == [f"{nz}-D latent space" for nz in (2, 5, 10, 20)]
    assert all(ax.images[0].get_array().shape == (280, 280) for ax in fig5.axes)


def test_paper_values_are_read_at_the_same_samples_and_never_extrapolated(reference):
    # docs/protocol.md, section 9: MNIST Nz = 20 AEVB test reaches -99.4 at the right edge; -124.2 at 10^6
    assert reference.fig2_at("mnist", 20, "aevb", "test", 1e6) == pytest.approx(-124.2, abs=0.3)
    assert reference.fig2_at("mnist", 3, "aevb", "test", 1e6) is None  # below the printed axes there
    assert reference.fig2_at("mnist", 20, "aevb", "test", 1e9) is None  # beyond the paper's budget
    assert reference.fig3_at(1000, "aevb", "test", 40e6) == pytest.approx(-143.2, abs=0.3)


def test_report_renders_tables_figures_and_links(tmp_path):
    (tmp_path / "figures").mkdir()
    png = tmp_path / "figures" / "fig2.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "figures" / "fig2.svg").write_text("<svg/>")
    blocks = [Block("h1", "title"), Block("p", "see [metrics](metrics.json) and `code`"),
              Block("table", pd.DataFrame({"a": [1.23456, None], "b": ["x|y", "z"]})),
              Block("figure", ["figures/fig2.png", "figures/fig2.svg"], "Figure 2")]
    text = render_markdown(blocks)
    assert "| a | b |" in text and "| 1.23 | x\\|y |" in text and "| – | z |" in text
    assert set(markdown_links(text)) == {"metrics.json", "figures/fig2.png", "figures/fig2.svg"}
    page = render_html(blocks, tmp_path, "t")
    assert "data:image/png;base64," in page and '<a href="metrics.json">metrics</a>' in page
    assert "<code>code</code>" in page and "<td>x|y</td>" in page


def marginal_likelihood_rows(bias: float, standard_error: float) -> pd.DataFrame:
    """Figure 3's final rows for one configuration: the grid on seed 1, Appendix D on seeds 1-3,
    Appendix D on seed 1 ``bias`` above the grid."""
    rows = [{"run": "mnist_ntrain1000_aevb", "algorithm": "aevb", "ntrain": 1000, "samples_seen": 1_000_000,
             "split": "test", "estimator": "grid", "value": -140.0, "standard_error": 0.0, "seed": 1}]
    for seed, offset in ((1, 0.0), (2, 3.0), (3, -3.0)):
        rows.append({"run": "mnist_ntrain1000_aevb", "algorithm": "aevb", "ntrain": 1000, "samples_seen": 1_000_000,
                     "split": "test", "estimator": "appendix_d", "value": -140.0 + bias + offset,
                     "standard_error": standard_error, "seed": seed})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("bias, standard_error, covered", [(0.12, 0.01, False), (0.012, 0.01, True),
                                                            (-0.05, 0.01, False)])
def test_appendix_d_bias_is_measured_on_the_grids_seed_and_set_beside_its_standard_error(
        reference, bias, standard_error, covered):
    from pipeline.reporting.fidelity_tables import appendix_d_bias_sentence
    from pipeline.reporting.report import fig3_table

    table = fig3_table(marginal_likelihood_rows(bias, standard_error), reference)
    row = table.iloc[0]
    assert row["test App. D - grid"] == pytest.approx(bias)  # seed 1 only: seeds 2 and 3 have no grid
    assert row["test App. D s.e."] == pytest.approx(standard_error)
    assert "train App. D - grid" not in table or pd.isna(row.get("train App. D - grid"))
    sentence = appendix_d_bias_sentence(table)
    assert ("covers it" in sentence) == covered
    assert ("does not cover its bias on 1 of 1 rows" in sentence) == (not covered)


def test_appendix_d_bias_sentence_says_when_no_grid_ran(reference):
    from pipeline.reporting.fidelity_tables import appendix_d_bias_sentence
    from pipeline.reporting.report import fig3_table

    rows = marginal_likelihood_rows(0.1, 0.01)
    table = fig3_table(rows[rows.estimator != "grid"], reference)
    assert "test App. D - grid" not in table
    assert "not measured" in appendix_d_bias_sentence(table)


def test_plot_tables_of_a_partial_set_without_figure_3(tmp_path):
    """A paper-budget campaign's first runs are Figure 2's: no marginal likelihoods yet (this once
    stopped the partial report)."""
    from pipeline.reporting.report import PLOTS_DIR, write_plot_tables

    curves = make_curves()
    write_plot_tables(curves, pd.DataFrame(), tmp_path)
    assert pd.read_csv(tmp_path / PLOTS_DIR / "fig3.csv").columns.tolist() == ["samples_seen"]
    assert len(pd.read_csv(tmp_path / PLOTS_DIR / "fig2_mnist.csv")) == len(SAMPLES)
