"""Entry points of `stacking report`, `stacking export`, `stacking loss-table`, `stacking trend`, `stacking fit-law`
and `stacking plan-growth` (wired into the top-level CLI by stacking/cli.py, which reaches analysis/ only through this module).

Each returns an exit code instead of exiting: 0 on success, 2 on a user error (bad arguments, missing or
malformed input), printed as one line on stderr without a traceback. The parsers are jsonargparse's
(`stacking.cli.parser`), so every command can also be driven by ``--config FILE.yaml``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fit import OBJECTIVES, check_points, fit_chinchilla
from analysis.plan import PAPER_G, PlanError, format_plan, plan_growth
from analysis.speedup import format_table
from analysis.sweep import AnalysisError, to_jsonable
from stacking.cli import parse, parser, run_command
from stacking.errors import ModelConfigError

# --------------------------------------------------------------------------------------------------------------
# stacking report
# --------------------------------------------------------------------------------------------------------------


def report_parser():
    p = parser(
        "stacking report",
        "Analyse a sweep dir: speed-up table, L(C) per method, Chinchilla L(N, D), IsoFLOP over the "
        "growth timing d, Eq. 2; writes report.md, speedups.csv, speedup_runs.csv, fits.json and figures/*.png.",
    )
    p.add_argument("sweep_dir", help="sweep directory holding results.csv and runs/*/metrics.csv")
    p.add_argument(
        "--target-loss",
        type=float,
        default=None,
        metavar="X",
        help="compare the mid reading at this validation loss L* for every pair (default: each matched scratch "
        "run's loss at 25/50/75/100%% of its tokens; the report then also shows speed-ups at each grown run's own "
        "final loss)",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default: SWEEP_DIR/report)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        metavar="K",
        help="bootstrap resamples for the CIs of the fitted laws (0 = no CIs)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the bootstrap resampling")
    return p


def _report(argv: list[str]) -> int:
    from analysis.report import WARNING, write_report  # matplotlib: loaded only for the report

    args = parse(report_parser(), argv)
    if args.bootstrap < 0:
        raise AnalysisError(f"--bootstrap must be ≥ 0, got {args.bootstrap}")
    rep = write_report(args.sweep_dir, args.out, target_loss=args.target_loss, bootstrap=args.bootstrap, seed=args.seed)
    for line in rep.provenance:
        print(f"provenance: {line}")
    print(rep.headline)
    print(
        "speed-up at L* = "
        + (
            "the given target loss"
            if args.target_loss is not None
            else "the matched scratch run's loss at p of its tokens (mid reading)"
        )
    )
    print(format_table(rep.table) if len(rep.table) else "(no grown/scratch pairs)")
    if rep.table_own_final is not None and len(rep.table_own_final):
        print("speed-up at L* = each grown run's own final loss (negative: scratch got there first)")
        print(format_table(rep.table_own_final))
    if rep.table_annealed is not None and len(rep.table_annealed):
        print("speed-up at L*_f = the matched scratch run's annealed loss at f (annealed reading: cooldown runs)")
        print(format_table(rep.table_annealed))
    for note in rep.notes:
        if not note.startswith(WARNING):
            print(f"note: {note}")
    for warning in rep.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(rep.path)
    return 0


def report_main(argv: list[str]) -> int:
    """`stacking report SWEEP_DIR [--target-loss X] [--out DIR] [--bootstrap K] [--seed S]`."""
    return run_command("stacking report", _report, argv, (AnalysisError,))


# --------------------------------------------------------------------------------------------------------------
# stacking export
# --------------------------------------------------------------------------------------------------------------


def export_parser():
    p = parser(
        "stacking export",
        "Copy what `stacking report` and the loss table read from a sweep dir into OUT_DIR, compact enough to "
        "commit (results.csv, plan.json, grid.yaml, each run's summary.json, config.yaml, model.json, eval/*.json, "
        "val_windows.json and metrics.csv's evaluation rows gzipped); `stacking report OUT_DIR` then gives the same "
        "tables.",
    )
    p.add_argument("sweep_dir", help="sweep directory holding results.csv and runs/*/metrics.csv")
    p.add_argument("out_dir", help="where the export goes, e.g. results/<sweep>")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT_DIR")
    p.add_argument(
        "--all-rows",
        action="store_true",
        help="keep metrics.csv's training-step rows too (by default only its evaluation rows, all the analyses read)",
    )
    return p


def _export(argv: list[str]) -> int:
    from analysis.export import export_sweep

    args = parse(export_parser(), argv)
    info = export_sweep(args.sweep_dir, args.out_dir, overwrite=args.overwrite, all_rows=args.all_rows)
    pending = f"; {len(info['missing'])} run dir(s) not there yet (not started)" if info["missing"] else ""
    print(f"{args.out_dir}: {info['runs']} runs, {info['files']} files, {info['bytes'] / 1e6:.2f} MB{pending}")
    return 0


def export_main(argv: list[str]) -> int:
    """`stacking export SWEEP_DIR OUT_DIR [--overwrite] [--all-rows]`."""
    return run_command("stacking export", _export, argv, (AnalysisError,))


# --------------------------------------------------------------------------------------------------------------
# stacking loss-table
# --------------------------------------------------------------------------------------------------------------


def loss_table_parser():
    p = parser(
        "stacking loss-table",
        "Final losses of a sweep (mid-schedule and annealed), each grown run minus "
        "its own seed's scratch run: mean ± 95 % CI over seeds; with a grid's eval:, the downstream scores "
        "paired the same way under it; with `stacking val-docs` files, each difference's CI over resampled "
        "validation documents; --contrast: the difference-in-differences against another sweep (e.g. "
        "another init).",
    )
    p.add_argument("sweep_dir", help="a sweep dir written by `stacking sweep` (or its export, `stacking export`)")
    p.add_argument("--per-seed", action="store_true", help="one row per grown run (its own seed's differences)")
    p.add_argument(
        "--contrast",
        metavar="SWEEP_B",
        help="difference-in-differences against another sweep (B+C: the seeds of several, pooled as --pool pools): "
        "(method − scratch here) − (method − scratch in SWEEP_B), Welch 95 %% CI; writes contrast.csv",
    )
    p.add_argument(
        "--out", metavar="CSV", help="where --contrast writes its table (default: SWEEP_DIR/report/contrast.csv)"
    )
    p.add_argument(
        "--pool",
        metavar="SWEEP_B",
        nargs="+",
        help="more seeds of the same comparison from other sweeps (or exports): their runs join SWEEP_DIR's "
        "where every method is configured alike apart from the seed (refused otherwise); a seed in two sweeps "
        "is counted once",
    )
    p.add_argument(
        "--seeds-for",
        metavar="NATS",
        type=float,
        help="also print each paired difference's sd over seeds and how many seeds would give it a 95 %% CI "
        "half-width of NATS at that sd (planning the next seeds)",
    )
    return p


def _loss_table(argv: list[str]) -> int:
    from analysis.loss_table import (
        EQUAL_FLOPS_TEXT,
        contrast_table,
        equal_flops_table,
        format_contrast_table,
        format_equal_flops_table,
        format_loss_table,
        format_per_seed_table,
        loss_table,
        per_seed_table,
    )
    from analysis.sweep import load_sweep

    args = parse(loss_table_parser(), argv)
    if args.seeds_for is not None and not args.seeds_for > 0:
        raise AnalysisError(f"--seeds-for is a CI half-width in nats and must be > 0, not {args.seeds_for:g}")
    if args.pool:
        from analysis.pool import pool_sweeps

        sweep = pool_sweeps([args.sweep_dir, *args.pool])
        for line in sweep.summary():
            print(line)
    else:
        sweep = load_sweep(args.sweep_dir)
    if args.contrast:
        from analysis.trend import parse_entry

        other = parse_entry(args.contrast)  # B+C: the seeds of several sweeps as one, checked as --pool checks
        if isinstance(other, list):
            from analysis.pool import pool_sweeps

            other = pool_sweeps(other)
            for line in other.summary():
                print(line)
        else:
            other = load_sweep(other)
        table = contrast_table(sweep, other)
        out = Path(args.out) if args.out else sweep.path / "report" / "contrast.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        print(format_contrast_table(table))
        print(f"A = {sweep.path}, B = {args.contrast}; wrote {out}")
    elif args.per_seed:
        print(format_per_seed_table(per_seed_table(sweep)))
    else:
        losses = loss_table(sweep)
        print(format_loss_table(losses))
        equal = equal_flops_table(sweep)
        if len(equal):
            print(f"\n{EQUAL_FLOPS_TEXT}")
            print(format_equal_flops_table(equal))
        _print_downstream(sweep, losses)
        _print_val_bootstrap(sweep)
    if args.seeds_for is not None:
        from analysis.loss_table import format_power_table, power_table

        print(f"\nseeds for a 95 % CI half-width of ±{args.seeds_for:g} nats at each difference's sd over seeds:")
        print(format_power_table(power_table(sweep, args.seeds_for), args.seeds_for))
    return 0


def _print_downstream(sweep, losses: pd.DataFrame) -> None:
    """The downstream table (a grid's ``eval:``) under the loss table, and where scores and losses disagree."""
    from analysis.downstream import disagreements, downstream_table, format_downstream_table

    table = downstream_table(sweep, losses)
    if table.empty:
        return
    print("\ndownstream scores (lm-eval; ↑ higher is better, ↓ lower), each method minus its own seed's scratch:")
    print(format_downstream_table(table))
    for line in disagreements(table):
        print(f"disagrees with the loss: {line}")
    from analysis.question_bootstrap import format_question_bootstrap, question_bootstrap_table

    questions = question_bootstrap_table(sweep)
    if not questions.empty:
        print("\neach downstream score − scratch with its seed CI and question CI (questions resampled):")
        print(format_question_bootstrap(questions))


def _print_val_bootstrap(sweep) -> None:
    """Where runs have val_docs.json (`stacking val-docs`): each difference's seed CI beside its document CI."""
    from analysis.val_bootstrap import RESAMPLES, format_val_bootstrap, val_bootstrap_table

    table = val_bootstrap_table(sweep)
    if table.empty:
        return
    print(f"\neach method − scratch with its seed CI and doc CI (validation documents resampled, {RESAMPLES} draws):")
    print(format_val_bootstrap(table))


def loss_table_main(argv: list[str]) -> int:
    """`stacking loss-table SWEEP_DIR [--pool SWEEP ...] [--per-seed] [--contrast SWEEP_B [--out CSV]]
    [--seeds-for NATS]`."""
    return run_command("stacking loss-table", _loss_table, argv, (AnalysisError,))


# --------------------------------------------------------------------------------------------------------------
# stacking trend
# --------------------------------------------------------------------------------------------------------------


def trend_parser():
    p = parser(
        "stacking trend",
        "The gain against model size and budget across sweeps: per sweep, grown method and budget, the annealed "
        "loss minus its own seed's scratch at equal FLOPs (mean ± 95 %% CI over seeds), with the target's "
        "non-embedding parameters, the baseline's init and LR, and tokens per parameter; writes trend.csv and "
        "trend.png (docs/analysis.md, 'The trend across sweeps').",
    )
    p.add_argument(
        "sweep_dirs",
        nargs="+",
        help="sweep dirs or their exports (one target each); A+B reads the seeds of sweeps A and B as one "
        "(`loss-table --pool`'s checks)",
    )
    p.add_argument("--out", default="trend", metavar="DIR", help="where trend.csv and trend.png go (default: trend)")
    return p


def _trend(argv: list[str]) -> int:
    from analysis.plots import save_figure
    from analysis.trend import format_trend_table, parse_entry, plot_trend, trend_table

    args = parse(trend_parser(), argv)
    table = trend_table([parse_entry(e) for e in args.sweep_dirs])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "trend.csv", index=False)
    save_figure(plot_trend(table), out / "trend.png")
    print(format_trend_table(table))
    print(f"wrote {out / 'trend.csv'} and {out / 'trend.png'}")
    return 0


