"""`stacking eval`: downstream evaluation of any checkpoint dir this project writes, through lm-evaluation-harness
(docs/evaluation.md) — bytes, BPE or pretrained tokenizer, any grown shape, no HF conversion.

    stacking eval CKPT_OR_RUN --tasks T1,T2 [--include_path DIR] [--limit N] [--num_fewshot K] [--out FILE]
                  [--data_dir DIR] [--batch_size B] [--device cpu] [--dtype float32] [--log_samples true]
    stacking eval-tasks --data_dir DIR --out DIR [--seed S] [--context_lines K] [--n_mc N] [--n_ppl N] …

(before the two are wired into `stacking`: ``python -m stacking.evaluate eval …`` and ``… build-tasks …``.)

The model is a litgpt ``GPT`` read by `stacking.checkpoint.load_checkpoint`, the tokenizer its dataset's
(`stacking.tokenizer.load_dataset_tokenizer`): ``--data_dir``, else ``data_dir`` in stacking_meta.json, else the
``data_dir`` of the run's config.yaml. :class:`Scorer` computes what lm-eval asks for (log-likelihoods, rolling
log-likelihoods in windows of the model's block size, greedy continuations) and ``lm_class()`` is the
``lm_eval.api.model.LM`` around it. `build_tasks` writes the offline tasks ``nextline_mc`` and ``heldout_ppl``
(the YAMLs of stacking/eval_tasks/ with their JSONL rows) from a dataset's held-out documents.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import torch

from stacking.checkpoint import WEIGHTS, load_checkpoint
from stacking.cli import UsageError, parse, parser, run_command
from stacking.errors import CheckpointError, DataError, EvalError, ModelConfigError
from stacking.eval_data import TASKS_META, build_tasks, tokenizer_id
from stacking.eval_records import per_doc_scores, result_name
from stacking.fsutil import sha256_file, write_json

MISSING = "lm-eval is not installed; pip install -e '.[eval]'"
LOCAL_TASKS = ("nextline_mc", "heldout_ppl")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


USER_ERRORS = (EvalError, DataError, CheckpointError, ModelConfigError)


def require_lm_eval():
    """The ``lm_eval`` module, imported offline (HF_DATASETS_OFFLINE and HF_HUB_OFFLINE default to 1: nothing is
    downloaded); an EvalError naming the extra when it is not installed."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import lm_eval
        import lm_eval.api.model
    except ImportError:
        raise EvalError(MISSING) from None
    logging.getLogger("lm_eval.api.task").addFilter(_quiet)
    return lm_eval


def _quiet(record: logging.LogRecord) -> bool:
    """Drop lm-eval's advice on --metadata, which it logs for every task with a custom_dataset loader (ours)."""
    return "Custom kwargs can be passed" not in record.getMessage()


# ---- what to evaluate ---------------------------------------------------------------------------------------------
def final_checkpoint(run_dir: Path) -> Path:
    """A run dir's last checkpoint: checkpoints/tokens-N with the largest N (the end is always saved)."""
    ckpts = sorted(p for p in (run_dir / "checkpoints").glob("tokens-*") if re.fullmatch(r"tokens-\d+", p.name))
    if not ckpts:
        raise EvalError(f"run dir {str(run_dir)!r} has no checkpoints/tokens-… dir (has the run saved one yet?)")
    return max(ckpts, key=lambda p: int(p.name.split("-")[1]))


