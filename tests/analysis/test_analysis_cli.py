"""`stacking report` and `stacking fit-law` through their entry points, artefacts and user errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import fit_law_main, read_law_table, report_main
from analysis.fit import fit_chinchilla

FIXTURES = Path(__file__).parents[1] / "fixtures"
SWEEP = FIXTURES / "sweep_small"
SPEEDUPS_COLUMNS = [
    "target",
    "op",
    "direction",
    "g",
    "grow_at_tokens",
    "reading",
    "budget_fraction",
    "reference",
    "n_runs",
    "n_reached",
    "target_loss",
    "speedup",
    "speedup_lo",
    "speedup_hi",
    "speedup_max_all",
    "tokens_ratio",
    "tokens_ratio_lo",
    "tokens_ratio_hi",
    "note",
]


def one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_report_writes_every_artefact(tmp_path, capsys):
    out = tmp_path / "rep"
    assert report_main([str(SWEEP), "--out", str(out), "--bootstrap", "50"]) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    assert stdout[-1] == str(out / "report.md")
    lead = (
        "At scratch's final loss, the best of 15 grown configurations, G_stack g=2 d=10M on toy-4M, needs 33 % fewer "
        "FLOPs than scratch (speed-up +50 %, 2 seeds, 95 % CI +42 % to +57 %); 3 of 15 never reach it."
    )
    assert stdout[0] == lead
    assert stdout[1].startswith("speed-up at L* = the matched scratch run's loss at p of its tokens (mid reading)")
    assert stdout[2].startswith("| target | op | g | d | p |") and any("G_stack" in line for line in stdout)
    assert any(line.startswith("speed-up at L*_f = the matched scratch run's annealed loss") for line in stdout)

    md = (out / "report.md").read_text()
    assert md.split("## Speed-ups\n\n", 1)[1].split("\n")[0] == lead  # the section's first line
    assert "| toy-4M | G_stack | 2 | 10M | 75% | 2/2 | 3.204 | +50.0% | [+24.6%, +75.4%] | 1.364 |  |" in md
    for section in (
        "## Speed-ups",
        "### Mid reading (the main runs' curves)",
        "### Annealed reading (WSD cooldown branches)",
        "### L(C) per method",
        "### Chinchilla L(N, D)",
        "IsoFLOP argmins",
        "Eq. 2 form fitted",
        "Paper's Eq. 2",
        "⚠ outside fitted C range",
    ):
        assert section in md, section
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures == [
        "chinchilla.png",
        "curves_toy-16M.png",
        "curves_toy-1M.png",
        "curves_toy-4M.png",
        "isoflop.png",
        "loss_compute.png",
        "speedups.png",
        "speedups_annealed.png",
    ]
    for name in figures:
        assert f"](figures/{name})" in md
        assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG"

    table = pd.read_csv(out / "speedups.csv")
    assert list(table.columns) == SPEEDUPS_COLUMNS
    assert set(table["reference"]) == {"scratch", "grown"} and set(table["reading"]) == {"mid", "annealed"}
    main = table[(table["reference"] == "scratch") & (table["reading"] == "mid")]
    assert len(main) == 15 * 4 and sorted(main["budget_fraction"].unique()) == [0.25, 0.5, 0.75, 1.0]
    assert main.loc[(main["op"] == "G_random") & (main["budget_fraction"] == 1), "speedup"].isna().all()
    assert len(table[table["reference"] == "grown"]) == 15
    annealed = table[table["reading"] == "annealed"]
    assert len(annealed) == 3 * 2 * 4  # targets × (G_stack, G_random at d = 10M) × f
    # the paired loss table: every seed counts, each grown run minus its own seed's scratch run
    assert "### Final losses, paired by seed" in md
    losses = pd.read_csv(out / "losses.csv").set_index(["target", "method"])
    res = pd.read_csv(SWEEP / "results.csv")
    scratch = res[(res["kind"] == "scratch") & (res["target"] == "toy-4M")].set_index("seed")["final_val_loss"]
    stack = res[
        (res["op"] == "G_stack")
        & (res["target"] == "toy-4M")
        & (res["grow_at_tokens"] == 1e7)
        & (res["kind"] == "grown")
    ]
    diffs = [r["final_val_loss"] - scratch[r["seed"]] for _, r in stack.iterrows()]
    row = losses.loc[("toy-4M", "G_stack g=2 d=10M")]
    assert row["seeds"] == len(diffs) == 2 and row["final_val_loss_vs_scratch"] == pytest.approx(np.mean(diffs))
    assert np.isnan(losses.loc[("toy-4M", "scratch"), "final_val_loss_vs_scratch"])
    runs = pd.read_csv(out / "speedup_runs.csv")
    assert runs["run_id"].nunique() == 30 and len(runs) == 30 * 4 + 30 + 12 * 4

    fits = json.loads((out / "fits.json").read_text())
    assert set(fits) == {"loss_compute", "chinchilla", "isoflop", "eq2_fit", "eq2_paper"}
    assert fits["chinchilla"]["params"]["alpha"] == pytest.approx(0.34, abs=0.02)  # the fixture's law
    # IsoFLOP argmins sit at the fixture's d_opt(N) = 1e7·(N/4e6)^0.5
    for row in fits["isoflop"]:
        assert row["d_opt"] == pytest.approx(1e7 * (row["N"] / 4e6) ** 0.5, rel=0.15)
    assert fits["eq2_fit"]["a"] == pytest.approx(0.5, abs=0.1)
    assert set(fits["loss_compute"]["scratch"]) == {"with_offset", "power_law"}


def test_report_on_one_target_skips_what_it_cannot_fit(tmp_path, capsys):
    # One target, G_stack at a single d: no Chinchilla (one size), no IsoFLOP (one d), L(C) and speed-ups stay.
    res = pd.read_csv(SWEEP / "results.csv")
    keep = (res["target"] == "toy-4M") & ((res["op"] != "G_stack") | (res["grow_at_tokens"] == 1e7))
    res = res[keep]
    res.to_csv(tmp_path / "results.csv", index=False)
    for rd in res["run_dir"]:
        shutil.copytree(SWEEP / rd, tmp_path / rd)
    assert report_main([str(tmp_path), "--bootstrap", "20"]) == 0
    stdout = capsys.readouterr().out
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Chinchilla L(N, D): skipped, the scratch runs cover 1 model size(s)" in md
    assert "IsoFLOP over d: skipped" in md
    assert "### L(C) per method" in md and "| toy-4M | G_stack | 2 | 10M | 100% | 2/2 |" in md
    assert "note: Chinchilla L(N, D): skipped" in stdout
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert "chinchilla" not in fits and "isoflop" not in fits and "scratch" in fits["loss_compute"]


def test_report_without_cooldowns_and_one_seed(tmp_path, capsys):
    # An old sweep: results.csv without cooldown rows or columns, one seed: no annealed table, no CIs.
    res = pd.read_csv(SWEEP / "results.csv")
    res = res[(res["target"] == "toy-4M") & (res["seed"] == 0) & (res["kind"] != "cooldown")]
    res = res.drop(columns=["anneal_fraction", "decay_tokens"])
    res.to_csv(tmp_path / "results.csv", index=False)
    for rd in res["run_dir"]:
        shutil.copytree(SWEEP / rd, tmp_path / rd)
    assert report_main([str(tmp_path), "--bootstrap", "0"]) == 0
    stdout = capsys.readouterr().out
    assert "note: no cooldown runs in this sweep: annealed reading not available" in stdout
    md = (tmp_path / "report" / "report.md").read_text()
    section = md.split("### Annealed reading (WSD cooldown branches)\n\n", 1)[1]
    assert section.startswith("no cooldown runs in this sweep: annealed reading not available\n")
    assert "annealed loss at f" not in md and "speedups_annealed.png" not in md
    assert "| toy-4M | G_stack | 2 | 10M | 100% | 1/1 | 3.233 | +50.2% | 1 seed: no CI | 1.397 |  |" in md
    assert (
        "\n\nAt scratch's final loss, the best of 5 grown configurations, G_stack g=2 d=10M, needs 33 % fewer FLOPs "
        "than scratch (speed-up +50 %, 1 seed: no CI); 1 of 5 never reach it.\n\n"
    ) in md
    table = pd.read_csv(tmp_path / "report" / "speedups.csv")
    assert set(table["reading"]) == {"mid"} and table["speedup_lo"].isna().all() and table["speedup_hi"].isna().all()
    main = table[table["reference"] == "scratch"]
    assert main["speedup"].notna().sum() == 4 * 4 + 3  # G_random reaches L*_p for p < 100% only


@pytest.mark.slow  # > 10 s: out of the fast lane (make test-fast), in make test and CI
def test_report_with_fixed_target_loss(tmp_path, capsys):
    assert report_main([str(SWEEP), "--out", str(tmp_path), "--target-loss", "3.3", "--bootstrap", "0"]) == 0
    assert capsys.readouterr().out.startswith("At L* = 3.3, the best of 15 grown configurations")
    table = pd.read_csv(tmp_path / "speedups.csv")
    fixed = table[table["reference"] == "fixed"]
    assert len(fixed) == 15 and fixed["budget_fraction"].isna().all() and (fixed["target_loss"] == 3.3).all()
    assert set(table["reference"]) == {"fixed", "scratch"}  # the annealed reading keeps its own L*_f
    assert "| toy-4M | G_zero | 2 | 10M | — | 2/2 | 3.3 |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{tmp}/nowhere"], "sweep dir {tmp}/nowhere does not exist"),
        (["{tmp}"], "results.csv not found"),
        ([str(SWEEP), "--target-loss", "-1"], "target loss must be a positive number, got -1.0"),
        ([str(SWEEP), "--bootstrap", "lots"], "argument --bootstrap: invalid int value: 'lots' (see --help)"),
    ],
)
def test_report_user_errors(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert report_main(argv) == 2
    assert message.format(tmp=tmp_path) in one_error_line(capsys, "stacking report")
    assert not (SWEEP / "report").exists()  # nothing written on an error


def test_help_documents_every_option(capsys):
    assert report_main(["--help"]) == 0
    text = capsys.readouterr().out
    for opt in ("sweep_dir", "--target-loss", "--out", "--bootstrap", "--seed"):
        assert opt in text
    assert fit_law_main(["--help"]) == 0
    text = capsys.readouterr().out
    for opt in ("--n", "--d", "--flops", "--loss", "--bootstrap", "--drop-top", "--objective", "--seed", "C/(6N)"):
        assert opt in text


# ---- fit-law ---------------------------------------------------------------------------------------------------

TRUTH = {"E": 1.7, "A": 400.0, "B": 1000.0, "alpha": 0.35, "beta": 0.3}


@pytest.fixture
def law_csv(tmp_path) -> Path:
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e8, 1e10, 6), np.geomspace(1e9, 1e11, 6)))
    loss = TRUTH["E"] + TRUTH["A"] / n ** TRUTH["alpha"] + TRUTH["B"] / d ** TRUTH["beta"]
    loss = loss * np.exp(0.002 * np.random.default_rng(0).standard_normal(n.size))
    path = tmp_path / "runs.csv"
    pd.DataFrame({"params": n, "C": 6 * n * d, "tokens": d, "final loss": loss}).to_csv(path, index=False)
    return path


def test_fit_law_with_flops_column_prints_json(law_csv, capsys):
    argv = [
        str(law_csv),
        "--n",
        "params",
        "--flops",
        "C",
        "--loss",
        "final loss",
        "--bootstrap",
        "30",
        "--drop-top",
        "1",
    ]
    assert fit_law_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_points"] == 35 and out["bootstrap"] == 30 and out["input"]["d_from_flops"]
    # The CLI is the API on the table it read: highest loss dropped, D = C/(6N).
    df = pd.read_csv(law_csv)
    df = df[df["final loss"] < df["final loss"].max()]
    api = fit_chinchilla(df["params"], df["C"] / (6 * df["params"]), df["final loss"])
    assert out["params"] == pytest.approx({k: getattr(api, k) for k in TRUTH}, rel=1e-9)
    assert api.predict(df["params"], df["tokens"]) == pytest.approx(df["final loss"].to_numpy(), rel=0.01)
    for name in TRUTH:
        lo, hi = out["ci"][name]
        assert lo < out["params"][name] < hi
    for name in ("E", "alpha", "beta"):
        assert out["params"][name] == pytest.approx(TRUTH[name], rel=0.1), name
    # --d reads the same table as --flops when tokens = C/(6N)
    by_d = read_law_table(str(law_csv), "params", "final loss", "tokens", None, drop_top=1)
    by_flops = read_law_table(str(law_csv), "params", "final loss", None, "C", drop_top=1)
    pd.testing.assert_frame_equal(by_d, by_flops, rtol=1e-12)


@pytest.mark.parametrize(
    ("edit", "argv_tail", "message"),
    [
        (
            None,
            ["--n", "size", "--d", "tokens", "--loss", "final loss"],
            "has no column 'size' (--n); columns are: params, C",
        ),
        (
            "neg_n",
            ["--n", "params", "--d", "tokens", "--loss", "final loss"],
            "column 'params' (--n) must be positive: 1 value(s) ≤ 0 (first at row 3, value -5)",
        ),
        (
            "zero_loss",
            ["--n", "params", "--flops", "C", "--loss", "final loss"],
            "column 'final loss' (--loss) must be positive: 1 value(s) ≤ 0 (first at row 0, value 0)",
        ),
        (
            None,
            ["--n", "params", "--d", "tokens", "--loss", "final loss", "--drop-top", "30"],
            "too few points for the fit: need at least 10, got 6",
        ),
        (
            None,
            ["--n", "params", "--d", "tokens", "--flops", "C", "--loss", "final loss"],
            "argument --flops: not allowed with argument --d",
        ),
        (
            None,
            ["--n", "params", "--d", "tokens", "--loss", "final loss", "--objective", "mse"],
            "argument --objective: invalid choice: 'mse'",
        ),
        (None, ["--n", "params", "--loss", "final loss"], "one of the arguments --d --flops is required"),
    ],
)
def test_fit_law_user_errors(law_csv, capsys, edit, argv_tail, message):
    df = pd.read_csv(law_csv)
    if edit == "neg_n":
        df.loc[3, "params"] = -5
    elif edit == "zero_loss":
        df.loc[0, "final loss"] = 0
    df.to_csv(law_csv, index=False)
    assert fit_law_main([str(law_csv), *argv_tail]) == 2
    assert message in one_error_line(capsys, "stacking fit-law")


def test_fit_law_missing_file(tmp_path, capsys):
    assert fit_law_main([str(tmp_path / "none.csv"), "--n", "a", "--d", "b", "--loss", "c"]) == 2
    assert "none.csv not found" in one_error_line(capsys, "stacking fit-law")