def trend_main(argv: list[str]) -> int:
    """`stacking trend SWEEP_DIR [SWEEP_DIR …] [--out DIR]`."""
    return run_command("stacking trend", _trend, argv, (AnalysisError,))


# --------------------------------------------------------------------------------------------------------------
# stacking fit-law
# --------------------------------------------------------------------------------------------------------------


def fit_law_parser():
    p = parser(
        "stacking fit-law",
        "Fit L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla Approach 3: Huber δ=1e-3 on log residuals, "
        "L-BFGS from the 4500-start Chinchilla grid) to a CSV table and print the fit as JSON.",
    )
    p.add_argument("csv", help="CSV file with one row per training run (or curve point)")
    p.add_argument("--n", required=True, metavar="COL", help="column with the parameter count N")
    # exactly one of --d and --flops, checked after parsing (an argparse group would not see a --config file)
    p.add_argument("--d", metavar="COL", help="column with the training tokens D (or give --flops)")
    p.add_argument("--flops", metavar="COL", help="column with the training compute C; D is taken as C/(6N)")
    p.add_argument("--loss", required=True, metavar="COL", help="column with the final loss")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="K",
        help="bootstrap resamples for percentile CIs and SEs (0 = none; Epoch AI used 4000)",
    )
    p.add_argument(
        "--drop-top",
        type=int,
        default=0,
        metavar="K",
        help="drop the K rows with the highest loss before fitting (Epoch AI drop 5 of Chinchilla's 245)",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="huber",
        help="huber: Huber δ=1e-3 (Chinchilla's); lad: least absolute deviations (Epoch AI's headline)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the bootstrap resampling")
    p.add_argument("--ci-level", type=float, default=0.95, metavar="P", help="CI coverage")
    return p


