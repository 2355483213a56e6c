"""``vaebench compare`` with several seeds per configuration: seed spread and count keys are
informational, a bound's or marginal likelihood's tolerance widens by k x the seed spread (and says
so), claims may be inconclusive (0.5)."""
import json
import math

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.compare.compare import CompareInputError
from pipeline.compare.keys import family_of
from pipeline.compare.render import render
from pipeline.compare.sides import paper_metrics, resolve_sides
from pipeline.compare.verdicts import compare_metrics, regressions, tolerances_from_params
from pipeline.reporting.reference import REFERENCE_DIR, Reference

from .conftest import REPO

TOLERANCES = {"bound_nats": 0.5, "marginal_likelihood_se": 3.0, "marginal_likelihood_floor_nats": 0.2,
              "throughput_ratio": 0.8, "variance_ratio": 0.5, "seed_spread_multiplier": 2.0}
LB = "fig2/mnist/nz20/aevb/test_lb"
ML = "fig3/ntrain1000/aevb/test_ml"


def verdicts(base, new, tolerances=TOLERANCES):
    return {r.key: r.verdict for r in compare_metrics(base, new, tolerances)}


def row(base, new, key, tolerances=TOLERANCES):
    return next(r for r in compare_metrics(base, new, tolerances) if r.key == key)


# (a) a change inside the seed spread is "same"; the same change without seed spreads is "worse"
def test_a_bound_change_inside_the_seed_spread_is_same_and_worse_without_it():
    base, new = {LB: -120.0}, {LB: -121.0}  # |diff| 1 > bound_nats 0.5
    assert verdicts(base, new)[LB] == "worse"
    spreads = {f"{LB}_seed_se": 0.3}, {f"{LB}_seed_se": 0.4}  # spread hypot = 0.5: tolerance 0.5 + 2 x 0.5 = 1.5
    widened = row({**base, **spreads[0]}, {**new, **spreads[1]}, LB)
    assert widened.verdict == "same"
    assert widened.seed_widening == pytest.approx(1.0)
    assert widened.note == "tolerance widened by seed spread: +1 nats (2 x 0.5)"
    assert "= 1.5 nats" in widened.rule
    # one side's spread alone widens too (the other counts 0): 0.5 + 2 x 0.3 = 1.1 >= 1
    assert verdicts({**base, **spreads[0]}, new)[LB] == "same"


def test_a_marginal_likelihood_change_inside_the_seed_spread_is_same():
    base = {ML: -150.0, f"{ML}_se": 0.1}
    new = {ML: -151.5, f"{ML}_se": 0.1}  # 3 x 0.141 + 0.2 = 0.62 < 1.5
    assert verdicts(base, new)[ML] == "worse"
    spread = {f"{ML}_seed_se": 0.3}  # + 2 x hypot(0.3, 0.3) = 0.85: 1.47 < 1.5, still worse
    assert verdicts({**base, **spread}, {**new, **spread})[ML] == "worse"
    spread = {f"{ML}_seed_se": 0.4}  # + 2 x hypot(0.4, 0.4) = 1.13: 1.75 >= 1.5
    assert verdicts({**base, **spread}, {**new, **spread})[ML] == "same"


# (b) a change outside the widened tolerance is still better/worse; k comes from the tolerances
def test_a_change_outside_the_seed_spread_is_worse_or_better():
    spreads = {f"{LB}_seed_se": 0.3}, {f"{LB}_seed_se": 0.4}  # tolerance 1.5
    assert verdicts({LB: -120.0, **spreads[0]}, {LB: -121.6, **spreads[1]})[LB] == "worse"
    assert verdicts({LB: -120.0, **spreads[0]}, {LB: -118.4, **spreads[1]})[LB] == "better"
    bad = regressions(compare_metrics({LB: -120.0, **spreads[0]}, {LB: -121.6, **spreads[1]}, TOLERANCES))
    assert [r.key for r in bad] == [LB]
    # the multiplier decides: k = 1 -> tolerance 1.0 (worse); k = 0 turns widening off
    base, new = {LB: -120.0, **spreads[0]}, {LB: -121.2, **spreads[1]}
    assert verdicts(base, new)[LB] == "same"
    assert verdicts(base, new, {**TOLERANCES, "seed_spread_multiplier": 1.0})[LB] == "worse"
    off = row(base, new, LB, {**TOLERANCES, "seed_spread_multiplier": 0.0})
    assert off.verdict == "worse" and off.note == "" and off.seed_widening == 0


