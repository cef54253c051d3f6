"""Build a grid's seed-spread reference from a seeded sweep: its speedups.csv, as `stacking report` writes it, and
the sidecar ``<name>.meta.json`` the report checks it with (analysis/seed_spread.py; docs/analysis.md, "The
seed-spread reference").

    python -m analysis.reference SWEEP_DIR OUT.csv      # writes OUT.csv and OUT.meta.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis.report import speedup_tables
from analysis.seed_spread import meta_path, provenance_text, reference_meta
from analysis.sweep import AnalysisError, load_sweep


def build_reference(sweep_dir: str | Path, out_csv: str | Path) -> dict:
    """Write OUT_CSV (the sweep's speedups.csv, as `stacking report` writes it) and its sidecar; returns the
    sidecar."""
    sweep, out = load_sweep(sweep_dir), Path(out_csv)
    if out.suffix != ".csv":
        raise AnalysisError(f"the reference must be a .csv file, got {out}")
    table = speedup_tables(sweep)
    meta = reference_meta(sweep, out.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    meta_path(out).write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.reference", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", help="the seeded sweep dir (or its export under results/)")
    p.add_argument("out_csv", help="the reference to write, e.g. experiments/grids/reference/<name>.csv")
    args = p.parse_args(argv)
    try:
        meta = build_reference(args.sweep_dir, args.out_csv)
    except AnalysisError as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_csv} and {meta_path(args.out_csv)}: {len(meta['runs'])} runs, {provenance_text(meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
