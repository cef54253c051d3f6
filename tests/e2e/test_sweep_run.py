"""The local executor end to end: base → grow → continue + scratch, SIGKILL of the whole sweep and restart,
failures (exception, NaN) isolated, recorded and retried on the next sweep, dry-run plan, status."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from sweep_helpers import E2E_GRID, run_sweep, sweep_cmd, write_grid

from experiments.table import RESULT_COLUMNS, format_status

pytestmark = pytest.mark.slow  # end to end: `make test-fast` (-m 'not slow') leaves it out

WALL_CLOCK = {"tokens_per_s", "wall_time_s", "attempts"}
METRIC_COLS = ["step", "tokens", "flops", "train_loss", "val_loss", "lr"]  # all but the wall-clock ones


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, tiny_data):
    """The E2E grid swept once, uninterrupted: (grid path, sweep dir, completed process)."""
    tmp = tmp_path_factory.mktemp("e2e")
    grid = write_grid(tmp / "e2e.yaml", tiny_data, E2E_GRID)
    t0 = time.perf_counter()
    proc = run_sweep(grid, "--out", tmp / "sweep", "--threads", "1")
    print(f"e2e sweep: {time.perf_counter() - t0:.1f}s wall\n{proc.stdout}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return grid, tmp / "sweep", proc


def _table(sweep: Path) -> pd.DataFrame:
    df = pd.read_csv(sweep / "results.csv")
    return df.drop(columns=[c for c in df.columns if c in WALL_CLOCK]).set_index("run_id").sort_index()


def _meta(ckpt: Path) -> dict:
    return json.loads((ckpt / "stacking_meta.json").read_text())


def test_grid_runs_end_to_end(e2e, capsys):
    _, sweep, proc = e2e
    df = pd.read_csv(sweep / "results.csv")
    assert list(df.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert "cfg.lr" in df.columns and (sweep / "results.parquet").is_file()
    assert (df["status"] == "done").all() and list(df["kind"]) == ["base"] + ["grown"] * 4 + ["scratch"]
    assert pd.read_parquet(sweep / "results.parquet")["run_id"].tolist() == df["run_id"].tolist()
    # one state-change line per event, whole-grid counts first
    assert re.search(r"^\[sweep\] 0/6 done, 1 running, 0 failed: started base-", proc.stdout, re.MULTILINE)
    assert "[sweep] 6/6 done, 0 running, 0 failed: done " in proc.stdout

    base = df[df["kind"] == "base"].iloc[0]
    base_dir = sweep / base["run_dir"]
    log = (base_dir / "train.log").read_text()
    assert log.count("training from scratch") == 1 and "resuming" not in log  # the base is trained once
    assert df["parent_run"].dropna().unique().tolist() == [base["run_id"]]
    for _, r in df[df["kind"] == "grown"].iterrows():
        ckpt = base_dir / "checkpoints" / f"tokens-{int(r['grow_at_tokens']):012d}"
        first = pd.read_csv(sweep / r["run_dir"] / "metrics.csv").iloc[0]
        assert first["tokens"] == 0 and first["flops"] == _meta(ckpt)["flops"] == r["flops_offset"]
        growth = json.loads((sweep / r["grown_dir"] / "growth.json").read_text())
        assert (growth["op"], growth["g"]) == (r["op"], 2)
        assert r["flops"] == pytest.approx(r["flops_offset"] + r["tokens"] * r["flops_per_token"])
    g_zero = df[(df["op"] == "G_zero") & (df["grow_at_tokens"] == 2048)].iloc[0]
    first = pd.read_csv(sweep / g_zero["run_dir"] / "metrics.csv").iloc[0]
    assert first["val_loss"] == pytest.approx(base["final_val_loss"], abs=1e-5)  # G_zero preserves the function
    scratch = df[df["kind"] == "scratch"].iloc[0]
    assert scratch["flops"] >= df.loc[df["kind"] == "grown", "flops"].max() and scratch["tokens"] % 256 == 0

    from experiments.cli import sweep_main

    assert sweep_main(["status", str(sweep)]) == 0
    assert "6 runs: 6 done, 0 failed, 0 pending" in capsys.readouterr().out


def test_status_reads_the_sweep_without_torch_or_litgpt(e2e):
    """`stacking sweep status` only reads plan.json and the run dirs: it must not pay litgpt's/Lightning's
    import (≈ 5–10 s), so a researcher can poll it."""
    _, sweep, _ = e2e
    code = (
        "import sys; from stacking.cli import main; rc = main(['sweep', 'status', sys.argv[1]]); "
        "print('HEAVY', sorted(m for m in ('torch', 'litgpt', 'lightning') if m in sys.modules)); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(sweep)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "6 runs: 6 done, 0 failed, 0 pending" in proc.stdout and "HEAVY []" in proc.stdout


def test_dry_run_prints_the_plan(e2e, tmp_path, capsys):
    from experiments.cli import sweep_main

    grid, sweep, _ = e2e
    assert sweep_main([str(grid), "--out", str(tmp_path / "fresh"), "--dry-run", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "6 runs (1 base, 4 grown, 1 scratch)" in out and "throughput: measured here: 3 timed optimizer steps" in out
    # id, kind, model, tokens, FLOPs, tokens/param, epochs, evaluations, est. time, parent @ d
    assert re.search(
        r"grown-tiny-L4-D32-G_zero-depth-g2-d2048-s0-\w{8}\s+grown\s+tiny-L4-D32\s+3,072\s+\S+\s+0.0439\s+"
        r"0.02\s+4\s+\S+s\s+base-tiny-L4-D32-depth-g2-s0-\w{8} @ d=2,048",
        out,
    ), out
    assert not (tmp_path / "fresh").exists()
    assert sweep_main([str(grid), "--out", str(sweep), "--dry-run"]) == 0  # a finished sweep: its own tokens/s
    out = capsys.readouterr().out
    assert "tokens_per_s of 6 finished run(s)" in out and out.count("[done]") == 6 and "0 run(s) to do" in out


def _last_ckpt_tokens(run_dir: Path) -> int | None:
    p = run_dir / "last.ckpt"
    return torch.load(p, map_location="cpu", weights_only=True)["stacking"]["tokens"] if p.exists() else None


def test_sigkill_mid_sweep_then_restart_gives_the_same_table(e2e, tmp_path):
    grid, reference, _ = e2e
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        sweep_cmd(grid, "--out", sweep, "--jobs", "1", "--threads", "1"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    victim = None
    deadline = time.time() + 180
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            # kill while a grown run (its base done) is mid-training, with a last.ckpt behind it
            runs = sorted((sweep / "runs").glob("grown-*")) if (sweep / "runs").is_dir() else []
            for d in runs:
                try:
                    last = (d / "metrics.csv").read_text().strip().splitlines()[-1].split(",")
                    tokens = int(last[1])
                except (FileNotFoundError, IndexError, ValueError):
                    continue
                if 1280 <= tokens < 2048:  # last.ckpt at 1024 written (a step ago), the end 1,000+ tokens away
                    victim = d
                    break
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner, its forkserver and every worker
        proc.wait()
    assert victim is not None, "the sweep never reached a grown run mid-training"
    time.sleep(0.2)
    summaries = {d.name: d / "summary.json" for d in (sweep / "runs").iterdir() if (d / "summary.json").exists()}
    done_before = {n: p.read_bytes() for n, p in summaries.items() if json.loads(p.read_text())["status"] == "done"}
    resume_at = _last_ckpt_tokens(victim)
    assert resume_at and victim.name not in done_before

    status = format_status(sweep)
    assert re.search(rf"interrupted\s+{victim.name}", status), status
    # results.csv is rebuilt after every finished run: a killed sweep's table already holds what it finished
    partial = pd.read_csv(sweep / "results.csv")
    assert set(partial.loc[partial["state"] == "done", "run_id"]) == set(done_before)

    again = run_sweep(grid, "--out", sweep, "--threads", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(done_before)} run(s) already done, skipped" in again.stdout
    for name, before in done_before.items():  # finished runs were not touched
        assert (sweep / "runs" / name / "summary.json").read_bytes() == before
    log = (victim / "train.log").read_text()  # the victim resumed from its last.ckpt, not from its init
    assert f"last.ckpt at tokens={resume_at:,}" in log, log
    assert log.count("initialised from") == 1

    pd.testing.assert_frame_equal(_table(sweep), _table(reference))
    for d in (reference / "runs").iterdir():
        a = pd.read_csv(d / "metrics.csv")[METRIC_COLS]
        b = pd.read_csv(sweep / "runs" / d.name / "metrics.csv")[METRIC_COLS]
        pd.testing.assert_frame_equal(a, b)


FAIL_GRID = dict(
    name="fail",
    targets=["tiny-L2-D32"],
    ops=["G_stack", "G_zero"],
    g=[2],
    d=[512],
    seeds=[0, 1],
    grown={"tokens": 1024},
)


def test_failures_are_isolated_recorded_and_retried_on_rerun(tmp_path, tiny_data):
    bad_init = tmp_path / "bad-init"
    bad_init.mkdir()
    (bad_init / "lit_model.pth").write_bytes(b"not a checkpoint")
    (bad_init / "model_config.yaml").write_text("n_layer: 1\n")
    grid = dict(
        FAIL_GRID,
        overrides=[
            {"match": "grown-*-G_zero-*-s0", "set": {"lr": "1e30"}},  # NaN at the first evaluation
            {"match": "base-*-s1", "set": {"init_from": str(bad_init)}},  # raises CheckpointError: an exception
        ],
    )
    path = write_grid(tmp_path / "fail.yaml", tiny_data, grid, val_every_tokens=512)
    sweep = tmp_path / "sweep"
    proc = run_sweep(path, "--out", sweep, "--threads", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    df = pd.read_csv(sweep / "results.csv").set_index("run_id")
    by_name = {re.sub(r"-\w{8}$", "", i): r for i, r in df.iterrows()}
    nan = by_name["grown-tiny-L2-D32-G_zero-depth-g2-d512-s0"]
    assert nan["status"].startswith("failed: nan at tokens=")
    assert nan["error_class"] == "nan_loss" and nan["attempts"] == 1
    base1 = by_name["base-tiny-L2-D32-depth-g2-s0".replace("s0", "s1")]
    assert base1["state"] == "failed" and base1["error_class"] == "exception" and base1["attempts"] == 2  # 1 retry
    assert "CheckpointError" in base1["status"]
    assert "CheckpointError" in (sweep / base1["run_dir"] / "error.txt").read_text()
    for op in ("G_stack", "G_zero"):
        row = by_name[f"grown-tiny-L2-D32-{op}-depth-g2-d512-s1"]
        assert row["state"] == "skipped" and base1.name in row["status"]
    done = [n for n, r in by_name.items() if r["state"] == "done"]
    assert sorted(done) == sorted(
        ["base-tiny-L2-D32-depth-g2-s0", "grown-tiny-L2-D32-G_stack-depth-g2-d512-s0"]
        + [n for n in by_name if n.startswith("scratch-")]
    )
    assert len(re.findall(rf"started {base1.name}", proc.stdout)) == 2  # the exception was retried once …
    assert len(re.findall(rf"started {nan.name}", proc.stdout)) == 1  # … the NaN never
    status = format_status(sweep)
    assert re.search(r"failed\s+base-tiny-L2-D32-depth-g2-s1-\w+\s+exception: CheckpointError", status), status
    assert re.search(r"skipped\s+grown-tiny-L2-D32-G_stack-depth-g2-d512-s1-\w+\s+failed dependency base-", status)

    # fix the bad init (a real L1-D32 checkpoint) and sweep again: only the failed and skipped runs execute
    shutil.rmtree(bad_init)
    base0 = sweep / by_name["base-tiny-L2-D32-depth-g2-s0"]["run_dir"]
    shutil.copytree(base0 / "checkpoints" / f"tokens-{512:012d}", bad_init)
    stamps = {n: (sweep / by_name[n]["run_dir"] / "summary.json").stat().st_mtime_ns for n in done}
    again = run_sweep(path, "--out", sweep, "--threads", "1")
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"{len(done)} run(s) already done" in again.stdout
    assert {n: (sweep / by_name[n]["run_dir"] / "summary.json").stat().st_mtime_ns for n in done} == stamps
    df2 = pd.read_csv(sweep / "results.csv").set_index("run_id")
    assert df2.loc[nan.name, "attempts"] == 2 and df2.loc[nan.name, "error_class"] == "nan_loss"  # tried once more only
    assert df2.loc[base1.name, "state"] == "done" and df2.loc[base1.name, "flops_offset"] > 0
    assert (df2["state"] == "done").sum() == len(df2) - 1


def test_grown_run_waits_for_its_checkpoint_not_the_whole_base(tmp_path, tiny_data):
    from experiments.grid import expand, load_grid
    from experiments.local import LocalExecutor

    runs = expand(load_grid(write_grid(tmp_path / "g.yaml", tiny_data, E2E_GRID)))
    base, early, late = runs[0], runs[1], runs[2]  # G_stack at d=1024 and d=2048
    ex = LocalExecutor(tmp_path / "sweep", runs, jobs=1, threads=1, echo=lambda s: None)
    ex.state = {r.id: "pending" for r in runs} | {base.id: "running"}
    assert not ex._ready(early)
    ckpt = tmp_path / "sweep" / early.grow.src
    ckpt.mkdir(parents=True)
    (ckpt / "stacking_meta.json").write_text("{}")
    assert ex._ready(early) and not ex._ready(late)
    ex.state[base.id] = "failed"  # a base failing after d does not take the grown runs at d with it
    ex._skip_blocked()
    assert ex.state[early.id] == "pending" and ex.state[late.id] == "skipped"
    assert ex.reason[late.id] == f"failed dependency {base.id}"


def test_dry_run_throughput_counts_only_each_runs_own_tokens(tmp_path):
    """A cooldown branch's tokens start at its branch point: its own tokens/s, and old summaries without
    start_tokens (whose tokens_per_s counted the main run's tokens too) are left out of the estimate."""
    from types import SimpleNamespace

    from experiments.dryrun import measure_throughput

    def planned(name, kind, summary):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"status": "done", **summary}))
        return SimpleNamespace(config=SimpleNamespace(out_dir=name), kind=kind, model="m", flops_per_token=10.0)

    runs = [
        planned("scratch", "scratch", {"tokens_per_s": 100.0, "start_tokens": 0}),
        planned("old-cooldown", "cooldown", {"tokens_per_s": 500.0}),  # before start_tokens: inflated
        planned("cooldown", "cooldown", {"tokens_per_s": 120.0, "start_tokens": 800}),
    ]
    rates, flop_rate, source = measure_throughput(runs, tmp_path, threads=1)
    assert rates == {"m": 120.0} and flop_rate == 1200.0
    assert "tokens_per_s of 2 finished run(s)" in source
