"""Read a sweep directory (results table + per-run metrics.csv) into pandas, and shape it for the fits.

The formats are docs/formats.md: `SWEEP_DIR/results.csv` (one row per run) and `SWEEP_DIR/<run_dir>/metrics.csv`
(one row per logged step/evaluation; `flops` is cumulative and, for grown runs, already includes the parent's
FLOPs). Rebuilding results.csv from runs/*/ is the sweep runner's job; here a missing table is an error.

Run kinds: `base` (the small model a grown run starts from), `grown`, `scratch`, and `cooldown`: a WSD cooldown
branch of a main (scratch or grown) run, whose final loss is that main run's *annealed* loss at the branch's end
(`Sweep.annealed_curve`). Every analysis except the annealed speed-up reads main runs only.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


class AnalysisError(ValueError):
    """A problem with the user's input. The CLI prints str(error) as one line and exits with code 2."""


# Columns the analysis reads; the other documented columns (params_non_embedding, best_val_loss, tokens_per_s,
# wall_time_s, cfg.*) are optional here.
REQUIRED_RESULTS_COLUMNS = (
    "run_id",
    "kind",
    "target",
    "model",
    "op",
    "direction",
    "g",
    "grow_at_tokens",
    "seed",
    "parent_run",
    "params_total",
    "flops_per_token",
    "tokens",
    "flops_offset",
    "flops",
    "final_val_loss",
    "status",
    "run_dir",
)
NUMERIC_RESULTS_COLUMNS = (
    "g",
    "grow_at_tokens",
    "seed",
    "params_total",
    "flops_per_token",
    "tokens",
    "flops_offset",
    "flops",
    "final_val_loss",
)
"""The required columns read as numbers (blank → NaN, e.g. ``g`` of a scratch run)."""
OPTIONAL_NUMERIC_COLUMNS = ("anneal_fraction", "decay_tokens")
"""Columns of cooldown rows (blank for other kinds); added as NaN when absent, so sweeps written before
cooldown runs existed still load."""
REQUIRED_METRICS_COLUMNS = ("tokens", "flops", "val_loss")
KINDS = ("base", "cooldown", "grown", "scratch")
MAIN_KINDS = ("grown", "scratch")
"""Kinds whose curves the analyses read (cooldown runs enter only through the annealed reading)."""


