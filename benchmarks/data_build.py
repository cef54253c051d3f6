"""`stacking data` at scale: tokens/s against the tokenizer's own ceiling, and peak memory at two corpus sizes.

Generates JSONL.zst corpora (files of ~48 MiB of JSONL each) from this machine's Python source (site-packages and
the stdlib, one document per .py file, files over ``--max_doc_mb`` cut at line ends; repeated with shuffled blocks
of lines when more text is needed) at each of
``--sizes`` GB of text, trains a byte-level BPE tokenizer.json (``--vocab``, on the first ~64 MB of text; with a
tokenizer_config.json naming its EOS, so `stacking data --tokenizer DIR` reads it as a pretrained tokenizer), then:

* end-to-end: ``python -m stacking data --tokenizer DIR --workers W`` on each corpus for each of ``--workers``:
  wall time, tokens/s, and memory of the build's process tree (polled every 0.1 s from /proc: the peak of the sum
  of RSS over the tree, and the largest single process's VmHWM);
* ceiling: the same tokenizer's ``encode_batch`` over the same documents already in memory, in batches of the
  build's ``chunk_bytes`` (only the encode is timed; for sizes above ``--ceiling_gb`` on their first
  ``--ceiling_gb`` GB). ``encode_batch_fast`` (no offsets; what the build calls) is timed as well.

Targets: end-to-end tokens/s >= 0.8 x ceiling; peak(largest size) <= 1.2 x peak(smallest size).

The build's peak memory is bounded by the settings (workers x chunk_bytes) plus its longest document: the tokenizer
holds ~230 bytes per token of the document it encodes (measured for HF BPE). Without the cut, a larger corpus of
this machine's files holds larger files (a 4.4 MB file at 1 GB, none over 1.4 MB at 0.3 GB) and the peak follows
them, not the corpus size; the script measures the longest document's share on its own (a fresh process encoding
it alone) and prints it under the table.

    python benchmarks/data_build.py                      # sizes 0.3 and 1 GB: ~30 min on 2 idle CPUs, ~1 GB disk
    python benchmarks/data_build.py --quick              # 10 and 30 MB: ~3 min, to test the script
    python benchmarks/data_build.py --sizes 0.3 1 --workers 1 2 --out /tmp/data-bench --keep

Corpora and the tokenizer are cached in ``--out`` between runs; datasets are deleted after each build, and
everything unless ``--keep`` at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

# --------------------------------------------------------------------------------------------------------------
# Corpus and tokenizer


def source_texts() -> list[str]:
    """Every .py file of site-packages and the stdlib (sorted; unreadable ones skipped), one string each."""
    roots = dict.fromkeys(Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib", "stdlib"))
    texts = []
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            try:
                texts.append(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
    return [t for t in texts if t.strip()]


def variants(texts: list[str]):
    """The texts, then again with their blocks of 20 lines shuffled (seeded by round and index), endlessly."""
    for r in range(1 << 30):
        for i, t in enumerate(texts):
            if r == 0:
                yield t
                continue
            lines = t.splitlines(keepends=True)
            blocks = [lines[j : j + 20] for j in range(0, len(lines), 20)]
            random.Random(r * 1_000_003 + i).shuffle(blocks)
            yield "".join(line for b in blocks for line in b)


def cut_long(texts: list[str], max_chars: int) -> list[str]:
    """Texts longer than ``max_chars`` cut at line ends into documents of at most ``max_chars`` (a longer single
    line stays whole); 0: unchanged."""
    if not max_chars:
        return texts
    out = []
    for t in texts:
        if len(t) <= max_chars:
            out.append(t)
            continue
        cur, size = [], 0
        for line in t.splitlines(keepends=True):
            if cur and size + len(line) > max_chars:
                out.append("".join(cur))
                cur, size = [], 0
            cur.append(line)
            size += len(line)
        out += ["".join(cur)] if cur else []
    return out


def make_corpus(d: Path, gb: float, texts: list[str], file_mib: int, max_doc_chars: int) -> dict:
    """~``gb`` GB of text as JSONL.zst files of ~``file_mib`` MiB of JSONL each (cached: manifest.json), from the
    texts cut to documents of at most ``max_doc_chars``."""
    import zstandard

    if (d / "manifest.json").exists():
        manifest = json.loads((d / "manifest.json").read_text())
        if manifest.get("max_doc_chars") == max_doc_chars:
            return manifest
    texts = cut_long(texts, max_doc_chars)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    target, chars, docs, n_files, lines, size, longest = int(gb * 1e9), 0, 0, 0, [], 0, 0
    cctx = zstandard.ZstdCompressor(level=3)

    def flush():
        nonlocal n_files, lines, size
        (d / f"part-{n_files:05d}.jsonl.zst").write_bytes(cctx.compress("".join(lines).encode()))
        n_files, lines, size = n_files + 1, [], 0

    for text in variants(texts):
        line = json.dumps({"text": text}) + "\n"
        lines.append(line)
        size, chars, docs, longest = size + len(line), chars + len(text), docs + 1, max(longest, len(text))
        if size >= file_mib << 20:
            flush()
        if chars >= target:
            break
    if lines:
        flush()
    manifest = {
        "gb_text": chars / 1e9,
        "docs": docs,
        "files": n_files,
        "max_doc_chars": max_doc_chars,
        "longest_doc_chars": longest,
        "gb_on_disk": sum(f.stat().st_size for f in d.glob("*.zst")) / 1e9,
    }
    (d / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def make_tokenizer(d: Path, texts: list[str], vocab: int, sample_mb: int) -> Path:
    """A byte-level BPE tokenizer.json trained on the first ``sample_mb`` MB of text, with an EOS in its config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if (d / "tokenizer.json").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    sample, n = [], 0
    for t in texts:
        sample.append(t)
        n += len(t)
        if n >= sample_mb * 1e6:
            break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(sample, trainer=trainer)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    return d


