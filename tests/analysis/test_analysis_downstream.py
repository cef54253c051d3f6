"""The downstream table (analysis/downstream.py) on the committed sweep fixture with made-up eval results: scores
paired by seed like the loss table, mean ± CI from the one mean_ci, directions from the records' higher_is_better,
disagreements with the loss noted; the report and `stacking loss-table` show it; a sweep without eval is unchanged.
Needs no lm-eval: the results are JSON files as `stacking eval` writes them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stacking.eval_records import find_result, metrics, result_name

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sweep_small"
SETTINGS = {
    "tasks": ["nextline_mc", "heldout_ppl"],
    "include_path": ["/x/tasks"],
    "limit": 10,
    "num_fewshot": None,
    "batch_size": 16,
}


def _record(loss: float) -> dict:
    """A result whose accuracy rises as the loss falls (agrees with it) and whose token_loss is the loss itself
    plus a 'contrary' score that rises with the loss (↑, so it disagrees wherever the loss moves)."""
    return {
        "results": {
            "nextline_mc": {
                "alias": "nextline_mc",
                "sample_len": 10,
                "acc,none": 1.0 - loss / 10,
                "acc_stderr,none": 0.1,
                "contrary,none": loss,
            },
            "heldout_ppl": {"token_loss,none": loss, "token_loss_stderr,none": "N/A"},
        },
        "higher_is_better": {"nextline_mc": {"acc": True, "contrary": True}, "heldout_ppl": {"token_loss": False}},
        "eval": {"tasks": SETTINGS["tasks"], "limit": 10, "num_fewshot": None},
    }


def _one_target_sweep(dst: Path) -> Path:
    """The fixture's toy-1M runs (one target: a fast report)."""
    dst.mkdir(parents=True)
    df = pd.read_csv(FIXTURE / "results.csv")
    df = df[df["target"] == "toy-1M"]
    df.to_csv(dst / "results.csv", index=False)
    for rel in df["run_dir"]:
        shutil.copytree(FIXTURE / rel, dst / rel)
    return dst


def _add_eval(sweep: Path) -> pd.DataFrame:
    """plan.json's eval settings and a result for every scratch, grown and f = 1 cooldown run."""
    (sweep / "plan.json").write_text(json.dumps({"eval": SETTINGS}))
    df = pd.read_csv(sweep / "results.csv")
    scored = df[df["kind"].isin(["scratch", "grown"]) | np.isclose(df["anneal_fraction"], 1.0)]
    for _, r in scored.iterrows():
        name = result_name(f"tokens-{int(r['tokens']):012d}", SETTINGS["tasks"], 10, None)
        path = sweep / r["run_dir"] / "eval" / name
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(_record(float(r["final_val_loss"]))))
    return df


def test_records_flatten_to_named_metrics_with_directions(tmp_path):
    ms = metrics(_record(2.0))
    assert [(m.column, m.value, m.higher_is_better) for m in ms] == [
        ("eval_nextline_mc_acc", 0.8, True),
        ("eval_nextline_mc_contrary", 2.0, True),
        ("eval_heldout_ppl_token_loss", 2.0, False),
    ]
    filtered = {"results": {"gsm8k": {"exact_match,strict-match": 0.1}}, "higher_is_better": {}}
    assert [(m.column, m.higher_is_better) for m in metrics(filtered)] == [
        ("eval_gsm8k_exact_match_strict-match", None)
    ]
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / result_name("tokens-000000001024", ["a", "b"], 10, None)).write_text("{}")
    (run / "eval" / result_name("tokens-000000000512", ["a", "b"], 10, None)).write_text("{}")
    assert find_result(run, 1024, ["a", "b"], 10, None).name == "tokens-000000001024_a+b_limit10.json"
    assert (
        find_result(run, 1024, ["a", "b"], None, None) is None and find_result(run, 2048, ["a", "b"], 10, None) is None
    )


