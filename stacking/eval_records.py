"""The results JSON `stacking eval` writes, read without torch or lm-eval: its file name, where a run's evaluation
lies, and its scores as flat named metrics with their direction.

A record's ``per_doc`` holds, per task, each question's score of every metric lm-eval scores per question with a
plain number (acc, acc_norm, exact_match; not the rolling tasks' (loglikelihood, weight) pairs), ordered by lm-eval's
doc_id, with a hash of the questions (`per_doc_scores`): what a paired bootstrap over questions resamples
(analysis/question_bootstrap.py).

A record's ``results`` is lm-eval's: ``{task: {"acc,none": 0.31, "acc_stderr,none": 0.02, "alias": …}}``, the
key ``metric,filter``; ``higher_is_better`` is ``{task: {metric: bool}}``. `metrics` flattens them to one
`Metric` per task × metric × filter, named ``eval_<task>_<metric>`` (``_<filter>`` appended unless the filter is
lm-eval's default ``none``): the results-table columns of a sweep with ``eval:`` (docs/evaluation.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

PREFIX = "eval_"
"""Results-table columns of downstream scores start with this."""


def result_name(checkpoint: str, tasks: list[str], limit: float | None, num_fewshot: int | None) -> str:
    """``{checkpoint}_{task+task}[_limitN][_Kshot].json``: the name `stacking eval` gives a result by default."""
    joined = "+".join(re.sub(r"[^\w.-]", "_", t) for t in tasks)[:96]
    limit_part = f"_limit{limit:g}" if limit is not None else ""
    shots = f"_{num_fewshot}shot" if num_fewshot is not None else ""
    return f"{checkpoint}_{joined}{limit_part}{shots}.json"


def find_result(
    run_dir: str | Path, tokens: int, tasks: list[str], limit: float | None, num_fewshot: int | None
) -> Path | None:
    """The result in ``run_dir/eval/`` of these settings for the run's checkpoint at ``tokens`` (its
    ``checkpoints/tokens-N`` with N = tokens), or None when it has not been evaluated so."""
    suffix = result_name("", tasks, limit, num_fewshot)
    pattern = re.compile(r"tokens-(\d+)" + re.escape(suffix))
    for path in sorted(Path(run_dir, "eval").glob(f"tokens-*{suffix}")):
        match = pattern.fullmatch(path.name)
        if match and int(match.group(1)) == int(tokens):
            return path
    return None


@dataclass
class Metric:
    """One score of one task in a result."""

    column: str
    """``eval_<task>_<metric>[_<filter>]``, e.g. eval_nextline_mc_acc, eval_heldout_ppl_token_perplexity."""
    task: str
    metric: str
    """lm-eval's metric name (acc, acc_norm, token_perplexity, …), with ``_<filter>`` for a filter other than none."""
    value: float
    higher_is_better: bool | None
    """lm-eval's direction of the metric; None where the record does not say."""


def metrics(record: dict) -> list[Metric]:
    """Every numeric score of a record (standard errors left out), in the record's task and metric order."""
    out = []
    directions = record.get("higher_is_better") or {}
    for task, scores in (record.get("results") or {}).items():
        for key, value in scores.items():
            name, _, filt = key.partition(",")
            if not filt or name.endswith("_stderr") or not _is_number(value):
                continue
            metric = name if filt == "none" else f"{name}_{filt}"
            higher = (directions.get(task) or {}).get(name)
            out.append(
                Metric(f"{PREFIX}{task}_{metric}", task, metric, float(value), None if higher is None else bool(higher))
            )
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def per_doc_scores(samples: dict) -> dict:
    """lm-eval's logged samples (``simple_evaluate(log_samples=True)["samples"]``: per task, one dict per question
    and filter) → ``{task: {"doc_id": [...], "docs_sha256": str, <metric>: [...]}}``, one list per metric whose
    every per-question value is a finite number (named as `metrics` names it: ``_<filter>`` unless the filter is
    ``none``), ordered by doc_id. ``docs_sha256`` hashes the doc ids with lm-eval's doc and target hashes: two runs'
    questions pair only where it is the same."""
    out = {}
    for task, rows in (samples or {}).items():
        rows = sorted(rows, key=lambda r: (r.get("doc_id", -1), str(r.get("filter", "none"))))
        ids = list(dict.fromkeys(int(r["doc_id"]) for r in rows if "doc_id" in r))
        if not ids:
            continue
        by_metric: dict[str, dict[int, float]] = {}
        bad: set[str] = set()
        digest, hashed = hashlib.sha256(), set()
        for r in rows:
            if "doc_id" not in r:
                continue
            if int(r["doc_id"]) not in hashed:  # once a question, whatever its filters
                hashed.add(int(r["doc_id"]))
                digest.update(f"{r['doc_id']}:{r.get('doc_hash', '')}:{r.get('target_hash', '')};".encode())
            filt = str(r.get("filter", "none"))
            for name in r.get("metrics") or ():
                key = name if filt == "none" else f"{name}_{filt}"
                value = r.get(name)
                if _is_number(value):
                    by_metric.setdefault(key, {})[int(r["doc_id"])] = float(value)
                else:
                    bad.add(key)
        scores = {k: [v[i] for i in ids] for k, v in by_metric.items() if k not in bad and len(v) == len(ids)}
        if scores:
            out[task] = {"doc_id": ids, "docs_sha256": digest.hexdigest(), **scores}
    return out


def read_result(path: str | Path) -> dict | None:
    """A result file's record, or None when it is missing or half-written."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


__all__ = ["PREFIX", "Metric", "find_result", "metrics", "per_doc_scores", "read_result", "result_name"]