def test_the_multiplier_defaults_to_2_and_is_checked():
    params = {"compare": {k: v for k, v in TOLERANCES.items() if k != "seed_spread_multiplier"}}
    assert tolerances_from_params(params)["seed_spread_multiplier"] == 2.0
    params["compare"]["seed_spread_multiplier"] = 3
    assert tolerances_from_params(params)["seed_spread_multiplier"] == 3.0
    for bad in (-1, "2", None, True):
        params["compare"]["seed_spread_multiplier"] = bad
        with pytest.raises(CompareInputError, match="compare.seed_spread_multiplier"):
            tolerances_from_params(params)
    # compare_metrics without the key (an older caller) widens by the default 2
    tolerances = {k: v for k, v in TOLERANCES.items() if k != "seed_spread_multiplier"}
    assert row({LB: -120.0, f"{LB}_seed_se": 0.5}, {LB: -121.4}, LB, tolerances).seed_widening == pytest.approx(1.0)


# (c) a per-seed key is widened by one seed's spread, the s.d. = seed s.e. x sqrt(n)
def test_per_seed_keys_widen_by_the_seed_standard_deviation():
    key, prefix = "fig2/mnist/nz20/aevb/seed2/test_lb", "fig2/mnist/nz20/aevb"
    assert family_of(key) == "bound"
    base = {key: -120.0, f"{prefix}/test_lb_seed_se": 0.3, f"{prefix}/seeds": 4}  # s.d. 0.6
    new = {key: -121.6, f"{prefix}/seeds": 1}  # one seed: no spread on this side
    widened = row(base, new, key)  # tolerance 0.5 + 2 x 0.6 = 1.7 (with the s.e. alone it would be 1.1)
    assert widened.verdict == "same"
    assert widened.seed_widening == pytest.approx(1.2)
    assert widened.note == "tolerance widened by seed spread: +1.2 nats (2 x 0.6)"
    assert "seed s.d. 0.6" in widened.rule
    assert verdicts(base, {**new, key: -121.8})[key] == "worse"  # outside 1.7 (n instead of sqrt(n) would pass)
    # both sides: s.d. 0.6 and 0.4 x sqrt(4) = 0.8 in quadrature: 1.0, tolerance 2.5
    new = {key: -122.4, f"{prefix}/test_lb_seed_se": 0.4, f"{prefix}/seeds": 4}
    assert row(base, new, key).seed_widening == pytest.approx(2.0)
    assert verdicts(base, new)[key] == "same"
    assert verdicts(base, {**new, key: -122.6})[key] == "worse"
    # without the seed count a seed's spread is unknown: no widening
    assert verdicts({k: v for k, v in base.items() if k != f"{prefix}/seeds"}, {key: -121.6})[key] == "worse"


def test_per_seed_marginal_likelihoods_keep_their_own_standard_error():
    key, prefix = "fig3/ntrain1000/aevb/seed3/test_ml", "fig3/ntrain1000/aevb"
    assert family_of(key) == "marginal_likelihood" and family_of(f"{prefix}/seed3/test_ml_se") == "info"
    base = {key: -150.0, f"{prefix}/seed3/test_ml_se": 0.1, f"{prefix}/test_ml_seed_se": 0.25, f"{prefix}/seeds": 4}
    new = {key: -151.6, f"{prefix}/seed3/test_ml_se": 0.1}
    # 3 x hypot(0.1, 0.1) + 0.2 + 2 x 0.25 x 2 = 1.62 >= 1.6
    widened = row(base, new, key)
    assert widened.verdict == "same" and widened.seed_widening == pytest.approx(1.0)
    assert verdicts({**base, f"{prefix}/seed3/test_ml_se": 0.0}, {**new, f"{prefix}/seed3/test_ml_se": 0.0})[key] \
        == "worse"  # 0.2 + 1.0 = 1.2 < 1.6: the estimator's own s.e. still counts