def resolve_target(target: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint dir, run dir or None) of CKPT_OR_RUN: a checkpoint dir (with its run dir when it lies in one's
    checkpoints/), or a run dir (then its final checkpoint)."""
    p = Path(target)
    if (p / WEIGHTS).is_file() or (p / "model_config.yaml").is_file():
        run = p.parent.parent
        return p, run if p.parent.name == "checkpoints" and (run / "config.yaml").is_file() else None
    if (p / "config.yaml").is_file() or (p / "checkpoints").is_dir():
        return final_checkpoint(p), p
    if not p.exists():
        raise EvalError(f"{str(p)!r} does not exist (expected a checkpoint dir or a run dir)")
    raise EvalError(
        f"{str(p)!r} is neither a checkpoint dir ({WEIGHTS} + model_config.yaml) nor a run dir "
        "(config.yaml + checkpoints/)"
    )


def _data_dir_ok(d: Path, where: str) -> Path:
    if not (d / "meta.json").is_file():
        raise EvalError(
            f"data dir {str(d)!r} ({where}) has no meta.json; pass --data_dir, the dataset the model "
            "was trained on (its tokenizer is read from there)"
        )
    return d


def resolve_data_dir(given: str | Path | None, meta: dict, run_dir: Path | None) -> Path:
    """The dataset dir whose tokenizer the model reads: ``given``, else stacking_meta.json's ``data_dir``, else the
    ``data_dir`` of the run's config.yaml (the run dir holding the checkpoint, or stacking_meta.json's run_dir)."""
    import yaml

    if given:
        return _data_dir_ok(Path(given), "--data_dir")
    if meta.get("data_dir"):
        return _data_dir_ok(Path(meta["data_dir"]), "stacking_meta.json data_dir")
    for run in (run_dir, meta.get("run_dir")):
        cfg = Path(run) / "config.yaml" if run else None
        if cfg is not None and cfg.is_file():
            data = (yaml.safe_load(cfg.read_text()) or {}).get("data_dir")
            if data:
                return _data_dir_ok(Path(data), f"data_dir of {cfg}")
    raise EvalError(
        "no data dir to read the tokenizer from (the checkpoint lies in no run dir with a config.yaml "
        "and its stacking_meta.json names none); pass --data_dir"
    )


def build_model(ckpt, tokenizer, device: str, dtype: str) -> torch.nn.Module:
    """The checkpoint's litgpt GPT in eval mode on ``device``, after checking the tokenizer fits its embedding."""
    from litgpt import GPT

    rows = ckpt.config.padded_vocab_size
    if tokenizer.vocab_size > rows:
        raise EvalError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model at {ckpt.path} embeds only "
            f"{rows}: pass the --data_dir the model was trained on"
        )
    if dtype not in DTYPES:
        raise EvalError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise EvalError(f"--device {device!r} cannot be used here: {str(e).strip().splitlines()[0]}") from None
    model = GPT(ckpt.config)
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model.to(device=dev, dtype=DTYPES[dtype]).eval()


# ---- the model, as lm-eval sees it --------------------------------------------------------------------------------
def windows(prefix: list[int], targets: list[int], block: int) -> list[tuple[list[int], list[int]]]:
    """(input, targets) pairs predicting each of ``targets`` once after ``prefix`` (non-empty): ≤ ``block`` targets
    each, scored at the input's last positions, the input the ≤ ``block`` tokens before its last target. With
    ``prefix = [EOT]``: lm-eval's rolling windows (``get_rolling_token_windows`` + ``make_disjoint_window``)."""
    seq, out = prefix + targets, []
    for a in range(0, len(targets), block):
        end = len(prefix) + min(a + block, len(targets))  # seq[end - 1] is the window's last target
        out.append((seq[max(0, end - 1 - block) : end - 1], targets[a : a + block]))
    return out


