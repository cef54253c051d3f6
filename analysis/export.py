"""A compact copy of a sweep dir that `stacking report` and `stacking loss-table` read as they read the sweep:
what the tables and figures need, small enough to commit (e.g. under results/<sweep>/).

    stacking export SWEEP_DIR OUT_DIR [--overwrite] [--all-rows]

Copied: results.csv, plan.json (the plan and its provenance: git commit, versions, data ids), grid.yaml, the grid's
``seed_spread`` reference file and its sidecar <name>.meta.json (to OUT_DIR/<its path relative to the grid>), and
of every run dir in results.csv its summary.json, config.yaml and model.json, its downstream results (eval/*.json,
`stacking eval`'s records; the report's downstream table reads them), its val_windows.json gzipped, and its
metrics.csv gzipped as metrics.csv.gz (the readers take either) and cut to its evaluation rows, the only rows any
analysis reads (``--all-rows`` keeps the training steps too: 2–3× the bytes). Not copied: checkpoints, states, logs,
results.parquet, report/.
OUT_DIR/export.json records the source, the file count and the bytes written. The gzip streams carry no timestamp,
so exporting the same sweep twice gives the same bytes.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import time
from pathlib import Path

import yaml

from analysis.seed_spread import meta_path
from analysis.sweep import AnalysisError, read_results

SWEEP_FILES = ("results.csv", "plan.json", "grid.yaml")
RUN_FILES = ("summary.json", "config.yaml", "model.json")
GZIP_FILES = ("metrics.csv", "val_windows.json")
MARKER = "export.json"


def _check_out(out: Path, src: Path, overwrite: bool) -> None:
    """OUT_DIR must be new or empty, or (with ``overwrite``) an earlier export, whose runs/ is then replaced."""
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise AnalysisError(f"the export dir {out} must lie outside the sweep dir {src}")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise AnalysisError(f"{out} is not empty: give --overwrite to replace an earlier export there")
    if not (out / MARKER).is_file():
        raise AnalysisError(f"{out} is not empty and holds no {MARKER}: not an export, left as it is")
    if (out / "runs").is_dir():
        shutil.rmtree(out / "runs")


def _seed_spread(src: Path) -> tuple[Path, str] | None:
    """(file, path relative to the grid) of the grid's seed_spread reference, as the report resolves it; None if
    the grid names none or it is missing."""
    grid = src / "grid.yaml"
    if not grid.is_file():
        return None
    rel = (yaml.safe_load(grid.read_text()) or {}).get("seed_spread")
    if not rel or Path(rel).is_absolute():
        return None
    plan = src / "plan.json"
    grid_dir = Path(json.loads(plan.read_text())["grid"]).parent if plan.is_file() else Path.cwd()
    path = grid_dir / rel
    return (path, rel) if path.is_file() else None


def evaluation_rows(metrics: bytes) -> bytes:
    """The header and the evaluation rows (a value in any val_loss* column) of a metrics.csv, byte for byte: all
    the analyses read of it (`analysis.sweep.val_curve`, the domain table's val_loss_<name>)."""
    lines = metrics.decode().splitlines(keepends=True)
    if not lines:
        return metrics
    header = next(csv.reader(lines[:1]))
    cols = [i for i, c in enumerate(header) if c.startswith("val_loss")]
    keep = [
        line for line, row in zip(lines[1:], csv.reader(lines[1:])) if any(i < len(row) and row[i] != "" for i in cols)
    ]
    return "".join(lines[:1] + keep).encode()


def export_sweep(sweep_dir: str | Path, out_dir: str | Path, overwrite: bool = False, all_rows: bool = False) -> dict:
    """Copy what the report and the loss table read from SWEEP_DIR into OUT_DIR (module docstring); returns
    {"source", "runs", "files", "bytes", "missing"}: the run dirs copied, files and bytes written, and the run dirs
    that results.csv names but that do not exist (pending runs)."""
    src, out = Path(sweep_dir), Path(out_dir)
    results = read_results(src)  # checks it is a sweep dir before anything is written
    _check_out(out, src, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def copy(path: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst)
        written.append(dst)

    for name in SWEEP_FILES:
        if (src / name).is_file():
            copy(src / name, out / name)
    spread = _seed_spread(src)
    if spread is not None:
        copy(spread[0], out / spread[1])
        if meta_path(spread[0]).is_file():  # its provenance and run identities (analysis/seed_spread.py)
            copy(meta_path(spread[0]), meta_path(out / spread[1]))
    runs, missing = 0, []
    for rel in results["run_dir"].dropna().astype(str).unique():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise AnalysisError(f"{src / 'results.csv'}: run_dir {rel!r} is not a path inside the sweep dir")
        run_dir = src / rel
        if not run_dir.is_dir():
            missing.append(rel)
            continue
        runs += 1
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                copy(run_dir / name, out / rel / name)
        for path in sorted((run_dir / "eval").glob("*.json")):
            copy(path, out / rel / "eval" / path.name)
        for name in GZIP_FILES:
            if (run_dir / name).is_file():
                dst = out / rel / f"{name}.gz"
                dst.parent.mkdir(parents=True, exist_ok=True)
                text = (run_dir / name).read_bytes()
                if name == "metrics.csv" and not all_rows:
                    text = evaluation_rows(text)
                dst.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
                written.append(dst)
    info = {
        "source": str(src.resolve()),
        "exported_at": time.time(),
        "runs": runs,
        "files": len(written),
        "bytes": sum(p.stat().st_size for p in written),
        "missing": missing,
    }
    (out / MARKER).write_text(json.dumps(info, indent=1) + "\n")
    return info
