"""``vaebench figures`` and ``vaebench report`` (the DVC stages ``figures`` and ``report``).

matplotlib and seaborn are imported inside the commands: every other ``vaebench`` command (one
process per DVC stage) would otherwise pay their import time, about 1.7 s.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import pandas as pd
import torch

from .data_commands import PARAMS_OPTION
from .evaluate import model_from_checkpoint, read_run_config
from .files import write_atomically, write_json
from .params import ParamsError, load_params, lookup
from .reference import REFERENCE_DIR, Reference
from .run_results import (MissingRunError, final_checkpoint, load_curves, load_finals, load_marginal_likelihoods,
                          run_directories)

FIGURES_INDEX = "figures.json"
PLOTS_DIR = "plots"


def find_run(runs_root: Path, experiment: str, dataset: str, nz: int, algorithm: str = "aevb") -> Path:
    """The run directory of one configuration, by its config.json (not by its name)."""
    for run_dir in run_directories(runs_root, experiment):
        config = read_run_config(run_dir)
        if (config.dataset, config.z_dim, config.algorithm) == (dataset, nz, algorithm):
            return run_dir
    raise MissingRunError(f"no {algorithm} run of {dataset} with Nz = {nz} under {Path(runs_root) / experiment}: "
                          f"run `dvc repro` (the figures need it)")


def load_final_model(run_dir: Path):
    config = read_run_config(run_dir)
    state = torch.load(final_checkpoint(run_dir), map_location="cpu", weights_only=False)
    return model_from_checkpoint(config, state, torch.device("cpu")).double()


def make_figures(runs_root: Path, out: Path, params: dict, reference_dir: Path = REFERENCE_DIR) -> dict:
    """Draw Figures 2-5 into ``out`` (PNG and SVG) and index them in ``figures.json``."""
    from .figures import figure_2, figure_3, figure_4, figure_5, save_figure
    start = time.perf_counter()
    experiments = lookup(params, "experiments")
    fig4 = experiments["fig4"]
    reference = Reference.load(reference_dir)
    files = {}
    curves = load_curves(runs_root, "fig2")
    files["fig2"] = save_figure(figure_2(curves, reference, experiments["fig2"]["mnist"]["nz"],
                                         experiments["fig2"]["frey_face"]["nz"]), out, "fig2")
    ml = load_marginal_likelihoods(runs_root, "fig3")
    files["fig3"] = save_figure(figure_3(ml, reference, experiments["fig3"]["ntrain"]), out, "fig3")
    manifold_models = {dataset: load_final_model(find_run(runs_root, "fig2", dataset, fig4[dataset]["nz"]))
                       for dataset in ("frey_face", "mnist")}
    cells = {dataset: int(fig4[dataset]["manifold_cells"]) for dataset in manifold_models}
    files["fig4"] = save_figure(figure_4(manifold_models, cells), out, "fig4")
    sample_models = {nz: load_final_model(find_run(runs_root, "fig2", "mnist", nz)) for nz in fig4["samples_nz"]}
    files["fig5"] = save_figure(figure_5(sample_models, int(fig4["samples_per_side"]), int(fig4["seed"])), out, "fig5")
    index = {"figures": {name: [p.name for p in paths] for name, paths in files.items()},
             "wall_seconds": round(time.perf_counter() - start, 1)}
    write_json(Path(out) / FIGURES_INDEX, index)
    return index


def write_plot_tables(curves: pd.DataFrame, ml: pd.DataFrame, out: Path) -> list[Path]:
    """Wide CSVs (samples_seen + one column per curve) for ``dvc plots diff`` (dvc.yaml ``plots:``)."""
    paths = []
    bounds = curves[(curves.metric == "lower_bound") & (curves.split == "test") & (curves.experiment == "fig2")]
    for dataset, frame in bounds.groupby("dataset"):
        frame = frame.assign(curve=frame.apply(lambda r: f"nz{r.nz}_{r.algorithm}_test", axis=1))
        wide = frame.pivot_table(index="samples_seen", columns="curve", values="value").reset_index()
        paths.append(_write_csv(wide, Path(out) / PLOTS_DIR / f"fig2_{dataset}.csv"))
    appendix_d = ml[ml.estimator == "appendix_d"]
    appendix_d = appendix_d.assign(curve=appendix_d.apply(
        lambda r: f"ntrain{50_000 if pd.isna(r.ntrain) else int(r.ntrain)}_{r.algorithm}_{r.split}", axis=1))
    wide = appendix_d.pivot_table(index="samples_seen", columns="curve", values="value").reset_index()
    paths.append(_write_csv(wide, Path(out) / PLOTS_DIR / "fig3.csv"))
    return paths


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.columns.name = None
    return write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def make_report(runs_root: Path, figures_dir: Path, out: Path, params: dict, params_path: Path,
                reference_dir: Path = REFERENCE_DIR) -> dict:
    """Write report.md, report.html, metrics.json, provenance.json and the plot tables into ``out``."""
    from .claims import evaluate_claims
    from .metrics import build_metrics
    from .provenance import build_provenance
    from .report import build_blocks, render_html, render_markdown
    start = time.perf_counter()
    out = Path(out)
    reference = Reference.load(reference_dir)
    curves = pd.concat([load_curves(runs_root, "fig2"), load_curves(runs_root, "fig3")], ignore_index=True)
    finals = pd.concat([load_finals(runs_root, "fig2"), load_finals(runs_root, "fig3")], ignore_index=True)
    ml = load_marginal_likelihoods(runs_root, "fig3")
    variance_path = Path(runs_root) / "estimator_variance.csv"
    variance = pd.read_csv(variance_path) if variance_path.is_file() else None
    claims = evaluate_claims(curves, ml, finals, variance, lookup(params, "report"))
    metrics = build_metrics(curves, ml, finals, variance, claims)
    index_path = Path(figures_dir) / FIGURES_INDEX
    if not index_path.is_file():
        raise MissingRunError(f"{index_path} not found: run `vaebench figures` first")
    index = json.loads(index_path.read_text())
    relative = Path(figures_dir).resolve().relative_to(out.resolve()) if Path(figures_dir).resolve().is_relative_to(
        out.resolve()) else Path(figures_dir).resolve()
    figure_files = {name: [str(relative / f) for f in names] for name, names in index["figures"].items()}
    times = {"figures": index["wall_seconds"], "report": time.perf_counter() - start}
    provenance = build_provenance(Path(params_path).resolve().parent, params,
                                  Path(lookup(params, "data.raw_dir")), finals, ml, variance, times)
    blocks = build_blocks(params["profile"], claims, curves, ml, finals, reference, provenance, figure_files)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "report.md", lambda tmp: tmp.write_text(render_markdown(blocks)))
    write_atomically(out / "report.html",
                     lambda tmp: tmp.write_text(render_html(blocks, out, f"vaebench report: {params['profile']}")))
    write_json(out / "metrics.json", metrics)
    write_json(out / "provenance.json", provenance)
    write_plot_tables(curves, ml, out)
    return {"claims": claims, "metrics": metrics, "provenance": provenance}


@click.command()
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory (default reports/<profile>/figures).")
@click.option("--reference", "reference_dir", type=click.Path(path_type=Path), default=REFERENCE_DIR, show_default=True)
@PARAMS_OPTION
def figures(runs_root, out, reference_dir, params_path) -> None:
    """Draw the paper's Figures 2-5 (PNG and SVG) from the runs."""
    try:
        params = load_params(params_path)
        out = out or Path("reports") / params["profile"] / "figures"
        index = make_figures(runs_root, out, params, reference_dir)
    except (ParamsError, FileNotFoundError, KeyError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{out}: {', '.join(f for names in index['figures'].values() for f in names)} "
               f"({index['wall_seconds']:.1f} s)")


@click.command()
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--figures", "figures_dir", type=click.Path(path_type=Path), default=None,
              help="The figures directory (default reports/<profile>/figures).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output directory (default reports/<profile>).")
@click.option("--reference", "reference_dir", type=click.Path(path_type=Path), default=REFERENCE_DIR, show_default=True)
@PARAMS_OPTION
def report(runs_root, figures_dir, out, reference_dir, params_path) -> None:
    """Write the report (report.md, report.html), metrics.json and provenance.json."""
    try:
        params = load_params(params_path)
        out = out or Path("reports") / params["profile"]
        result = make_report(runs_root, figures_dir or out / "figures", out, params, params_path, reference_dir)
    except (ParamsError, FileNotFoundError, KeyError) as err:
        raise click.ClickException(str(err)) from err
    for claim in result["claims"]:
        click.echo(f"{claim.verdict.upper():8s} {claim.key}: {claim.summary}")
    click.echo(f"{out}: report.md, report.html, metrics.json ({len(result['metrics'])} metrics), provenance.json")


__all__ = ["figures", "report", "make_figures", "make_report"]
