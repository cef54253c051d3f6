"""Helpers of the task YAMLs in this dir (lm-eval imports them through ``!function``): the dataset loader reads the
JSONL file named in a task's ``dataset_kwargs`` from this file's own dir (no HF hub, no datasets cache), and the
rolling-perplexity metrics. `stacking eval-tasks` copies this dir next to the JSONL files it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path


def load(file: str, **_metadata):
    """A ``DatasetDict`` with one split, ``test``: the rows of ``file`` (JSONL, next to this module)."""
    import datasets

    path = Path(__file__).with_name(file)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: build the tasks with `stacking eval-tasks --data_dir DIR --out {path.parent}`"
        )
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def rolling_results(doc: dict, results) -> dict:
    """Per document: (log-likelihood, count) pairs for the token, byte and bits-per-byte aggregations."""
    (loglikelihood,) = results
    return {
        "token_loss": (loglikelihood, doc["n_tokens"]),
        "token_perplexity": (loglikelihood, doc["n_tokens"]),
        "byte_perplexity": (loglikelihood, doc["n_bytes"]),
        "bits_per_byte": (loglikelihood, doc["n_bytes"]),
    }


def token_loss(items) -> float:
    """Mean loss per token in nats over all documents: −Σ log-likelihood / Σ tokens (a run's val_loss unit)."""
    total, count = map(sum, zip(*items))
    return -total / count if count else math.nan
