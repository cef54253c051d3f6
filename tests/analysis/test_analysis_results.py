"""Reading a sweep dir: the results table, metrics.csv, and the tidy tables the fits use."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.sweep import (
    AnalysisError,
    chinchilla_points,
    compute_frontier,
    isoflop_points,
    load_sweep,
    loss_at_flops,
    loss_compute_points,
    method_label,
    read_metrics,
    to_jsonable,
    val_curve,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sweep_small"
NEW_COLUMNS = ["anneal_fraction", "decay_tokens"]


@pytest.fixture(scope="module")
def sweep():
    return load_sweep(FIXTURE)


def test_fixture_loads_with_every_kind(sweep):
    counts = sweep.results["kind"].value_counts().to_dict()
    assert counts == {"grown": 30, "scratch": 6, "base": 6, "cooldown": 72}
    assert set(sweep.runs("grown")["op"]) == {"G_stack", "G_zero", "G_random"}
    assert sweep.results["target"].nunique() == 3 and sweep.results["seed"].nunique() == 2
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 200 * 1024


def test_grown_curves_start_at_the_base_flops(sweep):
    for _, r in sweep.runs("grown").iterrows():
        c = sweep.curve(r["run_id"])
        base = sweep.row(r["parent_run"])
        assert c["tokens"].iloc[0] == 0
        assert c["flops"].iloc[0] == pytest.approx(base["flops_per_token"] * r["grow_at_tokens"], rel=1e-5)
        assert c["flops"].iloc[0] == pytest.approx(r["flops_offset"], rel=1e-5)


def test_missing_results_table_is_one_clear_error(tmp_path):
    with pytest.raises(AnalysisError, match="results.csv not found: the results table is written by `stacking sweep`"):
        load_sweep(tmp_path)
    with pytest.raises(AnalysisError, match="does not exist or is not a directory"):
        load_sweep(tmp_path / "nope")


def test_results_parquet_is_read_when_there_is_no_csv(tmp_path, sweep):
    sweep.results.to_parquet(tmp_path / "results.parquet", index=False)
    (tmp_path / "runs").symlink_to(FIXTURE / "runs")
    again = load_sweep(tmp_path)
    assert len(again.results) == len(sweep.results)
    rid = again.runs("grown")["run_id"].iloc[0]
    pd.testing.assert_frame_equal(again.curve(rid), sweep.curve(rid))


def test_missing_columns_and_bad_kinds_are_named(tmp_path):
    res = pd.read_csv(FIXTURE / "results.csv")
    res.drop(columns=["flops", "grow_at_tokens"]).to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(AnalysisError, match=r"missing column\(s\) grow_at_tokens, flops \(see docs/formats.md\)"):
        load_sweep(tmp_path)
    res.assign(kind="teacher").to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(AnalysisError, match="column kind has value.s. teacher; valid: base, cooldown, grown, scratch"):
        load_sweep(tmp_path)


def test_old_results_without_cooldown_columns_load(tmp_path, sweep):
    old = pd.read_csv(FIXTURE / "results.csv")
    old = old[old["kind"] != "cooldown"].drop(columns=NEW_COLUMNS)
    old.to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "runs").symlink_to(FIXTURE / "runs")
    again = load_sweep(tmp_path)
    assert len(again.results) == 42 and again.results[NEW_COLUMNS].isna().all().all()
    rid = again.runs("scratch")["run_id"].iloc[0]
    assert again.annealed_curve(rid).empty and again.cooldowns(rid).empty
    pd.testing.assert_frame_equal(again.curve(rid), sweep.curve(rid))


def test_cooldown_rows_are_checked(tmp_path):
    res = pd.read_csv(FIXTURE / "results.csv")
    cd = res.index[res["kind"] == "cooldown"][0]
    bad = res.copy()
    bad.loc[cd, "parent_run"] = "nope"
    bad.to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(
        AnalysisError, match=f"cooldown run {res.loc[cd, 'run_id']} has parent_run 'nope', which is not"
    ):
        load_sweep(tmp_path)
    bad = res.copy()
    bad.loc[cd, "anneal_fraction"] = np.nan
    bad.to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(AnalysisError, match=f"cooldown run {res.loc[cd, 'run_id']} has no anneal_fraction > 0"):
        load_sweep(tmp_path)


def test_annealed_curve_of_a_main_run(sweep):
    s = sweep.runs("scratch").iloc[0]
    a = sweep.annealed_curve(s["run_id"])
    assert a["anneal_fraction"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert a["tokens"].tolist() == [f * s["tokens"] for f in (0.25, 0.5, 0.75, 1.0)]
    assert np.allclose(a["flops"], s["flops_per_token"] * a["tokens"])
    assert (a["val_loss"] < sweep.curve(s["run_id"]).set_index("tokens").loc[a["tokens"], "val_loss"].to_numpy()).all()
    # a grown run's cooldowns are on its counters: tokens since growth, FLOPs including the base's
    g = sweep.runs("grown")
    g = g[(g["op"] == "G_stack") & (g["grow_at_tokens"] == 1e7)].iloc[0]
    a = sweep.annealed_curve(g["run_id"])
    assert np.allclose(a["flops"], g["flops_offset"] + g["flops_per_token"] * a["tokens"])
    assert a["tokens"].iloc[-1] == g["tokens"]
    for _, cd in sweep.cooldowns(g["run_id"]).iterrows():  # metrics.csv: from the branch point to the end
        m = sweep.curve(cd["run_id"])
        f = cd["anneal_fraction"]
        assert m["tokens"].iloc[0] == pytest.approx((1 - cd["decay_tokens"] / cd["tokens"]) * f * g["tokens"])
        assert m["tokens"].iloc[-1] == cd["tokens"] and m["val_loss"].iloc[-1] == cd["final_val_loss"]
        assert method_label(cd) == f"G_stack g=2 d=10M cooldown f={f:g}"


def test_metrics_without_val_loss_and_missing_metrics(tmp_path, sweep):
    (tmp_path / "metrics.csv").write_text("step,tokens,flops,train_loss\n0,0,0,5.0\n")
    with pytest.raises(AnalysisError, match=r"missing column\(s\) val_loss"):
        read_metrics(tmp_path / "metrics.csv")
    shutil.copy(FIXTURE / "results.csv", tmp_path / "results.csv")
    broken = load_sweep(tmp_path)  # results.csv without any run dirs
    rid = broken.results["run_id"].iloc[0]
    with pytest.raises(AnalysisError, match="metrics.csv not found"):
        broken.curve(rid)


def test_val_curve_keeps_evaluation_rows_only():
    m = pd.DataFrame(
        {"tokens": [0, 10, 10, 20, 30], "flops": [0, 1, 1, 2, 3], "val_loss": [5.0, np.nan, 4.0, np.nan, 3.0]}
    )
    c = val_curve(m)
    assert c["tokens"].tolist() == [0, 10, 30] and c["val_loss"].tolist() == [5.0, 4.0, 3.0]


def test_loss_at_flops_interpolates_in_log_space():
    c = pd.DataFrame({"tokens": [0, 1, 2], "flops": [0.0, 100.0, 400.0], "val_loss": [9.0, 4.0, 1.0]})
    assert loss_at_flops(c, 200.0) == pytest.approx(2.0)  # halfway in log FLOPs → geometric mean of losses
    assert np.isnan(loss_at_flops(c, 1000.0)) and np.isnan(loss_at_flops(c, 50.0))


def test_tidy_tables_for_the_fits(sweep):
    pts = loss_compute_points(sweep)
    assert set(pts["method"]) == {
        "scratch",
        "G_stack g=2 d=2.5M",
        "G_stack g=2 d=10M",
        "G_stack g=2 d=40M",
        "G_zero g=2 d=10M",
        "G_random g=2 d=10M",
    }
    front = compute_frontier(pts)
    for _, grp in front.groupby("method"):
        assert np.all(np.diff(grp["loss"].to_numpy()) < 0)  # each new frontier point is a new minimum
    cooldown_ids = set(sweep.runs("cooldown")["run_id"])
    assert not cooldown_ids & set(pts["run_id"])  # cooldown runs enter no analysis but the annealed speed-up
    cp = chinchilla_points(sweep)
    assert sorted(cp["N"].unique()) == [1e6, 4e6, 1.6e7] and (cp["D"] >= 1e7).all()
    assert not cooldown_ids & set(cp["run_id"]) and cp.groupby("run_id").ngroups == 6
    iso = isoflop_points(sweep)
    assert set(iso["op"]) == {"G_stack"} and iso["d"].nunique() == 3 and (iso["n_seeds"] == 2).all()
    assert iso["loss"].notna().all()


def test_method_label_and_jsonable():
    row = {"kind": "grown", "op": "G_direct", "direction": "width", "g": 2.0, "grow_at_tokens": 2.5e9}
    assert method_label(row) == "G_direct(width) g=2 d=2.5B"
    assert to_jsonable({"a": np.float64("nan"), "b": [np.int64(3), np.bool_(True)]}) == {"a": None, "b": [3, True]}


def test_loss_curves_show_cooldowns_as_markers_only(sweep):
    from analysis.plots import plot_loss_curves

    fig = plot_loss_curves(sweep, "toy-4M")
    ax_t, ax_f = fig.axes
    for ax in (ax_t, ax_f):
        lines = ax.get_lines()
        markers = [ln for ln in lines if ln.get_marker() == "v"]
        # 2 scratch + 2 G_stack(10M) + 2 G_random runs have cooldowns: one set of 4 annealed markers each
        assert len(markers) == 6 and all(len(ln.get_xdata()) == 4 for ln in markers)
        curves = [ln for ln in lines if ln.get_linestyle() != "None"]
        assert len(curves) == 2 + 10 + 2  # scratch, grown and base runs of toy-4M; no cooldown curve
    assert "annealed (cooldown end)" in [t.get_text() for t in ax_f.get_legend().get_texts()]