def read_law_table(
    path: str, n_col: str, loss_col: str, d_col: str | None, flops_col: str | None, drop_top: int = 0
) -> pd.DataFrame:
    """Read N, D, loss columns from a CSV (D = C/(6N) from a FLOPs column), validated, highest losses dropped."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise AnalysisError(f"{path} not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise AnalysisError(f"{path} is not a readable CSV ({str(err).splitlines()[0]})") from None
    wanted = {"--n": n_col, "--loss": loss_col} | ({"--d": d_col} if d_col else {"--flops": flops_col})
    missing = [f"{col!r} ({opt})" for opt, col in wanted.items() if col not in df.columns]
    if missing:
        raise AnalysisError(
            f"{path} has no column {', '.join(missing)}; columns are: {', '.join(map(str, df.columns))}"
        )
    cols = {opt: pd.to_numeric(df[col], errors="coerce").to_numpy(float) for opt, col in wanted.items()}
    check_points({f"column {wanted[o]!r} ({o})": v for o, v in cols.items()}, min_points=1)
    n, loss = cols["--n"], cols["--loss"]
    d = cols["--d"] if d_col else cols["--flops"] / (6.0 * n)
    if drop_top < 0:
        raise AnalysisError(f"--drop-top must be ≥ 0, got {drop_top}")
    keep = np.argsort(loss, kind="stable")[: max(len(loss) - drop_top, 0)]
    keep.sort()
    return pd.DataFrame({"N": n[keep], "D": d[keep], "loss": loss[keep]})


def _fit_law(argv: list[str]) -> int:
    args = parse(fit_law_parser(), argv)
    if args.d is not None and args.flops is not None:
        raise AnalysisError("argument --flops: not allowed with argument --d (see --help)")
    if args.d is None and args.flops is None:
        raise AnalysisError("one of the arguments --d --flops is required (see --help)")
    if args.bootstrap < 0:
        raise AnalysisError(f"--bootstrap must be ≥ 0, got {args.bootstrap}")
    if not 0 < args.ci_level < 1:
        raise AnalysisError(f"--ci-level must be between 0 and 1, got {args.ci_level}")
    table = read_law_table(args.csv, args.n, args.loss, args.d, args.flops, args.drop_top)
    fit = fit_chinchilla(
        table["N"],
        table["D"],
        table["loss"],
        objective=args.objective,
        bootstrap=args.bootstrap,
        seed=args.seed,
        ci_level=args.ci_level,
    )
    out = fit.to_dict() | {
        "input": {
            "csv": args.csv,
            "n": args.n,
            "loss": args.loss,
            "d": args.d,
            "flops": args.flops,
            "d_from_flops": args.flops is not None,
            "dropped_top": args.drop_top,
            "seed": args.seed,
        }
    }
    print(json.dumps(to_jsonable(out), indent=1))
    return 0


def fit_law_main(argv: list[str]) -> int:
    """`stacking fit-law CSV --n COL --d COL|--flops COL --loss COL [--bootstrap K] [--drop-top K]
    [--objective huber|lad] [--seed S] [--ci-level P]`."""
    return run_command("stacking fit-law", _fit_law, argv, (AnalysisError,))


# --------------------------------------------------------------------------------------------------------------
# stacking plan-growth
# --------------------------------------------------------------------------------------------------------------


def plan_growth_parser():
    p = parser(
        "stacking plan-growth",
        "When to grow: for a target preset and a budget, the growth timing d of "
        "the Stacking paper's Eq. 2 (log10 d = 0.88·log10 N + 163.27/log10 C − 5.74), the share of the budget "
        "the base (the target with n_layer / g layers) takes up to d, tokens per parameter, and warnings "
        "where the numbers leave the paper's regime. No training; docs/growth.md, 'Planning a growth run'.",
    )
    p.add_argument(
        "--target",
        required=True,
        metavar="PRESET",
        help="target model: tiny-d{N}, tiny-L{L}-D{D}, stack-410m|1.1b|3b|7b[-base] or a litgpt name",
    )
    # exactly one of --flops and --tokens, checked by plan_growth (an argparse group would not see a --config file)
    p.add_argument("--flops", type=float, default=None, metavar="C", help="budget in FLOPs, the base's included")
    p.add_argument(
        "--tokens",
        type=float,
        default=None,
        metavar="T",
        help="budget in tokens of the target trained from scratch (C = T × its FLOPs/token)",
    )
    p.add_argument(
        "--g",
        type=int,
        default=PAPER_G,
        metavar="G",
        help="depth growth factor; must divide the target's n_layer (the paper's 4; it recommends 2–4)",
    )
    p.add_argument(
        "--fit",
        default=None,
        metavar="SWEEP_DIR",
        help="also predict d from this sweep: Eq. 2 refitted on its IsoFLOP minima (as `stacking report` does) "
        "and the d minimising Liew & Kato's L(D1, D2) fitted on its grown runs of this target and g",
    )
    p.add_argument(
        "--fit-op",
        default="G_stack",
        metavar="OP",
        help="the operator whose grown runs the Liew & Kato fit reads (default G_stack)",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        metavar="S",
        help="sequence length for FLOPs/token (default: 128 for tiny presets, else the paper's 2048)",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        metavar="V",
        help="vocabulary (default: 257, the main job's bytes, for tiny presets; else the preset's own)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        metavar="B",
        help="tokens per optimizer step (default: 2048 for tiny presets, else the paper's 1024 × 2048)",
    )
    return p


def _plan_growth(argv: list[str]) -> int:
    args = parse(plan_growth_parser(), argv)
    plan = plan_growth(
        args.target,
        flops=args.flops,
        tokens=args.tokens,
        g=args.g,
        fit_dir=args.fit,
        fit_op=args.fit_op,
        seq_len=args.seq_len,
        vocab_size=args.vocab_size,
        batch_tokens=args.batch_tokens,
    )
    print(format_plan(plan))
    return 0


def plan_growth_main(argv: list[str]) -> int:
    """`stacking plan-growth --target PRESET (--flops C | --tokens T) [--g G] [--fit SWEEP_DIR] [--fit-op OP] [--seq-len S]
    [--vocab-size V] [--batch-tokens B]`."""
    return run_command("stacking plan-growth", _plan_growth, argv, (PlanError, AnalysisError, ModelConfigError))
