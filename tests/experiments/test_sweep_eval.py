"""A grid's ``eval:`` (experiments/evaluation.py): the schema field and its one-line errors, plans that do not move,
and end to end (lm-eval, the offline tasks of `stacking eval-tasks`): a sweep that evaluates the scratch, grown and
f = 1 cooldown runs after training them, the columns in results.csv and the downstream table in the report, and
`eval:` added to a finished sweep — a failed evaluation recorded, then the runs evaluated without retraining."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sweep_helpers import E2E_GRID, run_sweep, write_grid
from test_plans_unchanged import REPO, _recorded, case_key, fake_corpora, plan_of

from experiments.grid import EvalSpec, GridError, expand, parse_grid

needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed (pip install -e '.[eval]')"
)
EVAL = {"tasks": ["nextline_mc", "heldout_ppl"], "include_path": "eval_tasks/x", "limit": 10}


def _grid(**extra) -> dict:
    return {**E2E_GRID, "defaults": {"data_dir": "data/nowhere"}, **extra}


def test_eval_field_parses_with_its_defaults():
    grid = parse_grid(_grid(eval=EVAL), "g.yaml")
    assert grid.eval == EvalSpec(
        tasks=["nextline_mc", "heldout_ppl"], include_path=["eval_tasks/x"], limit=10, num_fewshot=None, batch_size=16
    )
    assert parse_grid(_grid(), "g.yaml").eval is None
    assert parse_grid(_grid(eval={"tasks": "hellaswag"}), "g.yaml").eval.tasks == ["hellaswag"]


@pytest.mark.parametrize(
    "spec,message",
    [
        ({}, "g.yaml.eval: missing field 'tasks'"),
        ({"tasks": []}, r"g.yaml: eval.tasks must list at least one lm-eval task name"),
        ({"tasks": [""]}, r"g.yaml: eval.tasks must list at least one lm-eval task name"),
        ({"tasks": ["a"], "limt": 5}, r"g.yaml.eval: unknown field 'limt' \(did you mean 'limit'\?\)"),
        ({"tasks": ["a"], "limit": 0}, "g.yaml: eval.limit must be an integer >= 1, got 0"),
        ({"tasks": ["a"], "limit": 0.5}, r"g.yaml.eval.limit: expected an integer, got 0.5"),
        ({"tasks": ["a"], "num_fewshot": -1}, "g.yaml: eval.num_fewshot must be an integer >= 0, got -1"),
        ({"tasks": ["a"], "batch_size": 0}, "g.yaml: eval.batch_size must be an integer >= 1, got 0"),
        ("nextline_mc", "g.yaml.eval: expected a mapping of EvalSpec fields"),
    ],
)
def test_eval_field_errors_are_one_line_before_any_compute(spec, message):
    with pytest.raises(GridError, match=message) as err:
        expand(parse_grid(_grid(eval=spec), "g.yaml"), where="g.yaml")  # the data dir is never read
    assert "\n" not in str(err.value)


def test_eval_tasks_are_checked_at_sweep_start(tmp_path, monkeypatch):
    from experiments.evaluation import check_tasks

    with pytest.raises(
        GridError,
        match=r"g.yaml: eval.include_path '.*nope' is not a dir; build the offline tasks "
        r"with `stacking eval-tasks --data_dir DATA --out .*nope`",
    ):
        check_tasks(EvalSpec(tasks=["a"], include_path=[str(tmp_path / "nope")]), "g.yaml")
    import stacking.evaluate as ev

    def unknown(tasks, include_path):
        raise ev.EvalError("unknown task(s) nextline_mx; see `lm-eval ls tasks` or pass --include_path")

    with monkeypatch.context() as m:
        m.setattr(ev, "require_lm_eval", lambda: None)
        m.setattr(ev, "task_manager", unknown)
        with pytest.raises(
            GridError,
            match=r"^g.yaml: eval: unknown task\(s\) nextline_mx; see `lm-eval ls tasks` or "
            r"pass eval.include_path$",
        ):
            check_tasks(EvalSpec(tasks=["nextline_mx"], include_path=[str(tmp_path)]), "g.yaml")
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(GridError, match=r"g.yaml: eval: lm-eval is not installed; pip install -e '.\[eval\]'"):
        check_tasks(EvalSpec(tasks=["a"], include_path=[str(tmp_path)]), "g.yaml")


def test_eval_leaves_every_run_id_and_plan_unchanged(tmp_path):
    """Evaluation settings are not training settings: a shipped grid with eval: plans exactly what is recorded."""
    root = tmp_path.resolve()
    fake_corpora(root)
    recorded = _recorded()
    for name in ("seeds.yaml", "demo.yaml"):
        path = REPO / "experiments" / "grids" / name
        raw = yaml.safe_load(path.read_text())
        raw["eval"] = EVAL
        with_eval = tmp_path / name
        with_eval.write_text(yaml.safe_dump(raw))
        plan = plan_of(with_eval, raw.get("scale"), root)
        assert plan == recorded[case_key(path, raw.get("scale"))], name


# ---- end to end: needs lm-eval ----------------------------------------------------------------------------------
GRID = {
    **E2E_GRID,
    "ops": ["G_stack"],
    "d": [1024],
    "seeds": [0, 1],
    "anneal": {"fractions": [0.5, 1.0], "decay_fraction": 0.25},
}
"""Per seed: a base, a grown and a scratch run, and a cooldown at 0.5 and 1.0 of each main run (14 runs)."""


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory, tiny_data) -> Path:
    from stacking.eval_data import build_tasks

    return build_tasks(tiny_data, tmp_path_factory.mktemp("tasks") / "tiny", n_mc=40, n_ppl=20, max_doc_tokens=256)


def _eval_grid(path: Path, data: Path, tasks: Path, grid: dict, **eval_extra) -> Path:
    return write_grid(
        path,
        data,
        {
            **grid,
            "eval": {"tasks": ["nextline_mc", "heldout_ppl"], "include_path": str(tasks), "limit": 8, **eval_extra},
        },
        schedule="constant",
    )


@pytest.mark.slow
@needs_lm_eval
def test_sweep_evaluates_the_loss_tables_checkpoints(tmp_path, tiny_data, tasks_dir):
    grid = _eval_grid(tmp_path / "g.yaml", tiny_data, tasks_dir, GRID)
    proc = run_sweep(grid, "--out", tmp_path / "sweep", "--threads", "1", "--jobs", "2", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sweep = tmp_path / "sweep"
    df = pd.read_csv(sweep / "results.csv")
    evaluated = df["kind"].isin(["grown", "scratch"]) | (df["anneal_fraction"] == 1.0)
    assert evaluated.sum() == 8 and (df["status"] == "done").all()
    assert (df.loc[evaluated, "eval_status"] == "done").all() and df.loc[~evaluated, "eval_status"].isna().all()
    for col in (
        "eval_nextline_mc_acc",
        "eval_nextline_mc_acc_norm",
        "eval_heldout_ppl_token_loss",
        "eval_heldout_ppl_token_perplexity",
        "eval_heldout_ppl_bits_per_byte",
    ):
        assert df.loc[evaluated, col].notna().all() and df.loc[~evaluated, col].isna().all(), col
    assert list(df.columns[-8:-6]) == ["variant", "eval_status"]  # after every existing column
    for _, r in df.iterrows():
        files = [f for f in (sweep / r["run_dir"]).glob("eval/*.json") if f.name != "val_docs.json"]
        assert len(files) == int(evaluated[_]), r["run_id"]
        assert (sweep / r["run_dir"] / "eval" / "val_docs.json").is_file() == bool(evaluated[_])  # the doc CI's data
        if evaluated[_]:
            assert json.loads((sweep / r["run_dir"] / "status.json").read_text())["eval"]["val_docs"] == "done"
    scratch = df[df["kind"] == "scratch"].iloc[0]
    record = json.loads(next((sweep / scratch["run_dir"]).glob("eval/*.json")).read_text())
    assert record["checkpoint"]["path"].endswith(f"tokens-{int(scratch['tokens']):012d}")
    assert record["eval"]["limit"] == 8 and record["n-samples"]["nextline_mc"]["effective"] == 8
    assert proc.stdout.count("evaluated ") == 8 and "evaluation failed" not in proc.stdout
    plan = json.loads((sweep / "plan.json").read_text())
    assert plan["eval"]["include_path"] == [str(tasks_dir.resolve())]

    from analysis.cli import loss_table_main, report_main

    assert report_main([str(sweep), "--bootstrap", "0"]) == 0
    down = pd.read_csv(sweep / "report" / "downstream.csv")
    assert set(down["method"]) == {"scratch", "G_stack g=2 d=1.02K"} and (down["mid_seeds"] == 2).all()
    assert "### Downstream scores, paired by seed" in (sweep / "report" / "report.md").read_text()
    assert (sweep / "report" / "val_bootstrap.csv").is_file()  # every evaluated run has its val_docs.json
    assert loss_table_main([str(sweep)]) == 0
    export = tmp_path / "export"
    from analysis.export import export_sweep

    export_sweep(sweep, export)
    assert report_main([str(export), "--bootstrap", "0"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(export / "report" / "downstream.csv"), down)


@pytest.mark.slow
@needs_lm_eval
def test_eval_added_to_a_finished_sweep_evaluates_without_retraining(tmp_path, tiny_data, tasks_dir):
    scratch_only = {"targets": ["tiny-L2-D32"], "scratch": {"tokens": [1024]}}
    plain = write_grid(tmp_path / "plain.yaml", tiny_data, scratch_only, schedule="constant")
    sweep = tmp_path / "sweep"
    assert run_sweep(plain, "--out", sweep, "--threads", "1").returncode == 0
    (run_dir,) = list((sweep / "runs").iterdir())
    trained = {p.name: p.read_bytes() for p in (run_dir / "metrics.csv", run_dir / "summary.json")}

    broken = tmp_path / "broken_tasks"
    shutil.copytree(tasks_dir, broken)
    os.remove(broken / "heldout_ppl.jsonl")  # the tasks index, but the evaluation fails
    proc = run_sweep(
        _eval_grid(tmp_path / "broken.yaml", tiny_data, broken, scratch_only), "--out", sweep, "--threads", "1"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"evaluation failed {run_dir.name} on nextline_mc,heldout_ppl: " in proc.stdout
    assert "1 evaluation(s) failed" in proc.stdout and "evaluating " in proc.stdout
    df = pd.read_csv(sweep / "results.csv")
    assert df["status"].tolist() == ["done"] and df["eval_status"].iloc[0].startswith("failed: ")
    assert (run_dir / "eval_error.txt").is_file()

    proc = run_sweep(
        _eval_grid(tmp_path / "good.yaml", tiny_data, tasks_dir, scratch_only), "--out", sweep, "--threads", "1"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"evaluating {run_dir.name}" in proc.stdout and f"evaluated {run_dir.name}: nextline_mc acc" in proc.stdout
    assert "started " not in proc.stdout and "done (val loss" not in proc.stdout
    assert {name: (run_dir / name).read_bytes() for name in trained} == trained  # not retrained
    status = json.loads((run_dir / "status.json").read_text())
    assert status["attempts"] == 1 and status["eval"]["state"] == "done"
    assert not (run_dir / "eval_error.txt").exists()
    df = pd.read_csv(sweep / "results.csv")
    assert df["eval_status"].tolist() == ["done"] and df["eval_heldout_ppl_token_loss"].notna().all()
    again = run_sweep(
        _eval_grid(tmp_path / "good.yaml", tiny_data, tasks_dir, scratch_only), "--out", sweep, "--threads", "1"
    )
    assert again.returncode == 0 and "evaluating" not in again.stdout and "already done" in again.stdout


@pytest.mark.slow
@needs_lm_eval
def test_slurm_jobs_evaluate_and_a_finished_sweep_gets_evaluation_only_jobs(tmp_path, tiny_data, tasks_dir):
    import torch

    from experiments.evaluation import resolve
    from experiments.grid import load_grid
    from experiments.provenance import write_plan
    from experiments.slurm import submit_slurm

    grid_dict = {"targets": ["tiny-L2-D32"], "ops": ["G_stack"], "d": [256], "grown": {"tokens": 512}}
    path = _eval_grid(tmp_path / "g.yaml", tiny_data, tasks_dir, grid_dict, batch_size=4)
    grid = load_grid(path)
    runs, sweep, spec = expand(grid), tmp_path / "sweep", resolve(grid.eval)
    write_plan(sweep, path, grid, runs)  # no eval recorded yet: a sweep that was run without it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert all(
            rec["job"].result()["status"] == "done" for rec in submit_slurm(sweep, runs, grid.slurm, cluster="debug")
        )
        write_plan(sweep, path, grid, runs, spec)  # eval: added
        records = submit_slurm(sweep, runs, grid.slurm, cluster="debug", evaluation=spec)
        assert sorted(r.kind for r in runs if r.id in {rec["run_id"] for rec in records}) == ["grown", "scratch"]
        statuses = [rec["job"].result() for rec in records]
    finally:
        torch.set_num_threads(threads)
    assert [(s["status"], s["attempts"], s["eval"]["state"]) for s in statuses] == [("done", 1, "done")] * 2
    df = pd.read_csv(sweep / "results.csv")
    assert df.set_index("kind")["eval_status"].fillna("-").to_dict() == {
        "base": "-",
        "grown": "done",
        "scratch": "done",
    }
    assert submit_slurm(sweep, runs, grid.slurm, cluster="debug", evaluation=spec) == []
