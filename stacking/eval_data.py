"""The offline tasks of `stacking eval-tasks` (docs/evaluation.md): ``nextline_mc`` (the true next line of held-out
code among 4 lines of the same file, after k lines of context) and ``heldout_ppl`` (rolling perplexity of held-out
files cut into pieces), their JSONL rows built from a dataset's val split, next to the task YAMLs and helper module
of stacking/eval_tasks/. No torch and no lm-eval needed to build them."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np

from stacking.errors import EvalError
from stacking.fsutil import write_json

TASKS_DIR = Path(__file__).with_name("eval_tasks")
"""The shipped task YAMLs and their helper module, copied next to the rows `build_tasks` writes."""
TASKS_META = "tasks.json"
MIN_LINE_CHARS = 6
"""nextline_mc: a line is a question or a distractor only with at least this many non-blank characters."""


def tokenizer_id(tokenizer) -> str:
    """What identifies a dataset tokenizer in tasks.json: its kind and sha256 (its vocab size when it has none)."""
    return f"{tokenizer.spec.kind}:{tokenizer.spec.sha256 or tokenizer.vocab_size}"


def val_documents(data_dir: str | Path, tokenizer, max_docs: int) -> list[str]:
    """The texts of the first ``max_docs`` documents of a dataset's val split (each ends with the EOT id; a
    trailing run of tokens without one is a last document), read in chunks."""
    from stacking.data import load_tokens

    tokens, eot = load_tokens(data_dir, "val"), tokenizer.eot_id
    spans, start, pos, chunk = [], 0, 0, 1 << 22
    while pos < len(tokens) and len(spans) < max_docs:
        part = np.asarray(tokens[pos : pos + chunk])
        for end in (np.flatnonzero(part == eot) + pos).tolist():
            spans.append((start, end))
            start = end + 1
        pos += chunk
    if start < len(tokens):
        spans.append((start, len(tokens)))
    texts = [tokenizer.decode(np.asarray(tokens[a:b]).tolist()) for a, b in spans[:max_docs] if b > a]
    return [t for t in texts if t.strip()]


def _mc_item(lines: list[str], i: int, k: int, pool: list[str], rng: random.Random, doc: int) -> dict:
    true = lines[i]
    indent = true[: len(true) - len(true.lstrip())]
    others = rng.sample([p for p in pool if p != true.strip()], 3)
    choices = [true + "\n"] + [indent + o + "\n" for o in others]  # distractors indented like the true line
    order = list(range(4))
    rng.shuffle(order)
    return {
        "id": f"{doc}:{i}",
        "doc": doc,
        "line": i,
        "context": "\n".join(lines[i - k : i]) + "\n",
        "choices": [choices[j] for j in order],
        "gold": order.index(0),
    }


def nextline_items(texts: list[str], seed: int, context_lines: int, n: int) -> list[dict]:
    """nextline_mc rows: per document up to ⌈n / documents⌉ lines (≥ MIN_LINE_CHARS non-blank characters, after
    ``context_lines`` lines), each with 3 other distinct lines of the same document; shuffled, the first ``n``.
    A pure function of (texts, seed, context_lines, n)."""
    per_doc, items = max(1, math.ceil(n / max(1, len(texts)))), []
    for d, text in enumerate(texts):
        rng = random.Random(f"nextline_mc/{seed}/{d}")
        lines = text.split("\n")
        ok = [i for i, line in enumerate(lines) if len(line.strip()) >= MIN_LINE_CHARS]
        pool = sorted({lines[i].strip() for i in ok})
        questions = [i for i in ok if i >= context_lines]
        if len(pool) < 4 or not questions:
            continue
        items += [
            _mc_item(lines, i, context_lines, pool, rng, d)
            for i in sorted(rng.sample(questions, min(per_doc, len(questions))))
        ]
    random.Random(f"nextline_mc/{seed}").shuffle(items)
    return items[:n]


def _pieces(text: str, tokenizer, max_tokens: int):
    """``text`` cut at line ends into pieces of about ≤ ``max_tokens`` tokens (a longer line is a piece alone)."""
    piece, count = [], 0
    for line in text.splitlines(keepends=True):
        m = len(tokenizer.encode(line))
        if piece and count + m > max_tokens:
            yield "".join(piece)
            piece, count = [], 0
        piece.append(line)
        count += m
    if piece:
        yield "".join(piece)


def heldout_pieces(texts: list[str], tokenizer, seed: int, max_tokens: int, n: int) -> list[dict]:
    """heldout_ppl rows: every document cut into pieces of ≤ ``max_tokens`` tokens at line ends, with their token
    (this tokenizer) and UTF-8 byte counts; shuffled, the first ``n``."""
    rows = []
    for d, text in enumerate(texts):
        for p, piece in enumerate(x for x in _pieces(text, tokenizer, max_tokens) if x.strip()):
            rows.append(
                {
                    "id": f"{d}:{p}",
                    "doc": d,
                    "piece": p,
                    "text": piece,
                    "n_tokens": len(tokenizer.encode(piece)),
                    "n_bytes": len(piece.encode("utf-8")),
                }
            )
    random.Random(f"heldout_ppl/{seed}").shuffle(rows)
    return rows[:n]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def build_tasks(
    data_dir: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    context_lines: int = 8,
    n_mc: int = 1000,
    n_ppl: int = 500,
    max_doc_tokens: int = 2048,
    max_docs: int = 2000,
) -> Path:
    """Write the offline tasks over ``data_dir``'s held-out documents into ``out``: nextline_mc.yaml /
    heldout_ppl.yaml and stacking_tasks.py (copied from stacking/eval_tasks/), their JSONL rows, and tasks.json
    (how they were built). ``stacking eval … --include_path OUT`` then runs them offline."""
    from stacking.tokenizer import load_dataset_tokenizer

    for name, value in (
        ("context_lines", context_lines),
        ("n_mc", n_mc),
        ("n_ppl", n_ppl),
        ("max_doc_tokens", max_doc_tokens),
        ("max_docs", max_docs),
    ):
        if value < 1:
            raise EvalError(f"--{name} must be a positive integer, got {value}")
    tok = load_dataset_tokenizer(data_dir)
    texts = val_documents(data_dir, tok, max_docs)
    mc = nextline_items(texts, seed, context_lines, n_mc)
    if not mc:
        raise EvalError(
            f"the val split of {data_dir} has no document with {context_lines + 1}+ lines and 4 "
            f"distinct lines of {MIN_LINE_CHARS}+ characters: nextline_mc would be empty"
        )
    ppl = heldout_pieces(texts, tok, seed, max_doc_tokens, n_ppl)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(TASKS_DIR.iterdir()):
        if f.suffix in (".yaml", ".py"):
            shutil.copyfile(f, out / f.name)
    _write_jsonl(out / "nextline_mc.jsonl", mc)
    _write_jsonl(out / "heldout_ppl.jsonl", ppl)
    write_json(
        out / TASKS_META,
        {
            "data_dir": str(Path(data_dir).resolve()),
            "tokenizer_id": tokenizer_id(tok),
            "seed": seed,
            "context_lines": context_lines,
            "max_doc_tokens": max_doc_tokens,
            "val_documents": len(texts),
            "rows": {"nextline_mc": len(mc), "heldout_ppl": len(ppl)},
            "heldout_ppl_tokens": sum(r["n_tokens"] for r in ppl),
        },
    )
    return out