# (d) seed spread and seed count keys are informational, never a regression
@pytest.mark.parametrize("key", ["fig2/mnist/nz20/aevb/test_lb_seed_se", "fig3/ntrain1000/aevb/test_ml_seed_se",
                                 "fig3/ntrain1000/aevb/test_ml_is_seed_se", "fig2/mnist/nz20/aevb/seeds",
                                 "fig3/ntrain1000/mcem/seeds", "speed/fig2/mnist_nz20_aevb/samples_per_second_seed_se"])
def test_seed_spread_and_count_keys_are_info(key):
    assert family_of(key) == "info"
    rows = compare_metrics({key: 0.5}, {key: 50.0}, TOLERANCES)
    assert [r.verdict for r in rows] == ["changed"] and regressions(rows) == []
    assert [r.verdict for r in compare_metrics({key: 3}, {key: 3}, TOLERANCES)] == ["same"]
    # gone when NEW has a single seed: shown as removed, but no regression (the mean is still compared)
    rows = compare_metrics({key: 0.5}, {}, TOLERANCES)
    assert [r.verdict for r in rows] == ["removed"] and regressions(rows) == []


def test_other_removed_metrics_still_regress():
    rows = compare_metrics({LB: -120.0, "fig2/mnist/nz20/aevb/seed1/test_lb": -120.0}, {}, TOLERANCES)
    assert len(regressions(rows)) == 2 and regressions(rows, allow_removed=True) == []


# (e) claims: 1 pass, 0.5 inconclusive, 0 fail, for claims/ and claims_paper_at_budget/
@pytest.mark.parametrize("prefix", ["claims/", "claims_paper_at_budget/"])
@pytest.mark.parametrize("base, new, verdict", [
    (1, 0.5, "worse"), (0.5, 0, "worse"), (1, 0, "worse"),
    (0, 0.5, "better"), (0.5, 1, "better"), (0.5, 0.5, "same"),
])
def test_inconclusive_claims_sit_between_pass_and_fail(prefix, base, new, verdict):
    key = prefix + "aevb_better_bound"
    assert family_of(key) == "claim"
    rows = compare_metrics({key: base}, {key: new}, TOLERANCES)
    assert rows[0].verdict == verdict
    assert bool(regressions(rows)) == (verdict == "worse")


# (f) the note and the count of widened metrics are in every output format
SEEDED_BASE = {LB: -120.0, f"{LB}_seed_se": 0.42, "fig2/mnist/nz20/aevb/seeds": 3,
               "fig2/mnist/nz3/aevb/test_lb": -150.0}
SEEDED_NEW = {LB: -120.9, "fig2/mnist/nz20/aevb/seeds": 1, "fig2/mnist/nz3/aevb/test_lb": -150.1}
NOTE = "tolerance widened by seed spread: +0.84 nats (2 x 0.42)"
FOOTER = "1 metric(s) had their tolerance widened by seed spread."