def test_downstream_table_pairs_by_seed_and_notes_disagreements(tmp_path):
    from analysis.downstream import disagreements, downstream_table
    from analysis.loss_table import loss_table
    from analysis.speedup import mean_ci
    from analysis.sweep import load_sweep

    sweep_dir = _one_target_sweep(tmp_path / "sweep")
    df = _add_eval(sweep_dir)
    sweep = load_sweep(sweep_dir)
    losses = loss_table(sweep)
    table = downstream_table(sweep, losses)
    method = "G_stack g=2 d=10M"
    row = table[(table["method"] == method) & (table["metric"] == "acc")].iloc[0]
    grown = df[(df["kind"] == "grown") & (df["op"] == "G_stack") & (df["grow_at_tokens"] == 1e7)].set_index("seed")
    scratch = df[df["kind"] == "scratch"].set_index("seed")
    diff = (1 - grown["final_val_loss"] / 10) - (1 - scratch.loc[grown.index, "final_val_loss"] / 10)
    mean, _, hi = mean_ci(diff)
    assert row["mid_vs_scratch"] == pytest.approx(mean) and row["mid_vs_scratch_ci"] == pytest.approx(hi - mean)
    assert row["mid_seeds"] == 2 and row["higher_is_better"]
    loss_row = losses[losses["method"] == method].iloc[0]
    assert row["annealed_loss_vs_scratch"] == pytest.approx(loss_row["annealed_vs_scratch"])
    token_loss = table[(table["method"] == method) & (table["metric"] == "token_loss")].iloc[0]
    assert token_loss["annealed_vs_scratch"] == pytest.approx(loss_row["annealed_vs_scratch"])
    assert row["mid_agrees"] and row["annealed_agrees"] and token_loss["annealed_agrees"]
    contrary = table[(table["metric"] == "contrary") & (table["method"] != "scratch")]
    assert not contrary["mid_agrees"].any()
    notes = disagreements(table)
    disagreeing = sum(v is False or v is np.False_ for col in ("mid_agrees", "annealed_agrees") for v in contrary[col])
    assert len(notes) == disagreeing > len(contrary) and all("contrary ↑" in n for n in notes)
    assert f"toy-1M {method}, mid: nextline_mc contrary ↑ puts growth behind scratch (" in "\n".join(notes)
    assert set(table[table["method"] == "scratch"]["mid_seeds"]) == {2}


@pytest.mark.slow  # > 5 s: out of the fast lane (make test-fast), in make test and CI
def test_report_and_loss_table_show_downstream_and_leave_other_reports_alone(tmp_path, capsys):
    from analysis.cli import loss_table_main
    from analysis.report import write_report

    plain = _one_target_sweep(tmp_path / "plain")
    with_eval = _one_target_sweep(tmp_path / "with_eval")
    _add_eval(with_eval)
    before = write_report(plain, tmp_path / "plain_report", bootstrap=0)
    after = write_report(with_eval, tmp_path / "eval_report", bootstrap=0)
    assert not (tmp_path / "plain_report" / "downstream.csv").exists()
    csv = pd.read_csv(tmp_path / "eval_report" / "downstream.csv")
    assert {"eval_report"} and set(csv["metric"]) == {"acc", "contrary", "token_loss"}
    md_plain = before.path.read_text().replace(str(plain), "SWEEP")
    md_eval = after.path.read_text().replace(str(with_eval), "SWEEP")
    start = md_eval.index("### Downstream scores, paired by seed")
    end = md_eval.index("### ", start + 4)
    compute = (md_eval.index("## Compute"), md_eval.index("## Fitted laws"))
    # the section and the compute table's evaluation columns are all that change
    assert md_eval[:start] + md_eval[end : compute[0]] + md_eval[compute[1] :] == md_plain.replace(
        md_plain[md_plain.index("## Compute") : md_plain.index("## Fitted laws")], ""
    )
    section = md_eval[start:end]
    assert "| toy-1M | G_stack g=2 d=10M | nextline_mc acc ↑ | 2 |" in section
    assert "Scores and losses disagree" in section and "heldout_ppl token_loss ↓" in section
    for name in ("losses.csv", "speedups.csv", "fits.json"):
        assert (tmp_path / "plain_report" / name).read_bytes() == (tmp_path / "eval_report" / name).read_bytes()
    assert loss_table_main([str(with_eval)]) == 0
    out = capsys.readouterr().out
    assert "downstream scores (lm-eval" in out and "| nextline_mc acc ↑ |" in out
    assert "disagrees with the loss: toy-1M G_stack" in out
    assert loss_table_main([str(plain)]) == 0
    assert "downstream" not in capsys.readouterr().out


def test_export_carries_the_eval_results(tmp_path):
    from analysis.downstream import downstream_table
    from analysis.export import export_sweep
    from analysis.loss_table import loss_table
    from analysis.sweep import load_sweep

    sweep_dir = _one_target_sweep(tmp_path / "sweep")
    _add_eval(sweep_dir)
    (sweep_dir / "plan.json").write_text(json.dumps({"eval": SETTINGS, "runs": []}))
    export_sweep(sweep_dir, tmp_path / "export")
    assert list((tmp_path / "export").glob("runs/*/eval/tokens-*_nextline_mc+heldout_ppl_limit10.json"))
    tables = []
    for path in (sweep_dir, tmp_path / "export"):
        sweep = load_sweep(path)
        tables.append(downstream_table(sweep, loss_table(sweep)))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert len(tables[0])
