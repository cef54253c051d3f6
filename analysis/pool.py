"""Seeds of one comparison pooled from several sweeps: `stacking loss-table SWEEP_A --pool SWEEP_B [--pool ...]`.

Seeds accumulate in more than one sweep: replicate_torch_init.yaml ``tiny_tinyllama`` trains G_stack g = 2 and
scratch at 0.45M for seeds 1–3, factor.yaml ``replicate`` the same two runs for seeds 4–6 beside g = 4 and 8. Read
together they are one six-seed comparison, but only where the runs are configured alike, so `pool_sweeps` checks
that before it joins anything: every grown, scratch and cooldown run of one method (target × method label, e.g.
"G_stack g=2 d=2.3M" or "scratch cooldown f=1") must have the same numerics in every sweep apart from the seed
(`analysis.seed_spread.numerics_key`: every config field that changes a number, data dirs as data ids, and what a
run starts from, recursively; where and how often files are written does not count). A method that differs is
refused in one line naming the fields that differ. Downstream scores are read with the first sweep's ``eval``
settings (`analysis.downstream.read_scores`): a pooled run evaluated otherwise simply has none.

A seed of a method in two sweeps is the same run (same numerics, same seed): it is counted once, from the first
sweep that has it, and `PooledSweep.duplicates` records both losses (a repeat more than
`analysis.seed_spread.LOSS_TOLERANCE` away is a run that does not reproduce: a warning).

The pooled sweep is an ordinary `analysis.sweep.Sweep` over the union of the results tables (run dirs made
absolute), so every loss-table reading (paired differences, validation-window checks, downstream scores, document
bootstrap) works on it unchanged; its path is the first sweep's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.seed_spread import LOSS_TOLERANCE, _Unknown, numerics_key
from analysis.sweep import AnalysisError, Sweep, load_sweep, method_label, read_plan

POOLED_KINDS = ("grown", "scratch", "cooldown")
"""The runs a loss table reads (bases enter through their grown runs' numerics)."""


@dataclass
class PooledSweep(Sweep):
    """A `Sweep` over the runs of several sweeps; ``sources`` lists (sweep path, seeds it contributed per method)."""

    sources: list[tuple[Path, dict[str, list[int]]]] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    """One entry per seed of a method found in more than one sweep: method, seed, the sweeps, both final losses."""

    def summary(self) -> list[str]:
        """Lines that say where each method's seeds came from, the repeated seeds (one line per pair of sweeps) and
        a warning for each repeat whose final loss differs by more than `LOSS_TOLERANCE`."""
        lines = []
        for path, seeds in self.sources:
            parts = [f"{m} {_seed_list(s)}" for m, s in seeds.items() if s]
            lines.append(f"pooled from {path}: " + ("; ".join(parts) if parts else "nothing new"))
        pairs: dict[tuple, list[dict]] = {}
        for d in self.duplicates:
            pairs.setdefault((str(d["kept"]), str(d["dropped"])), []).append(d)
        for (kept, dropped), dups in pairs.items():
            gap = max(abs(d["loss_kept"] - d["loss_dropped"]) for d in dups)
            mains = {}
            for d in dups:
                if " cooldown " not in d["method"]:
                    mains.setdefault(d["method"], []).append(d["seed"])
            what = "; ".join(f"{m} {_seed_list(s)}" for m, s in mains.items())
            lines.append(
                f"in both {kept} and {dropped}, counted once: {len(dups)} runs ({what}, with their cooldowns); "
                f"largest final-loss gap {gap:.1e}"
            )
            for d in dups:
                if abs(d["loss_kept"] - d["loss_dropped"]) > LOSS_TOLERANCE:
                    lines.append(
                        f"WARNING: {d['method']} seed {d['seed']} does not reproduce: final loss "
                        f"{d['loss_kept']:.6f} in {kept}, {d['loss_dropped']:.6f} in {dropped}"
                    )
        return lines


def _seed_list(seeds: list[int]) -> str:
    return "seeds " + ",".join(str(s) for s in sorted(seeds))


def _strip_seed(key):
    """``key`` with every ``seed`` field removed, at every depth (what a run starts from has a seed too)."""
    if isinstance(key, dict):
        return {k: _strip_seed(v) for k, v in key.items() if k != "seed"}
    return key


def _flat(key, prefix: str = "") -> dict:
    if not isinstance(key, dict):
        return {prefix.rstrip("."): key}
    out = {}
    for k, v in key.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _differences(a: dict, b: dict) -> str:
    """The fields two seedless keys differ in, the run's own first, then those of what it starts from."""
    fa, fb = _flat(a), _flat(b)
    out = []
    for k in sorted(set(fa) | set(fb), key=lambda k: (k.count("from."), k)):
        if fa.get(k) != fb.get(k):
            depth = k.count("from.")
            where = "" if depth == 0 else ("its source's " if depth == 1 else f"its source's (×{depth}) ")
            out.append(f"{where}{k.split('.')[-1]} {fa.get(k)!r} vs {fb.get(k)!r}")
    return ", ".join(out[:4]) + (f" and {len(out) - 4} more" if len(out) > 4 else "")


def _method_keys(sweep: Sweep) -> pd.DataFrame:
    """The sweep's finished grown, scratch and cooldown runs with their method label and seedless numerics key."""
    plan = read_plan(sweep.path)
    if not plan.get("runs"):
        raise AnalysisError(f"{sweep.path}: no plan.json with runs, so nothing shows how its runs were configured")
    runs, data = {r["id"]: r for r in plan["runs"]}, plan.get("data") or {}
    rows = sweep.runs()
    rows = rows[rows["kind"].isin(POOLED_KINDS)].copy()
    keys = []
    for rid in rows["run_id"].astype(str):
        try:
            keys.append(json.dumps(_strip_seed(numerics_key(rid, runs, data)), sort_keys=True, default=str))
        except _Unknown as e:
            raise AnalysisError(
                f"{sweep.path}: plan.json does not record what run {rid} needs ({e}), so it cannot be pooled"
            ) from None
    rows["method"] = [method_label(r) for _, r in rows.iterrows()]
    rows["_key"] = keys
    return rows


def pool_sweeps(paths: list[str | Path]) -> PooledSweep:
    """One sweep from the runs of ``paths`` (the first names the result), refused in one line where a method is
    configured differently in two of them (module docstring)."""
    if len(paths) < 2:
        raise AnalysisError("pooling needs at least two sweeps")
    sweeps = [load_sweep(p) for p in paths]
    for s in sweeps[1:]:
        if s.path.resolve() == sweeps[0].path.resolve():
            raise AnalysisError(f"{s.path} is given twice")
    key_of: dict[str, tuple[str, Path]] = {}  # method -> (seedless key, first sweep that has it)
    seen: dict[tuple[str, int], tuple[Path, float]] = {}  # (method, seed) -> (sweep, final loss)
    frames, sources, duplicates = [], [], []
    for s in sweeps:
        rows = _method_keys(s)
        keep = np.ones(len(rows), bool)
        contributed: dict[str, list[int]] = {}
        for i, (_, r) in enumerate(rows.iterrows()):
            method, seed, loss = r["method"], int(r["seed"]), float(r["final_val_loss"])
            label = f"{r['target']} {method}"
            if label in key_of and key_of[label][0] != r["_key"]:
                first_key, first_path = key_of[label]
                raise AnalysisError(
                    f"refusing to pool: {label} is configured differently in {first_path} and {s.path}: "
                    f"{_differences(json.loads(first_key), json.loads(r['_key']))}"
                )
            key_of.setdefault(label, (r["_key"], s.path))
            if (label, seed) in seen:
                kept, kept_loss = seen[(label, seed)]
                duplicates.append(
                    {"method": label, "seed": seed, "kept": kept, "dropped": s.path}
                    | {"loss_kept": kept_loss, "loss_dropped": loss}
                )
                keep[i] = False
                continue
            seen[(label, seed)] = (s.path, loss)
            if r["kind"] != "cooldown":
                contributed.setdefault(label, []).append(seed)
        dropped = set(rows.loc[~keep, "run_id"].astype(str))
        res = s.runs()  # finished runs: one still training in one sweep and done in another is read once
        res = res[~res["run_id"].astype(str).isin(dropped)].copy()
        res["run_dir"] = [str((s.path / str(d)).resolve()) for d in res["run_dir"]]
        frames.append(res)
        sources.append((s.path, contributed))
    results = pd.concat(frames, ignore_index=True)
    clash = results["run_id"].astype(str).duplicated(keep=False) & results["kind"].isin(POOLED_KINDS)
    if clash.any():  # the same id in two sweeps with another seed cannot happen; a copied run dir can
        raise AnalysisError(f"run {results.loc[clash, 'run_id'].iloc[0]} appears in two of the pooled sweeps")
    return PooledSweep(sweeps[0].path, results, sources=sources, duplicates=duplicates)