class Scorer:
    """Log-likelihoods and greedy continuations of a litgpt GPT over a dataset tokenizer's ids, with lm-eval's
    conventions: a context's trailing whitespace moves to the continuation, which is the tail of the encoded pair
    after the context's own ids; every sequence starts after the end-of-text id (where a document starts in
    training); an input longer than the block keeps its last tokens; a rolling log-likelihood predicts each token
    once, in windows of the block size, the last one with full context (lm-eval's ``get_rolling_token_windows``)."""

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 16):
        self.model, self.tok, self.batch_size = model, tokenizer, max(1, int(batch_size))
        self.block = int(model.max_seq_length)
        self.eot, self.vocab = int(tokenizer.eot_id), int(tokenizer.vocab_size)
        self.device = next(model.parameters()).device

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole = self.tok.encode(context + continuation)
        n_ctx = len(self.tok.encode(context))
        return whole[:n_ctx], whole[n_ctx:]

    def score(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(Σ log p(targets | prefix), all greedy) per (prefix, targets) request, in batches of similar length."""
        items = [(r, w) for r, (prefix, targets) in enumerate(requests) for w in windows(prefix, targets, self.block)]
        items.sort(key=lambda item: -len(item[1][0]))
        total, greedy = [0.0] * len(requests), [True] * len(requests)
        for s in range(0, len(items), self.batch_size):
            batch = items[s : s + self.batch_size]
            for (r, _), (lp, g) in zip(batch, self._forward([w for _, w in batch])):
                total[r] += lp
                greedy[r] = greedy[r] and g
        return list(zip(total, greedy))

    @torch.inference_mode()
    def _forward(self, batch: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        idx = torch.zeros((len(batch), max(len(x) for x, _ in batch)), dtype=torch.long)
        for row, (x, _) in enumerate(batch):  # right-padded: a causal model's earlier positions never see the pad
            idx[row, : len(x)] = torch.tensor(x)
        logits = self.model(idx.to(self.device))
        out = []
        for row, (x, y) in enumerate(batch):
            lp = logits[row, len(x) - len(y) : len(x)].float().log_softmax(-1)
            target = torch.tensor(y, device=lp.device)
            best = lp[:, : self.vocab].argmax(-1)
            out.append((float(lp.gather(-1, target[:, None]).double().sum()), bool((best == target).all())))
        return out

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        requests = []
        for context, continuation in pairs:
            ctx, cont = self.encode_pair(context, continuation)
            requests.append(([self.eot, *ctx], cont))
        return self.score(requests)

    def loglikelihood_rolling(self, texts: list[str]) -> list[float]:
        return [lp for lp, _ in self.score([([self.eot], self.tok.encode(t)) for t in texts])]

    @torch.inference_mode()
    def generate(self, context: str, until: list[str], max_tokens: int) -> str:
        """Greedy continuation of ``context`` up to the first of ``until``, end-of-text or ``max_tokens`` tokens
        (no KV cache: each step reruns the last block of tokens)."""
        ids, new, text = [self.eot, *self.tok.encode(context)], [], ""
        for _ in range(max_tokens):
            logits = self.model(torch.tensor([ids[-self.block :]], device=self.device))
            nxt = int(logits[0, -1, : self.vocab].argmax())
            if nxt == self.eot:
                break
            ids.append(nxt)
            new.append(nxt)
            text = self.tok.decode(new)
            if any(u and u in text for u in until):
                break
        for u in until:
            text = text.split(u)[0] if u else text
        return text


def _generation_args(kwargs: dict | None) -> tuple[list[str], int]:
    kwargs = dict(kwargs or {})
    until = kwargs.get("until") or []
    return ([until] if isinstance(until, str) else list(until)), int(kwargs.get("max_gen_toks", 256))


@functools.cache
def lm_class():
    """``StackingLM``: the ``lm_eval.api.model.LM`` around a :class:`Scorer` (defined once lm-eval is imported)."""
    lm_eval = require_lm_eval()

    class StackingLM(lm_eval.api.model.LM):
        """A litgpt checkpoint and its dataset's tokenizer as an lm-eval model (greedy generation only)."""

        def __init__(self, scorer: Scorer):
            super().__init__()
            self.scorer = scorer
            self._device = scorer.device

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return self.scorer.loglikelihood([req.args for req in requests])

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return self.scorer.loglikelihood_rolling([req.args[0] for req in requests])

        def generate_until(self, requests, disable_tqdm: bool = False):
            return [self.scorer.generate(req.args[0], *_generation_args(req.args[1])) for req in requests]

    return StackingLM


# ---- tasks and evaluation -----------------------------------------------------------------------------------------
def task_manager(tasks: list[str], include_path: list[str] | None):
    """lm-eval's TaskManager for ``tasks``: only the include paths when they hold every task (indexing lm-eval's
    own ~15k task files takes seconds), else those and the built-in tasks; EvalError for an unknown task."""
    from lm_eval.tasks import TaskManager

    for path in include_path or ():
        if not Path(path).is_dir():
            raise EvalError(f"--include_path {path!r} is not a dir (build local tasks with `stacking eval-tasks`)")
    named = [t for t in tasks if "*" not in t and not Path(t).is_file()]
    if include_path:
        tm = TaskManager(include_path=list(include_path), include_defaults=False)
        if len(named) == len(tasks) and all(t in tm.all_tasks for t in tasks):
            return tm
    tm = TaskManager(include_path=list(include_path) if include_path else None)
    unknown = [t for t in named if t not in tm.all_tasks]
    if unknown:
        local = [t for t in unknown if t in LOCAL_TASKS]
        hint = (
            f"; {', '.join(local)}: build with `stacking eval-tasks --data_dir DATA --out DIR`, then pass "
            "--include_path DIR"
            if local
            else "; see `lm-eval ls tasks` or pass --include_path"
        )
        raise EvalError(f"unknown task(s) {', '.join(unknown)}{hint}")
    return tm


def _simple_evaluate(lm_eval, lm, tasks, tm, limit, num_fewshot) -> dict:
    """lm_eval.simple_evaluate with the samples logged (each question's score); a dataset that cannot be loaded
    offline is one EvalError line."""
    try:
        return lm_eval.simple_evaluate(
            model=lm, tasks=tasks, task_manager=tm, limit=limit, num_fewshot=num_fewshot, log_samples=True
        )
    except Exception as e:  # datasets / huggingface_hub raise their own classes
        origin = type(e).__module__.split(".")[0]
        if not (isinstance(e, OSError) or origin in ("datasets", "huggingface_hub", "requests", "httpx")):
            raise
        line = (str(e).strip().splitlines() or [""])[0][:240]
        raise EvalError(
            f"a task's dataset cannot be loaded offline ({type(e).__name__}: {line}); fill the local "
            "HF cache first (docs/evaluation.md)"
        ) from None


def _tasks_provenance(include_path: list[str] | None, tokenizer) -> dict:
    """tasks.json of each include path built by `stacking eval-tasks`; a note when its tokenizer is not the
    model's (heldout_ppl's token_loss counts that tokenizer's tokens)."""
    out = {}
    for path in include_path or ():
        meta_path = Path(path) / TASKS_META
        if meta_path.is_file():
            out[str(path)] = meta = json.loads(meta_path.read_text())
            meta["sha256"] = {f.name: sha256_file(f) for f in sorted(Path(path).glob("*.jsonl"))}
            if meta.get("tokenizer_id") != tokenizer_id(tokenizer):
                print(
                    f"stacking eval: note: the tasks in {path} were built with another tokenizer "
                    f"({meta.get('tokenizer_id')}); heldout_ppl's token_loss and token_perplexity count its tokens, "
                    "bits_per_byte does not",
                    file=sys.stderr,
                )
    return out


def evaluate(
    target: str | Path,
    tasks: list[str],
    *,
    include_path: list[str] | None = None,
    limit=None,
    num_fewshot: int | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
    log_samples: bool = False,
) -> dict:
    """Evaluate a checkpoint dir or a run dir's final checkpoint on lm-eval ``tasks``: lm-eval's results (its
    ``results``, ``versions``, ``n-shot``, ``n-samples``, ``higher_is_better``, ``configs``, ``groups``) plus the
    checkpoint (path, sha256 of its weights, stacking_meta, growth), the data dir, tokenizer and lm-eval version,
    and ``per_doc``: each question's score (`stacking.eval_records.per_doc_scores`; lm-eval always logs the samples
    here, ``log_samples`` only decides whether the full samples are kept in the record too)."""
    from stacking.tokenizer import load_dataset_tokenizer

    lm_eval = require_lm_eval()
    ckpt_dir, run_dir = resolve_target(target)
    ckpt = load_checkpoint(ckpt_dir)
    data = resolve_data_dir(data_dir, ckpt.meta or {}, run_dir)
    tok = load_dataset_tokenizer(data)
    model = build_model(ckpt, tok, device, dtype)
    tm = task_manager(tasks, include_path)
    provenance = _tasks_provenance(include_path, tok)
    t0 = time.perf_counter()
    out = _simple_evaluate(lm_eval, lm_class()(Scorer(model, tok, batch_size)), tasks, tm, limit, num_fewshot)
    per_doc = per_doc_scores(out.get("samples") or {})  # each question's score: a paired question bootstrap
    record = {
        "checkpoint": {
            "path": str(ckpt_dir.resolve()),
            "run_dir": str(run_dir.resolve()) if run_dir else None,
            "sha256": sha256_file(ckpt_dir / WEIGHTS),
            "stacking_meta": ckpt.meta,
            "growth": ckpt.growth,
            "n_layer": ckpt.config.n_layer,
            "n_embd": ckpt.config.n_embd,
            "block_size": ckpt.config.block_size,
            "params": sum(p.numel() for p in model.parameters()),
        },
        "data_dir": str(data.resolve()),
        "tokenizer": {"id": tokenizer_id(tok), **tok.spec.as_dict()},
        "lm_eval_version": lm_eval.__version__,
        "eval": {
            "tasks": tasks,
            "include_path": include_path,
            "limit": limit,
            "num_fewshot": num_fewshot,
            "batch_size": batch_size,
            "device": device,
            "dtype": dtype,
            "task_sources": provenance,
            "wall_time_s": round(time.perf_counter() - t0, 3),
        },
        **{
            k: out[k]
            for k in ("results", "groups", "versions", "n-shot", "n-samples", "higher_is_better", "configs")
            if k in out
        },
        "per_doc": per_doc,
    }
    if log_samples and "samples" in out:
        record["samples"] = out["samples"]
    return json.loads(json.dumps(record, default=lm_eval.utils.handle_non_serializable))


def default_out(record: dict) -> Path:
    """``eval/`` in the run dir (next to the checkpoint dir outside a run): ``{checkpoint}_{tasks}[_limitN][_Kshot]
    .json``."""
    ck, ev = record["checkpoint"], record["eval"]
    base = Path(ck["run_dir"] or Path(ck["path"]).parent) / "eval"
    return base / result_name(Path(ck["path"]).name, ev["tasks"], ev["limit"], ev["num_fewshot"])


# ---- command lines ------------------------------------------------------------------------------------------------
def eval_parser():
    p = parser(
        "stacking eval",
        "Evaluate a checkpoint dir, or a run dir's final checkpoint, on lm-evaluation-"
        "harness tasks through its Python API, with the model's own dataset tokenizer (no HF conversion). "
        "Nothing is downloaded: HF_DATASETS_OFFLINE/HF_HUB_OFFLINE default to 1, so standard tasks "
        "(hellaswag, arc_easy, piqa, …) need their datasets in the local HF cache (docs/evaluation.md). "
        "The offline tasks nextline_mc and heldout_ppl come from `stacking eval-tasks`.",
    )
    p.add_argument(
        "target",
        metavar="CKPT_OR_RUN",
        help="checkpoint dir (lit_model.pth + model_config.yaml) or "
        "run dir (its checkpoints/tokens-… with the most tokens)",
    )
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names, e.g. nextline_mc,heldout_ppl")
    p.add_argument(
        "--include_path",
        default=None,
        help="dir(s) of task YAMLs, comma-separated (e.g. the --out of `stacking eval-tasks`)",
    )
    p.add_argument("--limit", type=float | None, default=None, help="documents per task (< 1: a fraction)")
    p.add_argument("--num_fewshot", type=int | None, default=None, help="few-shot examples (default: the task's)")
    p.add_argument(
        "--out",
        default=None,
        help="results JSON (default: eval/ in the run dir, or next to the "
        "checkpoint dir: CKPT_TASKS[_limitN][_Kshot].json)",
    )
    p.add_argument(
        "--data_dir",
        default=None,
        help="dataset dir whose tokenizer the model reads (default: the run's config.yaml data_dir)",
    )
    p.add_argument("--batch_size", type=int, default=16, help="sequences per forward pass")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=list(DTYPES),
        help="model weights' dtype (log-probabilities are taken in float32)",
    )
    p.add_argument("--log_samples", type=bool, default=False, help="also write lm-eval's per-document samples")
    return p


