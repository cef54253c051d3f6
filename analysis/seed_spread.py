"""A grid's seed-spread reference (``seed_spread:``, docs/sweeps.md) checked against the sweep whose report quotes
it: a seeded sweep's speedups.csv of the same configuration, and beside it ``<name>.meta.json``, the sidecar that
`python -m analysis.reference` writes with it (analysis/reference.py).

The sidecar records the reference sweep's provenance (its plan.json: git commit, Python / torch / numpy / lightning
/ litgpt versions, data ids) and, for every finished grown, scratch and cooldown run (the runs the speed-ups read),
its name, run id, seed, numerics hash and final validation loss (docs/analysis.md, "The seed-spread reference").
`stacking report` prints the provenance beside the quoted spread (analysis/report.py) and `check_reference` finds
the runs of its sweep that have the name of one of the reference's runs but another numerics hash (configured
differently: its spread is not comparable) or a final loss more than ``LOSS_TOLERANCE`` away (the same run does not
reproduce: other code, versions, data or machine); the report warns of both.

Why not the run id: its hash (stacking.config.config_hash) covers every RunConfig field, also those that change no
number (where and how often checkpoints, states and logs are written), and a grown run reaches its base only through
the name of its grown dir. demo.yaml's seed 0 and ``replicate.yaml --scale demo``'s seed 0 have different ids and
the same numbers: the replicate's base saves more checkpoints and trains on past d, on a constant LR. The numerics
hash keeps the fields that change a run's numbers and replaces the checkpoint or state it starts from by the
numerics of the run that wrote it, read at that token (`numerics_key`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.sweep import AnalysisError, Sweep, read_plan, read_provenance

FORMAT = 1
LOSS_TOLERANCE = 1e-4
"""A run whose final val loss differs from the reference's same run by more than this does not reproduce it (a run
repeated with the same code, versions, data and machine gives the same loss to the last digit)."""
COMPARED_KINDS = ("grown", "scratch", "cooldown")
"""The runs the speed-ups read. Bases enter through their grown runs' numerics (a seeded sweep's base may train on
past d, which changes its own final loss and nothing of its grown runs')."""

IO_FIELDS = (
    "out_dir",
    "progress_bar",
    "logger",
    "log_every_tokens",
    "save_at_tokens",
    "checkpoint_every_tokens",
    "save_state_at_tokens",
)
"""RunConfig fields that change where and how often files are written, never a number."""
MEASURE_FIELDS = ("val_every_tokens", "val_tokens", "eval_data_dirs")
"""Fields that change what is measured of a run, not how it trains: part of a run's own numerics, not of its state
at a token that another run starts from."""
SOURCE_FIELDS = ("init_from", "branch_from")
"""The checkpoint or state a run starts from: replaced by the numerics of the run that wrote it, at that token."""
_SOURCE = re.compile(r"^runs/(?P<run>[^/]+)/(?:checkpoints|states)/tokens-0*(?P<tokens>\d+)")


class _Unknown(Exception):
    """A run's numerics cannot be known from its plan (a data id or a source run not recorded)."""


# ---- numerics identity -------------------------------------------------------------------------------------------
def numerics_key(run_id: str, runs: dict[str, dict], data: dict[str, str], at_tokens: int | None = None) -> dict:
    """What determines the numbers of run ``run_id`` (at ``at_tokens``: its state there, where another run starts),
    from plan.json's runs by id and its data ids by data dir: the config's fields less `IO_FIELDS` (and
    `MEASURE_FIELDS` at a token), data dirs as data ids, the LR schedule as the LR it gives up to the end (a
    constant LR, or a WSD run before its decay, does not depend on max_tokens or min_lr), and the run it starts from
    (grow step or branch point) as that run's key at that token. Raises _Unknown where the plan lacks one."""
    if run_id not in runs:
        raise _Unknown(run_id)
    run = runs[run_id]
    src = run["config"]
    key = {k: v for k, v in src.items() if k not in IO_FIELDS + SOURCE_FIELDS}
    if at_tokens is not None:
        key = {k: v for k, v in key.items() if k not in MEASURE_FIELDS}
    key["data_dir"] = _data_id(src["data_dir"], data)
    if key.get("eval_data_dirs"):
        key["eval_data_dirs"] = {k: _data_id(v, data) for k, v in key["eval_data_dirs"].items()}
    end = src["max_tokens"] if at_tokens is None else at_tokens
    if src["schedule"] == "constant" or (src["schedule"] == "wsd" and end <= src["max_tokens"] - src["decay_tokens"]):
        key.update(schedule="constant", max_tokens=None, min_lr=None, decay_tokens=None)
    key["tokens"] = end
    key.update(_start(run, runs, data))
    return key


