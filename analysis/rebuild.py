"""Rebuild the report of every exported sweep under results/ (analysis/export.py) from the committed files alone.

    python -m analysis.rebuild [RESULTS_DIR] [--bootstrap K] [--seed S]

Each folder of RESULTS_DIR (default: results/) that holds a results.csv gets `stacking report FOLDER --out
FOLDER/report` (the same defaults as `stacking report`: 200 bootstrap resamples, seed 0, so the numbers are the ones
a report of the full sweep dir gives), then RESULTS_DIR/trend/trend.csv and trend.png: `stacking trend` over the
entries of RESULTS_DIR/trend/sweeps.txt (``a+b`` pools two exports' seeds), or without it over every folder that has
paired grown and scratch runs of one target (the others are named and skipped). Prints each
folder's headline and the files written. Exits 2 with one line when RESULTS_DIR holds no export or a report fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.sweep import AnalysisError


def exported_sweeps(results_dir: str | Path) -> list[Path]:
    """The folders directly under RESULTS_DIR that hold a results.csv, sorted by name."""
    root = Path(results_dir)
    if not root.is_dir():
        raise AnalysisError(f"{root} does not exist or is not a directory")
    found = sorted(p for p in root.iterdir() if p.is_dir() and (p / "results.csv").is_file())
    if not found:
        raise AnalysisError(f"{root} holds no exported sweep (no */results.csv): see `stacking export`")
    return found


def rebuild(results_dir: str | Path = "results", bootstrap: int = 200, seed: int = 0) -> dict[Path, list[Path]]:
    """Write FOLDER/report/ for every exported sweep under RESULTS_DIR; returns {folder: files written}."""
    from analysis.report import write_report  # matplotlib: loaded only here

    out = {}
    for folder in exported_sweeps(results_dir):
        try:
            rep = write_report(folder, folder / "report", bootstrap=bootstrap, seed=seed)
        except AnalysisError as err:
            raise AnalysisError(f"{folder}: {err}") from None
        files = sorted(p for p in rep.path.parent.rglob("*") if p.is_file())
        print(f"{folder}: {rep.headline}")
        for p in files:
            print(f"  wrote {p}")
        out[folder] = files
    trend = write_trend(results_dir)
    if trend:
        out[Path(results_dir) / "trend"] = trend
    return out


TREND_LIST = "trend/sweeps.txt"
"""Under RESULTS_DIR: which exports the trend reads, one a line (``a+b``: pooled; ``#`` starts a comment);
without it, every export alone."""


def trend_entries(results_dir: str | Path) -> list:
    """The trend's sweeps: RESULTS_DIR/trend/sweeps.txt's entries (`analysis.trend.parse_entry`), or every export."""
    from analysis.trend import parse_entry

    listed = Path(results_dir) / TREND_LIST
    if not listed.is_file():
        return exported_sweeps(results_dir)
    lines = [line.split("#", 1)[0].strip() for line in listed.read_text().splitlines()]
    entries = [parse_entry(line, root=results_dir) for line in lines if line]
    for entry in entries:
        for path in entry if isinstance(entry, list) else [entry]:
            if not (path / "results.csv").is_file():
                raise AnalysisError(f"{listed}: {path} is not an exported sweep (no results.csv)")
    return entries


def _entry_name(entry) -> str:
    return "+".join(Path(p).name for p in entry) if isinstance(entry, list) else Path(entry).name


def write_trend(results_dir: str | Path) -> list[Path]:
    """RESULTS_DIR/trend/trend.csv and trend.png over the folders `analysis.trend` can read; [] when none can."""
    from analysis.plots import save_figure
    from analysis.trend import plot_trend, trend_table

    entries = trend_entries(results_dir)  # a broken trend/sweeps.txt is an error, not a trend left out
    try:
        table = trend_table(entries, on_error=lambda f, err: print(f"trend: {_entry_name(f)} left out ({err})"))
    except AnalysisError:
        return []
    out = Path(results_dir) / "trend"
    out.mkdir(exist_ok=True)
    table.to_csv(out / "trend.csv", index=False)
    save_figure(plot_trend(table), out / "trend.png")
    print(f"trend: {len(table)} rows from {table['sweep'].nunique()} sweeps")
    for p in (out / "trend.csv", out / "trend.png"):
        print(f"  wrote {p}")
    return [out / "trend.csv", out / "trend.png"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.rebuild", description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", nargs="?", default="results", help="folder of exported sweeps (default: results)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="K", help="bootstrap resamples of the fitted laws")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the bootstrap resampling")
    args = p.parse_args(argv)
    try:
        rebuild(args.results_dir, args.bootstrap, args.seed)
    except AnalysisError as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
