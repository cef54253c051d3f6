"""The SLURM executor's job graph, without a cluster: submitit's debug executor runs it in-process, and a fake
`sbatch` on PATH shows the exact sbatch scripts (arrays, afterok dependencies) a real cluster would get."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import submitit
import torch
from sweep_helpers import write_grid

from experiments.grid import expand, load_grid
from experiments.provenance import write_plan
from experiments.slurm import SlurmRun, submit_slurm

SLURM_GRID = dict(
    name="slurmtest",
    targets=["tiny-L2-D32"],
    ops=["G_stack"],
    g=[2],
    d=[256, 512],
    seeds=[3],
    grown={"tokens": 512},
    slurm={"partition": "debugq", "timeout_min": 30, "array_parallelism": 4, "additional": {"account": "proj"}},
)


def _setup(tmp_path, tiny_data):
    path = write_grid(tmp_path / "slurm.yaml", tiny_data, SLURM_GRID, val_every_tokens=256)
    grid = load_grid(path)
    runs = expand(grid)
    sweep = tmp_path / "sweep"
    write_plan(sweep, path, grid, runs)
    return grid, runs, sweep


def _check_graph(records, runs):
    base = next(r for r in runs if r.kind == "base")
    job = {rec["run_id"]: rec for rec in records}
    assert [rec["run_id"] for rec in records] == [r.id for r in runs if r.kind != "grown"] + [
        r.id for r in runs if r.kind == "grown"
    ]  # level 0 first (one array), then the grown runs
    for r in runs:
        dep = job[r.id]["dependency"]
        if r.kind == "grown":
            assert dep == f"afterok:{job[base.id]['job_id']}"
        else:
            assert dep is None
    return job


def test_debug_executor_runs_the_job_graph(tmp_path, tiny_data):
    grid, runs, sweep = _setup(tmp_path, tiny_data)
    records = submit_slurm(sweep, runs, grid.slurm, cluster="debug")
    _check_graph(records, runs)
    assert all(isinstance(rec["job"], submitit.local.debug.DebugJob) for rec in records)
    job = records[0]["job"]
    fn = job.submission().function
    assert isinstance(fn, SlurmRun) and isinstance(fn, submitit.helpers.Checkpointable)
    assert fn.checkpoint().function is fn  # requeue = resubmit the same callable; the run resumes from last.ckpt

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        statuses = [rec["job"].result() for rec in records]  # the debug executor runs each job here, in order
    finally:
        torch.set_num_threads(threads)
    assert [s["status"] for s in statuses] == ["done"] * len(runs)
    df = pd.read_csv(sweep / "results.csv")  # every job rebuilds the table when it ends
    assert (df["status"] == "done").all() and len(df) == len(runs)
    grown = df[df["kind"] == "grown"]
    assert (grown["flops_offset"] > 0).all()
    assert submit_slurm(sweep, runs, grid.slurm, cluster="debug") == []  # done runs are never resubmitted


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`sbatch` that keeps each script and answers like SLURM; `srun` so submitit believes it is on a cluster."""
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    log.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\nn=$(( $(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 1000) + 1 ))\n'
        'echo $n > "$FAKE_SLURM/counter"\ncp "$1" "$FAKE_SLURM/job-$n.sh"\necho "Submitted batch job $n"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(log))
    return log


def test_sbatch_scripts_carry_the_dependencies(tmp_path, tiny_data, fake_slurm):
    grid, runs, sweep = _setup(tmp_path, tiny_data)
    records = submit_slurm(sweep, runs, grid.slurm, cluster="slurm")
    job = _check_graph(records, runs)
    base = next(r for r in runs if r.kind == "base")
    assert job[base.id]["job_id"] == "1001_0"  # task 0 of the level-0 array
    scripts = {int(p.stem.split("-")[1]): p.read_text() for p in fake_slurm.glob("job-*.sh")}
    assert sorted(scripts) == [1001, 1002, 1003]
    level0 = scripts[1001]
    assert "#SBATCH --array=0-1%2" in level0 and "--dependency" not in level0
    for n in (1002, 1003):
        s = scripts[n]
        assert "#SBATCH --dependency=afterok:1001_0" in s and "#SBATCH --kill-on-invalid-dep=yes" in s
        assert re.search(r"#SBATCH --job-name=slurmtest:grown-tiny-L2-D32-G_stack-depth-g2-d\d+-s3", s)
    for s in scripts.values():
        assert "#SBATCH --partition=debugq" in s and "#SBATCH --account=proj" in s and "#SBATCH --time=30" in s
    assert (Path(sweep) / "slurm_jobs.json").is_file()