def _start(run: dict, runs: dict[str, dict], data: dict[str, str]) -> dict:
    """What a run starts from: a saved state (a cooldown's branch point), a grow step (its own, or that of the grown
    dir it starts from: a cooldown from its main run's start), another run's checkpoint, or nothing."""
    cfg = run["config"]
    found = _SOURCE.match(str(cfg.get("branch_from") or ""))
    if found is not None:
        return {"from": numerics_key(found["run"], runs, data, at_tokens=int(found["tokens"]))}
    init = cfg.get("init_from")
    grow = run.get("grow") or next((r["grow"] for r in runs.values() if (r.get("grow") or {}).get("dst") == init), None)
    if grow:
        found = _SOURCE.match(grow["src"])
        if found is None:
            raise _Unknown(grow["src"])
        step = {k: v for k, v in grow.items() if k not in ("src", "dst", "carry_state")}
        step["carry_state"] = bool(grow.get("carry_state"))
        return {"grow": step, "from": numerics_key(found["run"], runs, data, at_tokens=int(found["tokens"]))}
    if init:
        found = _SOURCE.match(str(init))
        if found is None:
            return {"init_from": init}  # a checkpoint from outside the sweep: its path is all we know
        return {"from": numerics_key(found["run"], runs, data, at_tokens=int(found["tokens"]))}
    return {}


def _data_id(path: str, data: dict[str, str]) -> str:
    if path not in data or not data[path]:
        raise _Unknown(path)
    return data[path]


def numerics_hash(run_id: str, runs: dict[str, dict], data: dict[str, str]) -> str | None:
    """sha256 (12 hex) of `numerics_key`; None where the plan does not record what it needs."""
    try:
        key = numerics_key(run_id, runs, data)
    except _Unknown:
        return None
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_name(run_id: str) -> str:
    """The readable part of a run id (``<name>-<hash>``): the same run in two grids has the same name."""
    return str(run_id).rsplit("-", 1)[0]


def run_identities(sweep_dir: str | Path) -> dict[str, str | None]:
    """{run id: numerics hash} of every run in SWEEP_DIR/plan.json ({} without one)."""
    plan = read_plan(sweep_dir)
    runs = {r["id"]: r for r in plan.get("runs", [])}
    return {rid: numerics_hash(rid, runs, plan.get("data") or {}) for rid in runs}


# ---- the sidecar -------------------------------------------------------------------------------------------------
def meta_path(csv_path: str | Path) -> Path:
    """``<name>.meta.json`` beside ``<name>.csv``."""
    return Path(csv_path).with_suffix(".meta.json")


def reference_meta(sweep: Sweep, csv_name: str) -> dict:
    """The sidecar of a reference made from ``sweep`` (module docstring; docs/formats.md)."""
    prov = read_provenance(sweep.path)
    ids = run_identities(sweep.path)
    rows = sweep.runs()
    rows = rows[rows["kind"].isin(COMPARED_KINDS)].sort_values("run_id")
    runs = [
        {
            "name": run_name(r["run_id"]),
            "run_id": r["run_id"],
            "kind": r["kind"],
            "seed": int(r["seed"]),
            "numerics_hash": ids.get(r["run_id"]),
            "final_val_loss": None if pd.isna(r["final_val_loss"]) else float(r["final_val_loss"]),
        }
        for _, r in rows.iterrows()
    ]
    return {
        "format": FORMAT,
        "speedups": csv_name,
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sweep": {"path": str(sweep.path.resolve()), **{k: prov.get(k) for k in ("name", "grid", "created_at")}},
        "git": prov.get("git"),
        "versions": prov.get("versions"),
        "data": prov.get("data"),
        "runs": runs,
        "note": None,
    }


def read_meta(csv_path: str | Path) -> dict | None:
    """The sidecar of a reference CSV; None without one."""
    path = meta_path(csv_path)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        raise AnalysisError(f"{path} is not valid JSON") from None
    if meta.get("format") != FORMAT or not isinstance(meta.get("runs"), list):
        raise AnalysisError(f"{path}: not a seed-spread sidecar of format {FORMAT} (python -m analysis.reference)")
    return meta


def provenance_text(meta: dict | None) -> str:
    """How the reference was made, in one phrase: its code, versions and data ids, and whether it records its runs'
    configurations (numerics hashes); each 'not recorded' where the sidecar has none."""
    if meta is None:
        return "provenance unknown: no sidecar"
    git = meta.get("git") or {}
    sha = git.get("sha")
    code = (
        f"made at git {sha[:12]}{' with uncommitted changes' if git.get('dirty') else ''}"
        if sha
        else "git not recorded"
    )
    ver = meta.get("versions") or {}
    versions = ", ".join(f"{k} {v}" for k, v in ver.items()) if ver else "versions not recorded"
    data = ", ".join(sorted(set(map(str, (meta.get("data") or {}).values())))) or "data id not recorded"
    configs = "" if any(r.get("numerics_hash") for r in meta["runs"]) else "; run configurations not recorded"
    return f"{code}; {versions}; {data}{configs}"