def test_the_note_and_the_widened_count_are_rendered():
    rows = compare_metrics(SEEDED_BASE, SEEDED_NEW, TOLERANCES)
    assert {r.key: r.verdict for r in rows}[LB] == "same"  # 0.9 <= 0.5 + 0.84
    table = render(rows, "table", "base", "new")
    assert table.splitlines()[0].split()[-1] == "note"
    assert NOTE in next(line for line in table.splitlines() if line.startswith(LB + " "))
    assert FOOTER in table and "No regression." in table
    markdown = render(rows, "markdown", "base", "new")
    assert markdown.startswith("| metric | base | new | diff | verdict | note |")
    assert "|---|---:|---:|---:|---|---|" in markdown and f"| {NOTE} |" in markdown and FOOTER in markdown
    payload = json.loads(render(rows, "json", "base", "new"))
    assert payload["widened_by_seed_spread"] == 1
    metrics = {m["key"]: m for m in payload["metrics"]}
    assert metrics[LB]["note"] == NOTE and metrics[LB]["seed_widening"] == pytest.approx(0.84)
    assert metrics["fig2/mnist/nz3/aevb/test_lb"]["note"] == ""


def test_no_note_column_or_count_without_seed_spreads():
    plain = {k: v for k, v in SEEDED_BASE.items() if not k.endswith("_seed_se")}
    rows = compare_metrics(plain, SEEDED_NEW, TOLERANCES)
    table = render(rows, "table", "base", "new")
    assert "note" not in table.splitlines()[0] and "widened" not in table
    assert json.loads(render(rows, "json", "base", "new"))["widened_by_seed_spread"] == 0


@pytest.mark.parametrize("multiplier", [None, 2, 0.5])
def test_the_cli_reads_the_multiplier_from_params_and_defaults_to_2(tmp_path, multiplier):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["compare"].pop("seed_spread_multiplier", None)
    if multiplier is not None:
        params["compare"]["seed_spread_multiplier"] = multiplier
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "base.json").write_text(json.dumps(SEEDED_BASE))
    (tmp_path / "new.json").write_text(json.dumps(SEEDED_NEW))
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "base.json"), str(tmp_path / "new.json"),
                                       "--params", str(tmp_path / "params.yaml")])
    bound = params["compare"]["bound_nats"]
    k = 2 if multiplier is None else multiplier
    expect_same = 0.9 <= bound + k * 0.42
    assert result.exit_code == (0 if expect_same else 1), result.output
    assert f"+{k * 0.42:.3g} nats ({k:g} x 0.42)" in result.output and FOOTER in result.output


# the paper side: no seeds there, but a run's own seed spread still widens its aggregates
def test_the_paper_side_ignores_seed_keys_and_the_run_keeps_its_spread(tmp_path):
    reference = Reference.load(REPO / REFERENCE_DIR)
    at = {LB: -120.0, "fig2/mnist/nz20/aevb/samples": 1_000_000}
    paper_value = paper_metrics(at, reference)[LB]
    ours = {LB: paper_value - 0.8, "fig2/mnist/nz20/aevb/samples": 1_000_000,
            "fig2/mnist/nz20/aevb/seeds": 3, "fig2/mnist/nz20/aevb/seed1/test_lb": paper_value - 0.8,
            "fig2/mnist/nz20/aevb/seed1/samples": 1_000_000}
    paper = paper_metrics({**ours, f"{LB}_seed_se": 0.3}, reference)
    assert set(paper) == {LB}  # no per-seed, seed spread or count keys
    (tmp_path / "plain.json").write_text(json.dumps(ours))
    (tmp_path / "seeded.json").write_text(json.dumps({**ours, f"{LB}_seed_se": 0.3}))
    for spec, verdict, widening in (("plain.json", "worse", 0.0), ("seeded.json", "same", 0.6)):
        for paper_first in (True, False):
            sides = ("paper", str(tmp_path / spec)) if paper_first else (str(tmp_path / spec), "paper")
            base, new = resolve_sides(*sides, REPO, "default")
            rows = compare_metrics(base, new, TOLERANCES)
            assert [r.key for r in rows] == [LB]  # only what the paper shows is compared
            assert rows[0].verdict == ("better" if verdict == "worse" and not paper_first else verdict)
            assert rows[0].seed_widening == pytest.approx(widening)
            assert math.isclose(abs(rows[0].difference), 0.8, abs_tol=1e-9)