# --------------------------------------------------------------------------------------------------------------
# Measurements


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


def _status_kib(pid: int, field: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split(f"{field}:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return 0


def run_build(corpus: Path, tok: Path, out: Path, workers: int, chunk_bytes: int, shard_bytes: int) -> dict:
    """One `stacking data` in a subprocess: wall seconds, tokens, peak tree RSS (sum) and max process VmHWM."""
    cmd = [
        sys.executable,
        "-m",
        "stacking",
        "data",
        "--out",
        str(out),
        "--sources",
        str(corpus),
        "--tokenizer",
        str(tok),
        "--workers",
        str(workers),
        "--chunk_bytes",
        str(chunk_bytes),
        "--shard_bytes",
        str(shard_bytes),
        "--overwrite",
        "true",
    ]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_sum, hwm = 0, {}
    while proc.poll() is None:
        pids = _tree(proc.pid)
        peak_sum = max(peak_sum, sum(_status_kib(p, "VmRSS") for p in pids))
        for p in pids:
            hwm[p] = max(hwm.get(p, 0), _status_kib(p, "VmHWM"))
        time.sleep(0.1)
    seconds = time.time() - t0
    err = proc.stderr.read()
    if proc.returncode:
        sys.exit(f"stacking data failed ({proc.returncode}):\n{err}")
    meta = json.loads((out / "meta.json").read_text())
    shutil.rmtree(out)
    tokens = meta["train_tokens"] + meta["val_tokens"]
    units = len(meta["shards"]["train"])
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "train_shards": units,
        "peak_tree_rss_mb": peak_sum / 1024,
        "max_proc_hwm_mb": max(hwm.values(), default=0) / 1024,
    }


def ceiling(corpus: Path, tok: Path, max_gb: float, chunk_bytes: int) -> dict:
    """tokens/s of the tokenizer alone on documents in memory (``encode_batch`` and ``encode_batch_fast``)."""
    import zstandard
    from tokenizers import Tokenizer

    docs, n = [], 0
    for f in sorted(corpus.glob("*.jsonl.zst")):
        for line in zstandard.ZstdDecompressor().decompress(f.read_bytes()).decode().splitlines():
            docs.append(json.loads(line)["text"])
            n += len(docs[-1])
        if n >= max_gb * 1e9:
            break
    batches, cur, size = [], [], 0
    for d in docs:
        cur.append(d)
        size += len(d)
        if size >= chunk_bytes:
            batches.append(cur)
            cur, size = [], 0
    batches += [cur] if cur else []
    t = Tokenizer.from_file(str(tok / "tokenizer.json"))
    out = {"ceiling_gb_text": n / 1e9}
    for name in ("encode_batch", "encode_batch_fast"):
        encode, tokens, seconds = getattr(t, name), 0, 0.0
        for b in batches:
            t0 = time.perf_counter()
            encoded = encode(b)
            seconds += time.perf_counter() - t0
            tokens += sum(len(e.ids) for e in encoded)
        out[f"{name}_tokens_per_s"] = tokens / seconds
    return out


_PROBE = """
import json, sys, zstandard
from pathlib import Path
from tokenizers import Tokenizer
rss = lambda: int(Path('/proc/self/status').read_text().split('VmRSS:')[1].split()[0]) * 1024
doc = ''
for f in sorted(Path(sys.argv[1]).glob('*.jsonl.zst')):
    for line in zstandard.ZstdDecompressor().decompress(f.read_bytes()).decode().splitlines():
        doc = max(doc, json.loads(line)['text'], key=len)
t = Tokenizer.from_file(sys.argv[2])
t.encode_batch_fast(['warm up'])
before = rss()
ids = t.encode_batch_fast([doc])[0].ids
print(json.dumps({'longest_doc_chars': len(doc), 'longest_doc_tokens': len(ids), 'rss_bytes': rss() - before}))
"""


def longest_doc_memory(corpus: Path, tok: Path) -> dict:
    """RSS growth of encoding the corpus's longest document alone (``encode_batch_fast``, what the build calls), in
    a fresh process: the part of the build's peak that depends on the data rather than on the settings."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(corpus), str(tok / "tokenizer.json")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    r = json.loads(out)
    return r | {
        "longest_doc_rss_mb": r["rss_bytes"] / 2**20,
        "rss_bytes_per_token": r["rss_bytes"] / max(r["longest_doc_tokens"], 1),
    }


# --------------------------------------------------------------------------------------------------------------


def table(rows: list[dict], sizes: list[float]) -> str:
    head = (
        "| corpus GB | longest doc (chars) | workers | train shards | wall s | tokens | tokens/s | ceiling "
        "tokens/s (encode_batch / _fast) | e2e / ceiling | peak tree RSS MB | max process MB |"
    )
    lines = [head, "|" + "---:|" * 11]
    for r in rows:
        lines.append(
            f"| {r['gb_text']:.2f} | {r['longest_doc_chars']:,} | {r['workers']} | {r['train_shards']} | {r['seconds']:.1f} | "
            f"{r['tokens']:,} | "
            f"{r['tokens_per_s'] / 1e6:.2f}M | {r['encode_batch_tokens_per_s'] / 1e6:.2f}M / "
            f"{r['encode_batch_fast_tokens_per_s'] / 1e6:.2f}M | "
            f"{r['tokens_per_s'] / r['encode_batch_tokens_per_s']:.2f} | {r['peak_tree_rss_mb']:.0f} | "
            f"{r['max_proc_hwm_mb']:.0f} |"
        )
    for w in sorted({r["workers"] for r in rows}):
        small, large = (next(r for r in rows if r["workers"] == w and r["size"] == s) for s in (sizes[0], sizes[-1]))
        lines.append(
            f"\nworkers {w}: peak tree RSS at {large['gb_text']:.2f} GB / at {small['gb_text']:.2f} GB = "
            f"{large['peak_tree_rss_mb'] / small['peak_tree_rss_mb']:.2f} (target <= 1.2); max process "
            f"{large['max_proc_hwm_mb'] / small['max_proc_hwm_mb']:.2f}"
        )
    for s in sizes:
        r = next(r for r in rows if r["size"] == s)
        lines.append(
            f"\nlongest document at {r['gb_text']:.2f} GB: {r['longest_doc_chars']:,} chars, "
            f"{r['longest_doc_tokens']:,} tokens; encoding it alone grows RSS by {r['longest_doc_rss_mb']:.0f} "
            f"MB ({r['rss_bytes_per_token']:.0f} B/token)"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[0.3, 1.0], help="corpus sizes in GB of text")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument(
        "--chunk_bytes", type=int, default=1 << 20, help="passed to stacking data (its default); the ceiling's batches"
    )
    p.add_argument("--shard_bytes", type=int, default=32 << 20, help="passed to stacking data (its default)")
    p.add_argument(
        "--max_doc_mb",
        type=float,
        default=1.0,
        help="source files longer than this (MB of text) are "
        "cut at line ends into documents of at most this size, so every corpus size draws on the same "
        "document lengths (the build's peak memory follows its longest document); 0: no cut",
    )
    p.add_argument("--ceiling_gb", type=float, default=0.3, help="ceiling measured on at most this much text")
    p.add_argument("--out", type=Path, default=Path("/tmp/stacking-data-bench"))
    p.add_argument("--keep", action="store_true", help="keep the corpora and tokenizer in --out")
    p.add_argument(
        "--quick",
        action="store_true",
        help="sizes 0.01 and 0.03 GB, 2 MiB files, shard_bytes 1 MiB, "
        "vocab 4096: tests the script (python start-up dominates the times)",
    )
    args = p.parse_args()
    if args.quick:
        args.sizes, args.vocab, args.ceiling_gb, args.shard_bytes = [0.01, 0.03], 4096, 0.03, 1 << 20
    file_mib, sample_mb = (2, 5) if args.quick else (48, 64)
    t0 = time.time()
    texts = source_texts()
    tok = make_tokenizer(args.out / f"tokenizer-{args.vocab}", texts, args.vocab, sample_mb)
    rows = []
    for size in args.sizes:
        corpus = args.out / f"corpus-{size:g}gb"
        info = make_corpus(corpus, size, texts, file_mib, int(args.max_doc_mb * 1e6))
        print(f"corpus {corpus}: {info} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
        ceil = ceiling(corpus, tok, args.ceiling_gb, args.chunk_bytes) | longest_doc_memory(corpus, tok)
        for w in args.workers:
            r = run_build(corpus, tok, args.out / "dataset", w, args.chunk_bytes, args.shard_bytes)
            rows.append({"size": size, "gb_text": info["gb_text"], "workers": w, **r, **ceil})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        f"\n`stacking data` on {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable, load average "
        f"{os.getloadavg()[0]:.1f}), BPE vocab {args.vocab}, chunk_bytes {args.chunk_bytes}, shard_bytes "
        f"{args.shard_bytes}; {time.time() - t0:.0f}s in all\n"
    )
    print(table(rows, args.sizes))
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