# ---- checking a sweep against it ---------------------------------------------------------------------------------
@dataclass
class ReferenceCheck:
    """This sweep's runs against the reference's runs of the same name."""

    compared: int = 0  # runs of this sweep with a same-named run in the reference
    hashes_compared: int = 0  # of which both sides record a numerics hash
    mismatched: list[tuple[str, str, str]] = field(default_factory=list)  # (name, hash here, hash there)
    drifted: list[tuple[str, float, float]] = field(default_factory=list)  # (name, loss here, loss there)


def check_reference(sweep: Sweep, meta: dict) -> ReferenceCheck:
    """Every finished grown, scratch and cooldown run of ``sweep`` that has a same-named run in the reference: a
    different numerics hash (both recorded) makes it ``mismatched``; else a final val loss more than
    LOSS_TOLERANCE away makes it ``drifted``."""
    ids = run_identities(sweep.path)
    theirs = {r["name"]: r for r in meta["runs"]}
    out = ReferenceCheck()
    rows = sweep.runs()
    for _, r in rows[rows["kind"].isin(COMPARED_KINDS)].sort_values("run_id").iterrows():
        ref = theirs.get(run_name(r["run_id"]))
        if ref is None:
            continue
        out.compared += 1
        mine, there = ids.get(r["run_id"]), ref.get("numerics_hash")
        if mine and there:
            out.hashes_compared += 1
            if mine != there:
                out.mismatched.append((ref["name"], mine, there))
                continue
        loss, ref_loss = r["final_val_loss"], ref.get("final_val_loss")
        if ref_loss is not None and pd.notna(loss) and abs(loss - ref_loss) > LOSS_TOLERANCE:
            out.drifted.append((ref["name"], float(loss), float(ref_loss)))
    return out


def mismatch_warning(check: ReferenceCheck, label: str, csv_path: str | Path) -> str:
    runs = "; ".join(f"{name} {mine} here, {there} there" for name, mine, there in check.mismatched)
    return (
        f"seed spread: the reference `{label}` summarizes runs configured differently from this sweep's runs of the "
        f"same name (numerics hash: {runs}), so its spread is of another configuration and not comparable with "
        f"this sweep's numbers; rebuild it from a seeded sweep of this configuration "
        f"(python -m analysis.reference SWEEP_DIR {csv_path})."
    )


def drift_warning(check: ReferenceCheck, label: str, csv_path: str | Path, here: dict, meta: dict) -> str:
    runs = "; ".join(f"{name} {mine:.6g} here, {there:.6g} in the reference" for name, mine, there in check.drifted)
    return (
        f"seed spread: this sweep's runs do not reproduce the same runs of the reference `{label}` (final val loss "
        f"differs by more than {LOSS_TOLERANCE:g}: {runs}). Likely causes: {_causes(here, meta)}. The quoted spread "
        "describes the reference's runs, not these: rebuild it from a seeded sweep made with this code "
        f"(python -m analysis.reference SWEEP_DIR {csv_path})."
    )


def _causes(here: dict, meta: dict) -> str:
    """Which of code, versions and data differ between this sweep's plan.json and the reference, or are not
    recorded on one side; the machine last (CPU kernels and thread count change the last digits)."""
    out = []
    git, ref_git = here.get("git") or {}, meta.get("git") or {}
    sha, ref_sha = git.get("sha") or "", ref_git.get("sha") or ""
    if not sha or not ref_sha or sha[: len(ref_sha)] != ref_sha[: len(sha)]:  # either may be a short sha
        out.append(
            f"the code (git {sha[:12] or 'not recorded'} here, {ref_sha[:12] or 'not recorded'} in the reference)"
        )
    elif git.get("dirty") or ref_git.get("dirty"):
        out.append("uncommitted changes to the code (" + ("here" if git.get("dirty") else "in the reference") + ")")
    ver, ref_ver = here.get("versions") or {}, meta.get("versions") or {}
    if not ver or not ref_ver:
        out.append(f"the versions ({_unrecorded(ver, ref_ver)})")
    elif ver != ref_ver:
        keys = [k for k in sorted(set(ver) | set(ref_ver)) if ver.get(k) != ref_ver.get(k)]
        out.append("the versions (" + "; ".join(f"{k} {ver.get(k)} here, {ref_ver.get(k)} there" for k in keys) + ")")
    data, ref_data = set((here.get("data") or {}).values()), set((meta.get("data") or {}).values())
    if not data or not ref_data:
        out.append(f"the data ({_unrecorded(data, ref_data)})")
    elif data != ref_data:
        out.append(f"the data ({', '.join(sorted(data))} here, {', '.join(sorted(ref_data))} there)")
    return ", ".join(out + ["or else the machine (CPU kernels, thread count)"])


def _unrecorded(here, there) -> str:
    return {(True, False): "not recorded in the reference", (False, True): "not recorded here"}.get(
        (bool(here), bool(there)), "not recorded here or in the reference"
    )