def _limit(value: float | None):
    if value is None:
        return None
    if value <= 0:
        raise UsageError(f"argument --limit: must be positive, got {value:g}")
    return int(value) if value >= 1 and value == int(value) else value


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _eval(argv: list[str]) -> int:
    args = parse(eval_parser(), argv)
    tasks = _split(args.tasks)
    if not tasks:
        raise UsageError("argument --tasks: give at least one task name")
    record = evaluate(
        args.target,
        tasks,
        include_path=_split(args.include_path) or None,
        limit=_limit(args.limit),
        num_fewshot=args.num_fewshot,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        log_samples=args.log_samples,
    )
    path = Path(args.out) if args.out else default_out(record)
    write_json(path, record)
    from lm_eval.utils import make_table

    print(make_table(record))
    print(f"wrote {path} ({record['eval']['wall_time_s']:.1f} s)")
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """``stacking eval CKPT_OR_RUN --tasks T1,T2 …``."""
    return run_command("stacking eval", _eval, sys.argv[1:] if argv is None else argv, USER_ERRORS)


def tasks_parser():
    p = parser(
        "stacking eval-tasks",
        "Build the offline lm-eval tasks from a dataset's held-out (val) documents: "
        "nextline_mc (the true next line among 4 lines of the same file, after --context_lines lines) and "
        "heldout_ppl (rolling log-likelihood of the files, in pieces of ≤ --max_doc_tokens tokens). Writes "
        "the task YAMLs, their JSONL rows and tasks.json into --out; evaluate with `stacking eval CKPT "
        "--tasks nextline_mc,heldout_ppl --include_path OUT`. Deterministic in --seed.",
    )
    p.add_argument("--data_dir", required=True, help="dataset dir (`stacking data`): its val split and tokenizer")
    p.add_argument("--out", required=True, help="dir to write the tasks into (created; our files overwritten)")
    p.add_argument("--seed", type=int, default=0, help="picks the lines, distractors and orders")
    p.add_argument("--context_lines", type=int, default=8, help="nextline_mc: lines of context before the line")
    p.add_argument("--n_mc", type=int, default=1000, help="nextline_mc: questions")
    p.add_argument("--n_ppl", type=int, default=500, help="heldout_ppl: file pieces")
    p.add_argument("--max_doc_tokens", type=int, default=2048, help="heldout_ppl: tokens per piece (cut at line ends)")
    p.add_argument("--max_docs", type=int, default=2000, help="val documents read (the first ones)")
    return p


