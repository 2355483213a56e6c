"""The ``report`` stage: ``reports/<profile>/report.md`` and a self-contained ``report.html``
(figures embedded), built from the same list of blocks so the two always say the same thing, with
``metrics.json``, ``provenance.json`` and the plot tables of ``dvc plots``.

Content, in order: the reproduction result (claim by claim, whether our verdict agrees with the
paper's own curves judged at this budget); the claim verdicts with their intervals, seed counts
and the paper's verdict at this budget (pipeline.reporting.claims); the seeds of every configuration;
Figures 2-5 (linked to their PNG and SVG files, with the caption of their seed bands); Figure 2's
final bounds (mean ± s.e. over seeds) beside the paper's at the same number of training samples;
Figure 3's final marginal likelihoods with the cross-checks and the paper's values; the evidence
behind every claim, ours and the paper's; the runs (seed, budget, step size, throughput, wall
time); provenance. Nothing in the report is typed in:
every number comes from the runs or from ``reports/reference/``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd

from pipeline.reporting.binarization_study import binarization_table, closer_setting, study_summary
from pipeline.reporting.fidelity_tables import (appendix_d_bias, appendix_d_bias_sentence, linear_floor_blocks,
                                                log_likelihood_blocks, read_linear_reference, read_log_likelihoods)
from pipeline.reporting.claims import NOT_ON_AXES, NOT_RUN, Claim, evaluate_claims, final_values, verdict_counts
from pipeline.reporting.paper_claims import attach_paper_verdicts, claim_agreement, evaluate_paper_claims
from pipeline.runs.archive_status import EXACT, read_archive_status
from pipeline.runs.configurations import claims_not_run, configuration_status, expected_configurations, status_table
from pipeline.reporting.seed_statistics import LEVEL, summarize
from pipeline.plumbing.files import staged_folder, write_atomically, write_json
from pipeline.reporting.metrics import build_metrics
from pipeline.plumbing.params import lookup
from pipeline.reporting.provenance import build_provenance
from pipeline.reporting.reference import REFERENCE_DIR, Reference
from pipeline.reporting.render import Block, render_html, render_markdown
from pipeline.runs.directory import MissingRunError
from pipeline.runs.results import load_curves, load_finals, load_marginal_likelihoods

FIGURES_INDEX = "figures.json"  # written by the figures stage (pipeline.reporting.figures)
METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"

FIGURES = {
    "fig2": "Figure 2: lower bound per datapoint vs training samples evaluated, AEVB vs wake-sleep "
            "(thick: this run; thin: the paper's curves where its axes show them).",
    "fig3": "Figure 3: marginal log-likelihood (Appendix D estimator, ±1 standard error) vs training samples "
            "evaluated, MNIST Nz = 3, 100 hidden units.",
    "fig4": "Figure 4: learned 2-D manifolds (AEVB, Nz = 2), decoder means on Φ⁻¹ of a linear grid.",
    "fig5": "Figure 5: random samples from AEVB models of MNIST, Nz = 2, 5, 10, 20 (decoder means).",
}


def mean_se(values, errors=None) -> str:
    """"mean ± s.e. (n)": the mean over seeds, its standard error (seed spread, and the estimator's
    own error where given, in quadrature) and the seed count; one seed: the value (and its
    estimator's s.e. if any) with "(1 seed)"."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "–"
    summary = summarize(values, errors)
    if summary.n == 1 and summary.estimator_se == 0:
        return f"{summary.mean:,.2f} (1 seed)"
    return f"{summary.mean:,.2f} ± {summary.se:.2g} ({summary.n} seed{'s' if summary.n > 1 else ''})"


def fig2_table(curves: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Final bounds per Figure 2 panel (mean ± s.e. over seeds), with the paper's test values at
    the same sample count."""
    fig2 = curves[curves.experiment == "fig2"]
    fig2 = fig2[fig2.groupby(["dataset", "nz"]).algorithm.transform("nunique") > 1]
    finals = final_values(fig2)
    samples = fig2[fig2.metric == "lower_bound"].groupby(["dataset", "nz"]).samples_seen.max()
    rows = []
    for (dataset, nz), budget in samples.items():
        row = {"dataset": dataset, "Nz": int(nz), "samples": int(budget)}
        for algorithm, label in (("aevb", "AEVB"), ("wake_sleep", "WS")):
            runs = finals[(finals.dataset == dataset) & (finals.nz == nz) & (finals.algorithm == algorithm)]
            for split in ("train", "test"):
                row[f"{label} {split}"] = mean_se(runs[split].tolist()) if split in runs else "–"
        for algorithm, label in (("aevb", "AEVB"), ("wake_sleep", "WS")):
            value = reference.fig2_at(dataset, int(nz), algorithm, "test", float(budget))
            row[f"paper {label} test @ same samples"] = value if value is not None else "off-axis"
        row["paper AEVB test, right edge"] = reference.right_edge_test("fig2", dataset, "aevb", int(nz))
        rows.append(row)
    return pd.DataFrame(rows)


def fig3_table(marginal_likelihoods: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Final marginal likelihoods per Figure 3 configuration: Appendix D (mean ± s.e. over seeds,
    the estimator's error included), the cross-checks (the first seed's; importance sampling with
    its mean effective sample size), the paper."""
    ml = marginal_likelihoods
    if "seed" not in ml:
        ml = ml.assign(seed=0)
    last = ml[ml.samples_seen == ml.groupby(["run", "seed"]).samples_seen.transform("max")]
    rows = []
    for (ntrain, algorithm), group in last.groupby(["ntrain", "algorithm"]):
        samples = int(group.samples_seen.max())
        row = {"Ntrain": int(ntrain), "algorithm": algorithm, "samples": samples}
        for split in ("train", "test"):
            appendix_d = group[(group.split == split) & (group.estimator == "appendix_d")]
            row[f"{split} App. D"] = mean_se(appendix_d.value.tolist(), appendix_d.standard_error.tolist())
            for estimator, label in (("importance_sampling", "IS"), ("grid", "grid")):
                rows_ = group[(group.split == split) & (group.estimator == estimator)]
                row[f"{split} {label}"] = float(rows_.value.mean()) if len(rows_) else None
                if estimator == "importance_sampling":  # its mean effective sample size, of K
                    row[f"{split} IS ESS"] = float(rows_.diagnostic_value.mean()) if len(rows_) else None
            if row[f"{split} IS"] is not None and row[f"{split} grid"] is not None:
                row[f"{split} IS - grid"] = row[f"{split} IS"] - row[f"{split} grid"]
            bias = appendix_d_bias(group, split)
            if bias is not None:
                row[f"{split} App. D - grid"], row[f"{split} App. D s.e."] = bias
        value = reference.fig3_at(int(ntrain), algorithm, "test", samples)
        row["paper test @ same samples"] = value if value is not None else "off-axis"
        row["paper test, right edge"] = reference.right_edge_test("fig3", f"ntrain{int(ntrain)}", algorithm)
        rows.append(row)
    return pd.DataFrame(rows)


def seeds_table(finals: pd.DataFrame) -> pd.DataFrame:
    """Which configurations have how many seeds (and which were stacked)."""
    rows = []
    if "seed" not in finals:  # a table of runs without seeds: nothing to say
        return pd.DataFrame(columns=["experiment", "configuration", "seeds", "trained"])
    for (experiment, run), group in finals.groupby(["experiment", "run"]):
        charged = set(group.train_time_charged) if "train_time_charged" in group else set()
        trained = ("alone" if len(group) == 1 else
                   "stacked in one process" if any("stacked" in str(c) for c in charged) else
                   "side by side, one process each" if any("side by side" in str(c) for c in charged) else
                   "one after another")
        rows.append({"experiment": experiment, "configuration": run, "seeds": ", ".join(map(str, sorted(group.seed))),
                     "trained": trained})
    return pd.DataFrame(rows)


def runs_table(finals: pd.DataFrame) -> pd.DataFrame:
    columns = {"experiment": "experiment", "run": "run", "seed": "seed", "samples_seen": "samples", "step_size": "step size",
               "training_samples_per_second": "samples/s", "train_seconds": "train s", "eval_seconds": "eval s",
               "trial_seconds": "step-size trial s", "threads": "threads", "train_time_charged": "train s measures",
               "device": "device"}
    table = finals[[c for c in columns if c in finals]].rename(columns=columns)
    if "final_hmc_acceptance_rate" in finals:
        table["HMC acceptance (MCEM)"] = finals.final_hmc_acceptance_rate
    return table.sort_values([c for c in ("experiment", "run", "seed") if c in table], ignore_index=True)


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """The verdict table: ours with its interval and seed count, the paper's curves judged at this
    budget, and whether the two agree."""
    return pd.DataFrame([{
        "claim": c.statement,
        "our verdict": c.verdict.upper() + (" (rests on one seed)" if c.single_seed and c.verdict != "no data" else ""),
        f"deciding statistic, {LEVEL:.0%} interval": c.interval or "–",
        "seeds": c.seeds or "–",
        "the paper's curves at this budget": c.paper_verdict.upper() if c.paper_verdict != NOT_ON_AXES else c.paper_verdict,
        "agreement": claim_agreement(c),
    } for c in claims])


def opening_lines(claims: list[Claim]) -> list[Block]:
    """The report's first lines: claim by claim, whether our verdict agrees with the paper's own
    curves judged at this budget (the reproduction result of a reduced-budget profile)."""
    counts = verdict_counts(claims)
    outcomes = [claim_agreement(c) for c in claims]
    without_data = f", {counts['no data']} without data" if counts["no data"] else ""
    summary = (f"**The reproduction result at this budget**: our verdict agrees with the paper's own curves judged at "
               f"the same budget on {outcomes.count('agrees')} of {len(claims)} claims, disagrees on "
               f"{outcomes.count('disagrees')}, and cannot be compared on {len(claims) - outcomes.count('agrees') - outcomes.count('disagrees')}. "
               f"Our verdicts alone: {counts['pass']} pass, {counts['inconclusive']} inconclusive, {counts['fail']} fail"
               f"{without_data}; "
               f"{sum(c.single_seed for c in claims)} of them rest at least partly on configurations with one seed.")
    items = [f"{c.statement}: ours **{c.verdict}**{' (one seed)' if c.single_seed and c.verdict != 'no data' else ''}"
             f" ({c.interval or 'no interval'})"
             f"{f'; on the part the paper can show, ours {c.comparable_verdict}' if c.comparable_verdict else ''}"
             f"; the paper's curves at this budget: **{c.paper_verdict}** -> {outcome}"
             for c, outcome in zip(claims, outcomes)]
    return [Block("p", summary), Block("list", items)]


def partial_headline(claims: list[Claim], not_run: dict[str, list[str]], hours: dict[str, float]) -> list[Block]:
    """A partial report's first lines: how many claims are judged at this profile's budget, and
    what each claim still "not run" waits for (and the hours those configurations are predicted to
    take on this machine, where the campaign recorded them)."""
    judged = [c for c in claims if c.verdict != NOT_RUN]
    items = []
    for claim in claims:
        if claim.verdict != NOT_RUN:
            continue
        missing = not_run.get(claim.key, [])
        known = [hours[m] for m in missing if m in hours]
        cost = (f" (about {sum(known):,.1f} h on this machine{'' if len(known) == len(missing) else ' for those costed'})"
                if known else "")
        items.append(f"{claim.statement}: waits for {len(missing)} configuration(s): "
                     f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}{cost}")
    return [Block("p", f"**Judged at this profile's budget: {len(judged)} of {len(claims)} claims.** The others are "
                       f"\"not run\": each compares a configuration that has not run to the end of its budget here."),
            *([Block("list", items)] if items else [])]


def archive_blocks(rows: pd.DataFrame) -> list[Block]:
    """Where each run of a partial set comes from: the commit that trained it, and whether the
    current code reproduces it exactly (judged) or not (stale: neither restored nor judged)."""
    shown = pd.DataFrame({"run": rows.run, "trained at": ["unknown" if pd.isna(c) or not c else str(c)[:12] for c in rows.commit],
                          "status": ["current code reproduces it exactly" if s == EXACT else "stale" for s in rows.status],
                          "how": rows.how})
    stale = int((rows.status != EXACT).sum())
    return [Block("h2", "Where these runs come from"),
            Block("p", f"Every run below was archived in the repository by the commit that trained it and restored "
                       f"here after a check against the current code (docs/paper-budget.md): only the runs the current "
                       f"code reproduces exactly are judged{f'; {stale} stale run(s) are left out' if stale else ''}."),
            Block("table", shown)]


def binarization_blocks(table: pd.DataFrame, verdicts: pd.DataFrame) -> list[Block]:
    """The binarization study's section (docs/protocol.md, section 8; pipeline.reporting.binarization_study)."""
    if table.empty:
        return [Block("h2", "Binarization study: which MNIST targets reproduce Figure 2"),
                Block("p", "Not run: no MNIST AEVB runs of either setting.")]
    shown = table.rename(columns={"final_test_bound": "final test bound", "paper_test_at_same_samples":
                                  "paper test @ same samples", "mean_abs_gap": "mean abs gap to paper",
                                  "max_abs_gap": "max abs gap", "mean_signed_gap": "mean gap (ours - paper)",
                                  "points": "points compared", "from_samples": "from samples",
                                  "to_samples": "to samples"})
    return [
        Block("h2", "Binarization study: which MNIST targets reproduce Figure 2"),
        Block("p", "MNIST AEVB at Figure 2's latent sizes with the grey levels as Bernoulli targets (`none`, "
                   "Figure 2's own runs) and with a fresh Bernoulli draw of every minibatch (`dynamic`, stages "
                   "`fig2_binarization`, first seed), each test curve (mean over seeds) set against the paper's "
                   "AEVB test curve at the same number of training samples, over the points where the paper's axes "
                   "show it (log-x interpolation, never extrapolated). A dynamically binarized model is evaluated on "
                   "one fixed binarization of the test subset: its bound is of binary images. docs/protocol.md, "
                   "section 8; docs/fidelity.md."),
        Block("p", study_summary(table, verdicts)),
        Block("table", shown),
        *([Block("table", verdicts)] if not verdicts.empty else []),
    ]


def build_blocks(profile: str, claims: list[Claim], curves, marginal_likelihoods, finals, reference: Reference,
                 provenance: dict, figure_files: dict[str, list[str]], band_captions: dict[str, str] | None = None,
                 binarization: list[Block] | None = None, configurations: pd.DataFrame | None = None,
                 not_drawn: dict[str, str] | None = None, not_run: dict[str, list[str]] | None = None,
                 archive: tuple[pd.DataFrame, dict[str, float], str] | None = None,
                 linear_floor: list[Block] | None = None, log_likelihood: list[Block] | None = None) -> list[Block]:
    """The report's blocks. ``configurations`` (a partial set of runs): the status of every
    configuration of the profile, shown after the claims, with ``not_run`` (per claim, the
    configurations it waits for) and ``archive`` (where the runs came from, and the hours the
    missing configurations are predicted to take: pipeline.runs.archive_status); ``not_drawn``:
    figures left out, why."""
    git = provenance["git"]
    band_captions = band_captions or {}
    commit = f"commit `{git.get('commit') or 'unknown'}`{' (with uncommitted changes)' if git.get('dirty') else ''}"
    made = (f"Regenerated from scratch by `dvc repro` at {commit}." if configurations is None else
            f"A partial set of runs, rendered by `vaebench report --partial` at {commit}"
            + (f" from a runs folder made by {archive[2]}." if archive is not None and archive[2] else
               " from a runs folder trained outside `dvc repro` (not regenerated from scratch)."))
    blocks = [
        Block("h1", f"vaebench report: profile `{profile}`"),
        *(partial_headline(claims, not_run or {}, archive[1] if archive else {}) if configurations is not None else []),
        *opening_lines(claims),
        Block("p", f"{made} MNIST targets of Figures 2-5: "
                   f"`binarize: {', '.join(sorted(set(curves.binarize))) if 'binarize' in curves and len(curves) else '–'}` (`none`: the grey "
                   f"levels as Bernoulli targets; `dynamic`: a fresh Bernoulli draw per minibatch; the binarization "
                   f"study below trains the other setting too). Paper values come from `reports/reference/` (its curves read from the PDF), "
                   f"compared at the same number of training samples evaluated."),
        Block("h2", "Claims of the paper, judged from this run and from the paper's curves at this budget"),
        Block("p", f"A verdict is PASS when the {LEVEL:.0%} interval of its deciding statistic lies wholly on the "
                   f"claim's side of the threshold, FAIL when wholly on the other side, INCONCLUSIVE when it "
                   f"straddles it (docs/protocol.md, section 10). Intervals are Student-t over seeds, combined with "
                   f"the estimator's own standard error where there is one; a configuration with one seed has no "
                   f"seed spread, and a verdict resting on one is marked. The paper's column applies the same test "
                   f"to the paper's own curves read at this run's evaluation points: at a reduced budget, the "
                   f"agreement of the two columns, not our raw verdict, is the reproduction result."),
        Block("table", claims_table(claims)),
        *([Block("h2", "Configurations: what ran"),
           Block("p", f"A partial set of runs: {int((configurations.status != 'not run').sum())} of "
                      f"{len(configurations)} configurations of the `{profile}` profile ran to the end of their "
                      f"budget (for Figure 3, with Appendix D at their checkpoints). Every other configuration is "
                      f"\"not run\": nothing is extrapolated, and a claim comparing a configuration that did not "
                      f"run is not judged."),
           Block("table", status_table(configurations))] if configurations is not None else []),
        *(archive_blocks(archive[0]) if archive is not None and not archive[0].empty else []),
        Block("h2", "Seeds"),
        Block("p", "The seeds of each configuration (params.yaml `profiles.<profile>.seeds`): the configurations "
                   "that decide a claim's close margins get several, the others keep the first to fit the "
                   "profile's time budget. Fused AEVB seeds train stacked in one process, each with its own "
                   "random numbers (the same numbers as alone)."),
        Block("table", seeds_table(finals)),
        Block("h2", "Figures"),
    ]
    for name, caption in FIGURES.items():
        if name in figure_files:
            blocks.append(Block("figure", figure_files[name], f"{caption} {band_captions.get(name, '')}".strip()))
    if not_drawn:
        blocks.append(Block("list", [f"{FIGURES[name].split(':')[0]}: not drawn ({reason})"
                                     for name, reason in not_drawn.items()]))
    blocks += [
        Block("h2", "Figure 2: final lower bounds"),
        Block("p", "Average lower bound per datapoint (estimator B, L = 1) on the evaluation subsets at the end of "
                   "each run's budget, mean ± standard error over seeds (seed count in brackets); the paper's test "
                   "curve read at the same number of samples (\"off-axis\" where the paper's axes do not show it) "
                   "and at its right edge (10^8 samples)."),
        Block("table", fig2_table(curves, reference)),
        *(linear_floor or []),
        *(log_likelihood or []),
        Block("h2", "Figure 3: final marginal likelihoods"),
        Block("p", "log p(x) per datapoint at the last checkpoint: the Appendix D estimator, mean ± standard error "
                   "over seeds (seed spread and the estimator's own error in quadrature; with one seed, the "
                   "estimator's error), and, on the first seed, importance sampling (K samples, a stochastic lower "
                   "bound; its proposal a defensive mixture fitted to Appendix D's HMC samples, docs/protocol.md "
                   "section 5; ESS: its mean effective sample size) and the grid (exact up to its error bound) as "
                   "cross-checks, with their difference; the paper's test value at the same samples."),
        Block("table", fig3 := fig3_table(marginal_likelihoods, reference)),
        Block("p", "App. D - grid: Appendix D minus the exact grid on the seed where the grid ran, beside "
                   "Appendix D's own standard error there (App. D s.e.). " + appendix_d_bias_sentence(fig3)),
        *(binarization or []),
        Block("h2", "Evidence behind each claim"),
    ]
    for claim in claims:
        blocks.append(Block("h3", f"{claim.statement}: {claim.verdict.upper()}"))
        blocks.append(Block("p", claim.summary))
        if not claim.evidence.empty:
            blocks.append(Block("table", claim.evidence))
        blocks.append(Block("p", f"The paper's curves at this budget: {claim.paper_verdict}. {claim.paper_summary}"))
    blocks += [
        Block("h2", "Runs"),
        Block("table", runs_table(finals)),
        Block("h2", "Provenance"),
        Block("p", f"params.yaml sha256 `{provenance['params_sha256'][:16]}…`; data: "
                   + ", ".join(f"`{k}` `{v[:12]}…`" for k, v in provenance["data_sha256"].items())
                   + f"; torch {provenance['packages'].get('torch')}, device(s) {', '.join(provenance['devices'])}; "
                   f"CPU {provenance['machine'].get('cpu')}. Full record: [provenance.json](provenance.json), "
                   f"metrics: [metrics.json](metrics.json)."),
        Block("table", pd.DataFrame([{"stage": k, "wall seconds": v}
                                     for k, v in provenance["stage_wall_seconds"].items()])),
    ]
    return blocks


def write_plot_tables(curves: pd.DataFrame, ml: pd.DataFrame, out: Path) -> list[Path]:
    """Wide CSVs (samples_seen + one column per curve) for ``dvc plots diff`` (dvc.yaml ``plots:``)."""
    paths = []
    bounds = curves[(curves.metric == "lower_bound") & (curves.split == "test") & (curves.experiment == "fig2")]
    for dataset, frame in bounds.groupby("dataset"):
        frame = frame.assign(curve=frame.apply(lambda r: f"nz{r.nz}_{r.algorithm}_test", axis=1))
        wide = frame.pivot_table(index="samples_seen", columns="curve", values="value").reset_index()
        paths.append(_write_csv(wide, Path(out) / PLOTS_DIR / f"fig2_{dataset}.csv"))
    appendix_d = ml[ml.estimator == "appendix_d"] if "estimator" in ml else ml.iloc[0:0]
    if appendix_d.empty:  # a partial set of runs without Figure 3: the table's header alone
        wide = pd.DataFrame(columns=["samples_seen"])
    else:  # pivot_table averages over seeds: the mean curves
        appendix_d = appendix_d.assign(curve=[f"ntrain{int(n)}_{a}_{s}" for n, a, s in
                                              zip(appendix_d.ntrain, appendix_d.algorithm, appendix_d.split)])
        wide = appendix_d.pivot_table(index="samples_seen", columns="curve", values="value").reset_index()
    paths.append(_write_csv(wide, Path(out) / PLOTS_DIR / "fig3.csv"))
    return paths


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.columns.name = None
    return write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def binarization_metrics(table: pd.DataFrame) -> dict[str, float]:
    """metrics.json entries of the binarization study: per setting and Nz, the final test bound
    (``*_lb``: ``vaebench compare`` judges it as a bound, with the bounds' tolerance; the gap to
    the paper, derived from it and the reference, stays in the report's table)."""
    rows = table[table.status == "ran"].itertuples() if "status" in table else []
    return {f"binarization/{row.binarize}/mnist/nz{row.Nz}/test_lb": float(row.final_test_bound) for row in rows}


def make_report(runs_root: Path, figures_dir: Path, out: Path, params: dict, params_path: Path,
                reference_dir: Path = REFERENCE_DIR, partial: bool = False) -> dict:
    """Write report.md, report.html, metrics.json, provenance.json and the plot tables into ``out``.

    They are written into a staging folder and published together once all are written
    (:func:`pipeline.plumbing.files.staged_folder`), entry by entry beside the figures already in ``out``,
    metrics.json last (``vaebench compare`` reads it): a report that fails midway leaves the
    previous one whole.

    ``partial``: a partial set of runs (docs/paper-budget.md): missing and unfinished runs
    are left out, listed as "not run" in a table of the profile's configurations, and the claims
    that compare them are not judged (pipeline.runs.configurations, pipeline.reporting.claims.mark_not_run)."""
    start = time.perf_counter()
    out = Path(out)
    reference = Reference.load(reference_dir)
    frames = [(load_curves(runs_root, e, missing_ok=partial), load_finals(runs_root, e, missing_ok=partial))
              for e in ("fig2", "fig3")]
    curves = pd.concat([c for c, _ in frames if not c.empty] or [frames[0][0]], ignore_index=True)
    finals = pd.concat([f for _, f in frames if not f.empty] or [frames[0][1]], ignore_index=True)
    ml = load_marginal_likelihoods(runs_root, "fig3", missing_ok=partial)
    variance_path = Path(runs_root) / "estimator_variance.csv"
    variance = pd.read_csv(variance_path) if variance_path.is_file() else None
    settings = lookup(params, "report")
    status = configuration_status(runs_root, expected_configurations(params)) if partial else None
    not_run = claims_not_run(status, variance is not None) if partial else None
    claims = attach_paper_verdicts(evaluate_claims(curves, ml, finals, variance, settings, not_run),
                                   evaluate_paper_claims(curves, ml, reference, settings))
    study = load_curves(runs_root, "binarization", missing_ok=True)
    # the study's runs train with Figure 2's budgets (their config says fig2); the Seeds and Runs
    # tables and the stage times name them by their folder
    study_finals = load_finals(runs_root, "binarization", missing_ok=True)
    all_finals = (pd.concat([finals, study_finals.assign(experiment="binarization")], ignore_index=True)
                  if not study_finals.empty else finals)
    study_nz = (params.get("experiments", {}).get("fig2", {}).get("binarization_study") or {}).get("nz", [])
    binarization = binarization_table(curves[curves.experiment == "fig2"], study, reference, study_nz)
    binarization_verdicts = closer_setting(binarization)
    metrics = build_metrics(curves, ml, all_finals, variance, claims)  # speeds: the study's runs too
    metrics.update(binarization_metrics(binarization))
    index_path = Path(figures_dir) / FIGURES_INDEX
    if not index_path.is_file():
        raise MissingRunError(f"{index_path} not found: run `vaebench figures` first")
    index = json.loads(index_path.read_text())
    relative = Path(figures_dir).resolve().relative_to(out.resolve()) if Path(figures_dir).resolve().is_relative_to(
        out.resolve()) else Path(figures_dir).resolve()
    figure_files = {name: [str(relative / f) for f in names] for name, names in index["figures"].items()}
    times = {"figures": index["wall_seconds"], "report": time.perf_counter() - start}
    provenance = build_provenance(Path(params_path).resolve().parent, params,
                                  Path(lookup(params, "data.raw_dir")), all_finals, ml, variance, times)
    blocks = build_blocks(params["profile"], claims, curves, ml, all_finals, reference, provenance, figure_files,
                          index.get("band_captions"), binarization_blocks(binarization, binarization_verdicts),
                          status, index.get("not_drawn"), not_run, read_archive_status(runs_root) if partial else None,
                          linear_floor_blocks(read_linear_reference(runs_root), curves, reference),
                          log_likelihood_blocks(read_log_likelihoods(runs_root)))
    with staged_folder(out, last=METRICS_FILE) as staging:
        write_atomically(staging / "report.md", lambda tmp: tmp.write_text(render_markdown(blocks)))
        # the figures are read where they already are: under out (or figures_dir), not staged
        write_atomically(staging / "report.html",
                         lambda tmp: tmp.write_text(render_html(blocks, out, f"vaebench report: {params['profile']}")))
        write_json(staging / "provenance.json", provenance)
        write_plot_tables(curves, ml, staging)
        write_json(staging / METRICS_FILE, metrics)
    return {"claims": claims, "metrics": metrics, "provenance": provenance}
