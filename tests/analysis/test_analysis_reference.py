"""The seed-spread reference and its sidecar (analysis/reference.py, analysis/seed_spread.py): numerics hashes that ignore where files are
written and follow a run back to its base; the builder round-trips; the report prints the reference's provenance
and warns where this sweep's runs do not reproduce the reference's or are configured differently."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import report_main
from analysis.reference import build_reference, main
from analysis.report import speedup_tables, write_report
from analysis.seed_spread import (
    COMPARED_KINDS,
    IO_FIELDS,
    MEASURE_FIELDS,
    SOURCE_FIELDS,
    check_reference,
    meta_path,
    numerics_hash,
    read_meta,
    run_name,
)
from analysis.sweep import AnalysisError, load_sweep
from stacking.config import RunConfig

FIXTURES = Path(__file__).parents[1] / "fixtures"
GIT = {"sha": "abc123456789def", "dirty": False}
VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6", "lightning": "2.6.6", "litgpt": "0.5.13"}
RUN = "grown-toy-1M-G_stack-g2-d10000000-s0"


def _plan_runs(key: str) -> dict[str, dict]:
    plans = json.loads(gzip.decompress((FIXTURES / "plans.json.gz").read_bytes()))
    return {r["id"]: r for r in plans[key]["runs"]}


def _hashes(runs: dict[str, dict]) -> dict[str, str | None]:
    data = {r["config"]["data_dir"]: "data:stdlib" for r in runs.values()}
    return {run_name(rid): numerics_hash(rid, runs, data) for rid in runs}


def test_demo_runs_are_the_replicates_seed_0_by_numerics_not_by_id():
    """demo.yaml and replicate.yaml --scale demo (tests/fixtures/plans.json.gz): other ids (the replicate's base
    trains to 1.31M tokens with more checkpoints, its runs save more states), the same numerics for every run the
    speed-ups read; the base itself differs (its own final loss is at another token)."""
    demo, rep = _plan_runs("demo.yaml[-]"), _plan_runs("replicate.yaml[demo]")
    mine, theirs = _hashes(demo), _hashes(rep)
    rep_ids = {run_name(rid): rid for rid in rep}
    compared = [r for r in demo.values() if r["kind"] in COMPARED_KINDS]
    assert len(compared) == 6
    for r in compared:
        name = run_name(r["id"])
        assert rep_ids[name] != r["id"] and mine[name] == theirs[name], name
    base = next(run_name(r["id"]) for r in demo.values() if r["kind"] == "base")
    assert mine[base] != theirs[base]
    # a cooldown from its main run's start (anneal.at_scratch_flops: no saved state before its branch point) starts
    # from the grown dir, whose name differs between the grids: it is followed to its grow step and base
    cool = "cooldown-tiny-L8-D32-G_stack-depth-g2-d327680-s0-f100"
    for runs in (demo, rep):
        next(r for r in runs.values() if run_name(r["id"]) == cool)["config"]["branch_from"] = None
    from_start = _hashes(demo)[cool]
    assert from_start == _hashes(rep)[cool] and from_start != mine[cool]
    # a replayed data stream and the base's own LR schedule (another grid's plan) change the grown runs' numerics
    other = _hashes(_plan_runs("variant:demo+base_lr+replay"))
    assert (
        other["grown-tiny-L8-D32-G_stack-depth-g2-d327680-s0"] != mine["grown-tiny-L8-D32-G_stack-depth-g2-d327680-s0"]
    )


def test_numerics_hash_follows_the_base_and_needs_the_data_id():
    demo = _plan_runs("demo.yaml[-]")
    data = {r["config"]["data_dir"]: "data:stdlib" for r in demo.values()}
    grown = next(rid for rid, r in demo.items() if r["kind"] == "grown")
    cool = next(rid for rid, r in demo.items() if r["branch_of"] == grown)
    before = numerics_hash(grown, demo, data), numerics_hash(cool, demo, data)
    base = demo[demo[grown]["parent"]]["config"]
    base["checkpoint_every_tokens"] = 4096  # where files go: no number changes
    assert (numerics_hash(grown, demo, data), numerics_hash(cool, demo, data)) == before
    base["lr"] *= 2  # the base's LR changes its state at d, so the grown run and its cooldown
    after = numerics_hash(grown, demo, data), numerics_hash(cool, demo, data)
    assert after[0] != before[0] and after[1] != before[1]
    assert numerics_hash(grown, demo, {}) is None  # data id not recorded: unknown, not guessed
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(IO_FIELDS + MEASURE_FIELDS + SOURCE_FIELDS) <= fields


def _plan(results: pd.DataFrame) -> dict:
    """A plan.json for the fixture's runs: constant LR, grown runs grown from their base at d, cooldowns branched
    from their main run (enough config for the numerics hash)."""
    runs = []
    for _, r in results.iterrows():
        cfg = dict(data_dir="data/toy", schedule="constant", lr=1e-3, min_lr=1e-4, decay_tokens=0, seed=int(r["seed"]))
        cfg.update(max_tokens=int(r["tokens"]), out_dir=f"runs/{r['run_id']}", init_from=None, branch_from=None)
        run = {"id": r["run_id"], "name": run_name(r["run_id"]), "kind": r["kind"], "config": cfg, "grow": None}
        if r["kind"] == "grown":
            d = int(r["grow_at_tokens"])
            src = f"runs/{r['parent_run']}/checkpoints/tokens-{d:012d}"
            run["grow"] = dict(src=src, dst=f"grown/{r['run_id']}", op=r["op"], direction="depth", g=2, seed=0)
            cfg["init_from"] = f"grown/{r['run_id']}"
        if r["kind"] == "cooldown":
            cfg.update(schedule="wsd", decay_tokens=int(r["tokens"]) // 5)
            cfg["branch_from"] = f"runs/{r['parent_run']}/states/tokens-{int(r['tokens']) * 4 // 5:012d}.ckpt"
        runs.append(run)
    return {"grid": "grid.yaml", "git": GIT, "versions": VERSIONS, "data": {"data/toy": "data:toy"}, "runs": runs}


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """One target of the committed fixture (its 38 runs; the runs dir linked), with a plan.json and a grid that
    names reference/spread.csv as its seed spread."""
    res = pd.read_csv(FIXTURES / "sweep_small" / "results.csv")
    res = res[res["target"] == "toy-1M"]
    out = tmp_path / "sweep"
    out.mkdir()
    res.to_csv(out / "results.csv", index=False)
    (out / "runs").symlink_to(FIXTURES / "sweep_small" / "runs")
    (out / "plan.json").write_text(json.dumps(_plan(res)))
    (out / "grid.yaml").write_text("name: small\nseed_spread: reference/spread.csv\n")
    return out


def test_builder_round_trips(sweep_dir):
    ref = sweep_dir / "reference" / "spread.csv"
    meta = build_reference(sweep_dir, ref)
    assert read_meta(ref) == meta and meta_path(ref) == sweep_dir / "reference" / "spread.meta.json"
    sweep = load_sweep(sweep_dir)
    assert ref.read_text() == speedup_tables(sweep).to_csv(index=False)
    done = sweep.runs()
    done = done[done["kind"].isin(COMPARED_KINDS)]
    assert sorted(r["run_id"] for r in meta["runs"]) == sorted(done["run_id"])
    assert all(r["numerics_hash"] and r["final_val_loss"] is not None for r in meta["runs"])
    assert (meta["git"], meta["versions"], meta["data"]) == (GIT, VERSIONS, {"data/toy": "data:toy"})
    check = check_reference(sweep, meta)
    assert check.compared == check.hashes_compared == len(done) and not check.mismatched and not check.drifted
    assert main([str(sweep_dir / "nope"), str(ref)]) == 2


def test_report_quotes_the_provenance_and_warns_of_nothing_when_the_runs_reproduce(sweep_dir, tmp_path, capsys):
    build_reference(sweep_dir, sweep_dir / "reference" / "spread.csv")
    assert report_main([str(sweep_dir), "--out", str(tmp_path / "rep"), "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err
    md = (tmp_path / "rep" / "report.md").read_text()
    spread = next(line for line in md.splitlines() if line.startswith("Seed spread"))
    assert spread.startswith(
        "Seed spread of this configuration, measured on a seeded sweep of it (`reference/spread.csv`, made at git "
        "abc123456789; python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6, lightning 2.6.6, litgpt 0.5.13; data:toy), "
    )
    assert "WARNING" not in md and "warning" not in err
    assert (tmp_path / "rep" / "speedups.csv").read_bytes() == (sweep_dir / "reference" / "spread.csv").read_bytes()


def _perturbed(sweep_dir: Path, **changes) -> dict:
    ref = sweep_dir / "reference" / "spread.csv"
    meta = build_reference(sweep_dir, ref)
    for r in meta["runs"]:
        if r["name"] in changes:
            r.update(changes[r["name"]])
    meta_path(ref).write_text(json.dumps(meta))
    return meta


def test_a_seed_0_loss_that_does_not_reproduce_is_a_warning_with_both_numbers(sweep_dir, tmp_path, capsys):
    loss = float(
        pd.read_csv(sweep_dir / "results.csv").set_index("run_id").filter(like=RUN, axis=0)["final_val_loss"].iloc[0]
    )
    meta = _perturbed(sweep_dir, **{RUN: {"final_val_loss": loss + 5e-5}})  # within 1e-4: the same run
    assert not check_reference(load_sweep(sweep_dir), meta).drifted
    meta = _perturbed(sweep_dir, **{RUN: {"final_val_loss": loss + 0.002}})
    meta_path(sweep_dir / "reference" / "spread.csv").write_text(
        json.dumps({**meta, "git": {"sha": "9548287"}, "versions": None, "data": None})
    )
    assert report_main([str(sweep_dir), "--out", str(tmp_path / "rep"), "--bootstrap", "0"]) == 0
    out, err = capsys.readouterr()
    warning = (
        "seed spread: this sweep's runs do not reproduce the same runs of the reference `reference/spread.csv` "
        f"(final val loss differs by more than 0.0001: {RUN} {loss:.6g} here, {loss + 0.002:.6g} in the reference). "
        "Likely causes: the code (git abc123456789 here, 9548287 in the reference), the versions (not recorded in "
        "the reference), the data (not recorded in the reference), or else the machine (CPU kernels, thread count). "
        "The quoted spread describes the reference's runs, not these: rebuild it from a seeded sweep made with this "
        "code (python -m analysis.reference SWEEP_DIR reference/spread.csv)."
    )
    assert f"warning: {warning}" in err and "WARNING" not in out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"- WARNING: {warning}" in md
    spread = next(line for line in md.splitlines() if line.startswith("Seed spread"))
    assert "its runs do not reproduce here: see the warning in Notes" in spread


def test_a_differently_configured_run_is_a_mismatch_warning_not_a_comparison(sweep_dir, tmp_path, capsys):
    build_reference(sweep_dir, sweep_dir / "reference" / "spread.csv")
    plan = json.loads((sweep_dir / "plan.json").read_text())
    scratch = next(r for r in plan["runs"] if r["name"] == "scratch-toy-1M-s0")
    scratch["config"]["lr"] = 2e-3  # this sweep's scratch s0 (and so its cooldowns) on another LR
    (sweep_dir / "plan.json").write_text(json.dumps(plan))
    sweep = load_sweep(sweep_dir)
    check = check_reference(sweep, read_meta(sweep_dir / "reference" / "spread.csv"))
    names = [m[0] for m in check.mismatched]
    assert names == [f"cooldown-scratch-toy-1M-s0-f{f}" for f in ("0.25", "0.5", "0.75", "1")] + ["scratch-toy-1M-s0"]
    rep = write_report(sweep_dir, tmp_path / "rep", bootstrap=0)
    assert len(rep.warnings) == 1 and rep.warnings[0].startswith(
        "seed spread: the reference `reference/spread.csv` summarizes runs configured differently from this sweep's "
        "runs of the same name (numerics hash: cooldown-scratch-toy-1M-s0-f0.25 "
    )
    assert "not comparable with this sweep's numbers" in rep.warnings[0]
    spread = next(line for line in rep.path.read_text().splitlines() if line.startswith("Seed spread"))
    assert spread.startswith("Seed spread quoted from a seeded sweep of differently configured runs (")


def test_a_reference_without_sidecar_is_quoted_with_a_note(sweep_dir, tmp_path):
    ref = sweep_dir / "reference" / "spread.csv"
    build_reference(sweep_dir, ref)
    meta_path(ref).unlink()
    rep = write_report(sweep_dir, tmp_path / "rep", bootstrap=0)
    assert not rep.warnings
    assert any("has no sidecar spread.meta.json" in n for n in rep.notes)
    assert "provenance unknown: no sidecar" in rep.path.read_text()
    meta_path(ref).write_text("{}")
    with pytest.raises(AnalysisError, match="not a seed-spread sidecar of format 1"):
        write_report(sweep_dir, tmp_path / "rep", bootstrap=0)


def test_the_shipped_reference_has_its_sidecar():
    ref = Path(__file__).parents[2] / "experiments" / "grids" / "reference" / "replicate_demo_speedups.csv"
    meta = read_meta(ref)
    # built by `python -m analysis.reference` from replicate.yaml --scale demo (3 seeds, the d sweep) at 941970c
    assert meta["git"]["sha"].startswith("941970c") and meta["speedups"] == ref.name
    assert meta["versions"]["torch"] and meta["data"] and len(meta["runs"]) == 72
    names = {run_name(rid) for rid, r in _plan_runs("demo.yaml[-]").items() if r["kind"] in COMPARED_KINDS}
    shipped = {r["name"]: r for r in meta["runs"]}
    assert names <= set(shipped)  # every run demo.yaml compares has its reference run, by name, with a hash
    assert all(shipped[n]["numerics_hash"] and shipped[n]["seed"] == 0 for n in names)