def _eval_tasks(argv: list[str]) -> int:
    args = parse(tasks_parser(), argv)
    out = build_tasks(
        args.data_dir,
        args.out,
        seed=args.seed,
        context_lines=args.context_lines,
        n_mc=args.n_mc,
        n_ppl=args.n_ppl,
        max_doc_tokens=args.max_doc_tokens,
        max_docs=args.max_docs,
    )
    meta = json.loads((out / TASKS_META).read_text())
    print(
        f"wrote {out}: nextline_mc {meta['rows']['nextline_mc']} questions, heldout_ppl "
        f"{meta['rows']['heldout_ppl']} pieces ({meta['heldout_ppl_tokens']:,} tokens) from "
        f"{meta['val_documents']} val documents"
    )
    return 0


def eval_tasks_main(argv: list[str] | None = None) -> int:
    """``stacking eval-tasks --data_dir DIR --out DIR …``."""
    return run_command("stacking eval-tasks", _eval_tasks, sys.argv[1:] if argv is None else argv, USER_ERRORS)


def main(argv: list[str] | None = None) -> int:
    """``python -m stacking.evaluate eval …`` / ``… build-tasks …``: `stacking eval` / `stacking eval-tasks`."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"eval": eval_main, "build-tasks": eval_tasks_main, "eval-tasks": eval_tasks_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m stacking.evaluate {eval,build-tasks} … (--help for each)", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