def to_jsonable(obj):
    """NaN/inf → None, numpy scalars → Python, recursively, so json.dumps(..., allow_nan=False) works."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if obj is pd.NA:
        return None
    return obj


def _missing(columns, required) -> list[str]:
    return [c for c in required if c not in columns]


def read_results(sweep_dir: str | Path) -> pd.DataFrame:
    """Read `results.csv` (or `results.parquet`) of a sweep dir and check its columns and kinds."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise AnalysisError(f"sweep dir {sweep_dir} does not exist or is not a directory")
    csv, parquet = sweep_dir / "results.csv", sweep_dir / "results.parquet"
    if csv.is_file():
        df = pd.read_csv(csv)
        source = csv
    elif parquet.is_file():
        df = pd.read_parquet(parquet)
        source = parquet
    else:
        raise AnalysisError(
            f"{csv} not found: the results table is written by `stacking sweep` (it rebuilds it from runs/*/)"
        )
    missing = _missing(df.columns, REQUIRED_RESULTS_COLUMNS)
    if missing:
        raise AnalysisError(f"{source} is missing column(s) {', '.join(missing)} (see docs/formats.md)")
    if df.empty:
        raise AnalysisError(f"{source} has no rows")
    bad = sorted(set(df["kind"].astype(str)) - set(KINDS))
    if bad:
        raise AnalysisError(f"{source}: column kind has value(s) {', '.join(bad)}; valid: {', '.join(KINDS)}")
    for col in OPTIONAL_NUMERIC_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    for col in NUMERIC_RESULTS_COLUMNS + OPTIONAL_NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("op", "direction", "parent_run", "status", "target", "model"):
        df[col] = df[col].astype("string")
    if "at_flops_of" in df.columns:  # anneal.at_scratch_flops: a grown cooldown at a scratch cooldown's FLOPs
        df["at_flops_of"] = df["at_flops_of"].astype("string")
    if "variant" in df.columns:  # one op run with several option sets: each variant is its own method
        variant = df["variant"].astype("string")
        df["op"] = variant.where(variant.notna() & (variant != ""), df["op"])
    grown = df["kind"] == "grown"
    no_d = grown & df["grow_at_tokens"].isna()
    if no_d.any():
        raise AnalysisError(f"{source}: grown run {df.loc[no_d, 'run_id'].iloc[0]} has no grow_at_tokens")
    cooldown = df["kind"] == "cooldown"
    mains = set(df.loc[df["kind"].isin(MAIN_KINDS), "run_id"].astype(str))
    no_parent = cooldown & ~df["parent_run"].isin(mains).fillna(False)
    if no_parent.any():
        r = df[no_parent].iloc[0]
        raise AnalysisError(
            f"{source}: cooldown run {r['run_id']} has parent_run {r['parent_run']!r}, which is not a scratch or "
            "grown run of this table"
        )
    no_f = cooldown & ~(df["anneal_fraction"] > 0)
    if no_f.any():
        raise AnalysisError(f"{source}: cooldown run {df.loc[no_f, 'run_id'].iloc[0]} has no anneal_fraction > 0")
    return df


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read one run's metrics.csv, or metrics.csv.gz beside it when there is no metrics.csv (an exported sweep,
    analysis/export.py)."""
    path = Path(path)
    if not path.is_file() and Path(f"{path}.gz").is_file():
        path = Path(f"{path}.gz")
    if not path.is_file():
        raise AnalysisError(f"{path} not found")
    df = pd.read_csv(path)
    missing = _missing(df.columns, REQUIRED_METRICS_COLUMNS)
    if missing:
        raise AnalysisError(f"{path} is missing column(s) {', '.join(missing)} (see docs/formats.md)")
    return df


def val_curve(metrics: pd.DataFrame) -> pd.DataFrame:
    """Validation curve (tokens, flops, val_loss), one row per evaluation, sorted by tokens."""
    v = metrics.loc[metrics["val_loss"].notna(), ["tokens", "flops", "val_loss"]].astype(float)
    # An evaluation row and a step row may share a token count; keep the last value logged there.
    v = v.drop_duplicates("tokens", keep="last").sort_values("tokens").reset_index(drop=True)
    return v[(v["val_loss"] > 0) & np.isfinite(v["val_loss"])]


def format_tokens(t: float) -> str:
    """12_500_000 → '12.5M' (labels for d and budgets)."""
    if not np.isfinite(t):
        return "nan"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(t) >= div:
            return f"{t / div:.3g}{unit}"
    return f"{t:.3g}"


def op_label(row) -> str:
    """'G_stack', or 'G_direct(width)' when the direction is not depth."""
    d = row["direction"]
    return str(row["op"]) if pd.isna(d) or d in ("depth", "") else f"{row['op']}({d})"


def method_label(row) -> str:
    """'scratch', or 'G_stack g=2 d=10M' (direction shown when not depth); a cooldown run gets its main run's
    label with ' cooldown f=0.5' appended."""
    if row["kind"] == "cooldown":
        main = "scratch" if pd.isna(row["grow_at_tokens"]) else method_label(dict(row) | {"kind": "grown"})
        return f"{main} cooldown f={row['anneal_fraction']:g}"
    if row["kind"] == "scratch":
        return "scratch"
    if row["kind"] == "base":
        return "base"
    return f"{op_label(row)} g={row['g']:g} d={format_tokens(row['grow_at_tokens'])}"


def read_val_windows(run_dir: str | Path) -> dict | None:
    """A run dir's val_windows.json (or val_windows.json.gz, in an export): which validation windows the run was
    evaluated on (data_id, seq_len, n_windows, offsets); None without one (sweeps from before the trainer wrote it)."""
    for name in ("val_windows.json", "val_windows.json.gz"):
        path = Path(run_dir) / name
        if path.is_file():
            raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
            try:
                return json.loads(raw)
            except ValueError:
                raise AnalysisError(f"{path} is not valid JSON") from None
    return None


def val_windows_id(run_dir: str | Path) -> str | None:
    """sha256 (16 hex) of a run dir's validation windows (data_id, seq_len, offsets), or None without a record."""
    content = read_val_windows(run_dir)
    if content is None:
        return None
    keep = {k: content.get(k) for k in ("data_id", "seq_len", "offsets")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def read_plan(sweep_dir: str | Path) -> dict:
    """SWEEP_DIR/plan.json as a dict ({} without one); an AnalysisError naming the file when it is not JSON."""
    path = Path(sweep_dir) / "plan.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise AnalysisError(f"{path} is not valid JSON") from None


def read_provenance(sweep_dir: str | Path) -> dict:
    """What plan.json records of how the sweep was made: name, grid, created_at, git, versions, data ({} without
    plan.json; keys absent from older plans are absent here)."""
    plan = read_plan(sweep_dir)
    return {k: plan[k] for k in ("name", "grid", "created_at", "git", "versions", "data") if k in plan}


@dataclass
class Sweep:
    """A loaded sweep: the results table plus lazily read validation curves."""

    path: Path
    results: pd.DataFrame
    _curves: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    _windows: dict[str, str | None] = field(default_factory=dict, repr=False)

    def runs(self, kind: str | None = None, done_only: bool = True) -> pd.DataFrame:
        """Rows of the results table, optionally one kind; by default only runs with status 'done'."""
        df = self.results
        if kind is not None:
            df = df[df["kind"] == kind]
        if done_only:
            df = df[df["status"] == "done"]
        return df

    def row(self, run_id: str) -> pd.Series:
        rows = self.results[self.results["run_id"] == run_id]
        if rows.empty:
            raise AnalysisError(f"run {run_id} is not in {self.path / 'results.csv'}")
        return rows.iloc[0]

    def metrics(self, run_id: str) -> pd.DataFrame:
        return read_metrics(self.path / str(self.row(run_id)["run_dir"]) / "metrics.csv")

    def val_windows_id(self, run_id: str) -> str | None:
        """A hash of the validation windows the run was evaluated on (its val_windows.json, written by the trainer:
        data id, sequence length, window offsets); None when the run dir has no such file (older sweeps)."""
        if run_id not in self._windows:
            self._windows[run_id] = val_windows_id(self.path / str(self.row(run_id)["run_dir"]))
        return self._windows[run_id]

    def check_same_windows(self, run_a: str, run_b: str) -> None:
        """Raise AnalysisError when two runs' recorded validation windows differ (their losses are not comparable)."""
        a, b = self.val_windows_id(run_a), self.val_windows_id(run_b)
        if a is not None and b is not None and a != b:
            raise AnalysisError(
                f"runs {run_a} and {run_b} were evaluated on different validation windows "
                f"(val_windows.json {a} vs {b}): refusing to compare them"
            )

    def curve(self, run_id: str) -> pd.DataFrame:
        """Validation curve of a run (cached); raises AnalysisError when missing or empty."""
        if run_id not in self._curves:
            c = val_curve(self.metrics(run_id))
            if c.empty:
                raise AnalysisError(f"run {run_id}: metrics.csv has no validation loss")
            self._curves[run_id] = c
        return self._curves[run_id]

    def cooldowns(self, run_id: str) -> pd.DataFrame:
        """The finished cooldown runs branched from main run `run_id`, sorted by FLOPs (may be empty)."""
        cd = self.runs("cooldown")
        return cd[cd["parent_run"] == run_id].sort_values("flops", kind="stable")

    def annealed_curve(self, run_id: str) -> pd.DataFrame:
        """Annealed curve of a main run: its cooldown runs' end points (tokens, flops, val_loss, anneal_fraction,
        run_id), sorted by FLOPs; empty when it has no finished cooldown run.

        `tokens` and `flops` are on the main run's counters (tokens since its start, FLOPs including a grown
        run's base), like its validation curve, so `first_crossing` reads both alike. With several cooldowns at
        one fraction (e.g. two decay lengths) the one listed last in results.csv is used.
        """
        cd = self.cooldowns(run_id)
        cd = cd[(cd["final_val_loss"] > 0) & np.isfinite(cd["final_val_loss"])]
        cd = cd.assign(_f=cd["anneal_fraction"].round(9)).drop_duplicates("_f", keep="last")
        out = pd.DataFrame(
            {
                "tokens": cd["tokens"].to_numpy(float),
                "flops": cd["flops"].to_numpy(float),
                "val_loss": cd["final_val_loss"].to_numpy(float),
                "anneal_fraction": cd["anneal_fraction"].to_numpy(float),
                "run_id": cd["run_id"].astype(str).to_numpy(),
            }
        )
        return out.sort_values("flops", kind="stable").reset_index(drop=True)


def lr_sweep_table(sweep: Sweep) -> pd.DataFrame:
    """Scratch runs of one target and budget trained at several peak LRs (an LR sweep, ``scratch.lrs``): one row
    per target × tokens × lr with the final and best validation loss (mean over seeds), the annealed loss (its
    cooldown ending at the full budget, where there is one) and the number of seeds; empty when no budget has more
    than one LR. Sorted by target, tokens, lr."""
    cols = ["target", "tokens", "lr", "n_seeds", "final_val_loss", "best_val_loss", "annealed_val_loss"]
    scratch = sweep.runs("scratch")
    if scratch.empty or "cfg.lr" not in scratch.columns:
        return pd.DataFrame(columns=cols)
    rows = []
    for (target, tokens), grp in scratch.groupby(["target", "tokens"]):
        if grp["cfg.lr"].nunique() < 2:
            continue
        for lr, runs in grp.groupby("cfg.lr"):
            annealed = []
            for rid in runs["run_id"]:
                a = sweep.annealed_curve(str(rid))
                a = a[np.isclose(a["anneal_fraction"], 1.0)]
                if len(a):
                    annealed.append(float(a["val_loss"].iloc[-1]))
            rows.append(
                {
                    "target": target,
                    "tokens": int(tokens),
                    "lr": float(lr),
                    "n_seeds": len(runs),
                    "final_val_loss": float(runs["final_val_loss"].mean()),
                    "best_val_loss": float(runs["best_val_loss"].mean()),
                    "annealed_val_loss": float(np.mean(annealed)) if annealed else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=cols).sort_values(["target", "tokens", "lr"], kind="stable", ignore_index=True)


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Load a sweep dir (checks results.csv now; metrics.csv files are read when first needed)."""
    return Sweep(Path(sweep_dir), read_results(sweep_dir))


def loss_at_flops(curve: pd.DataFrame, flops) -> np.ndarray:
    """Validation loss at the given FLOPs, interpolating log-loss over log-FLOPs; NaN outside the curve."""
    c = curve[curve["flops"] > 0]
    x = np.log(np.asarray(flops, dtype=float))
    out = np.interp(x, np.log(c["flops"].to_numpy()), np.log(c["val_loss"].to_numpy()), left=np.nan, right=np.nan)
    return np.exp(out)


# --------------------------------------------------------------------------------------------------------------
# Tidy tables for the fits
# --------------------------------------------------------------------------------------------------------------


def _post_warmup(curve: pd.DataFrame, skip_frac: float) -> pd.DataFrame:
    """Drop the first `skip_frac` of a run's own tokens (warmup; the loss spike right after growth)."""
    return curve[curve["tokens"] >= skip_frac * curve["tokens"].max()]


def loss_compute_points(sweep: Sweep, skip_frac: float = 0.1) -> pd.DataFrame:
    """Validation points (flops, loss) of every finished scratch and grown run, labelled by method (cooldown
    runs are left out).

    A grown run's `flops` include its base's FLOPs (metrics.csv already holds them), so each method's points
    are on the same total-compute axis as scratch.
    """
    rows = []
    for _, r in sweep.runs().iterrows():
        if r["kind"] not in MAIN_KINDS:
            continue
        c = _post_warmup(sweep.curve(r["run_id"]), skip_frac)
        c = c[c["flops"] > 0]
        rows.append(
            pd.DataFrame(
                {
                    "method": method_label(r),
                    "run_id": r["run_id"],
                    "target": r["target"],
                    "flops": c["flops"].to_numpy(),
                    "loss": c["val_loss"].to_numpy(),
                }
            )
        )
    if not rows:
        return pd.DataFrame(columns=["method", "run_id", "target", "flops", "loss"])
    return pd.concat(rows, ignore_index=True)


def compute_frontier(points: pd.DataFrame) -> pd.DataFrame:
    """Per method, the compute-efficient frontier: points that reach a loss lower than all cheaper points.

    With runs of several sizes this is the lower envelope of their curves (Kaplan/Chinchilla's frontier);
    with one size it is the monotone part of its curve(s).
    """
    out = []
    for _, g in points.sort_values("flops").groupby("method", sort=False):
        best = np.minimum.accumulate(g["loss"].to_numpy())
        keep = np.r_[True, g["loss"].to_numpy()[1:] < best[:-1]]
        out.append(g[keep])
    return pd.concat(out, ignore_index=True) if out else points.iloc[:0]


def chinchilla_points(sweep: Sweep, skip_frac: float = 0.1, max_per_run: int = 40) -> pd.DataFrame:
    """(N, D, loss) from the validation curves of finished scratch runs, N = params_total, D = tokens.

    Curves give many D per N; points are thinned to at most `max_per_run` evenly spaced in log D. Note:
    intermediate points of one cosine run are not runs decayed at that length (reference/chinchilla.md,
    "schedule caveat"), so a fit on curves is a description of this sweep, not a compute-optimal law.
    """
    rows = []
    for _, r in sweep.runs("scratch").iterrows():
        c = _post_warmup(sweep.curve(r["run_id"]), skip_frac)
        c = c[c["tokens"] > 0]
        if len(c) > max_per_run:
            want = np.geomspace(c["tokens"].iloc[0], c["tokens"].iloc[-1], max_per_run)
            idx = np.unique(np.searchsorted(c["tokens"].to_numpy(), want).clip(0, len(c) - 1))
            c = c.iloc[idx]
        rows.append(
            pd.DataFrame(
                {
                    "run_id": r["run_id"],
                    "target": r["target"],
                    "N": float(r["params_total"]),
                    "D": c["tokens"].to_numpy(),
                    "loss": c["val_loss"].to_numpy(),
                }
            )
        )
    if not rows:
        return pd.DataFrame(columns=["run_id", "target", "N", "D", "loss"])
    return pd.concat(rows, ignore_index=True)


def isoflop_points(sweep: Sweep, n_budgets: int = 4, skip_frac: float = 0.2) -> pd.DataFrame:
    """Loss vs growth timing d at fixed total FLOPs, per (target, op, direction, g) with ≥ 3 distinct d > 0.

    Budgets are log-spaced where every run of the group has data past its first `skip_frac` of tokens (past
    the post-growth spike) and before its end. Each (budget, d) loss is the mean over seeds of the curve
    interpolated at that budget. Intermediate points of a run stand in for runs stopped at that budget (the
    paper ran separate runs); with a decayed schedule prefer one run per budget.
    """
    keys = ["target", "op", "direction", "g"]
    out = []
    grown = sweep.runs("grown")
    grown = grown[grown["grow_at_tokens"] > 0]
    for key, grp in grown.groupby(keys, dropna=False):
        if grp["grow_at_tokens"].nunique() < 3:
            continue
        curves = {rid: sweep.curve(rid) for rid in grp["run_id"]}
        lo = max(float(_post_warmup(c, skip_frac)["flops"].iloc[0]) for c in curves.values())
        hi = min(float(c["flops"].iloc[-1]) for c in curves.values())
        if not lo < hi:
            continue
        budgets = np.clip(np.geomspace(lo, hi, n_budgets), lo, hi)  # geomspace may round past hi
        for budget in budgets:
            for d, by_d in grp.groupby("grow_at_tokens"):
                losses = [float(loss_at_flops(curves[rid], budget)) for rid in by_d["run_id"]]
                out.append(
                    dict(zip(keys, key))
                    | {
                        "N": float(by_d["params_total"].iloc[0]),
                        "budget": budget,
                        "d": float(d),
                        "loss": float(np.nanmean(losses)),
                        "n_seeds": int(np.isfinite(losses).sum()),
                    }
                )
    cols = keys + ["N", "budget", "d", "loss", "n_seeds"]
    return pd.DataFrame(out, columns=cols)
