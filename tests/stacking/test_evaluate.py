"""`stacking eval` (stacking/evaluate.py): the lm-eval wrapper against the model's own forward pass, the offline
tasks built from held-out data, the command end to end, and its one-line errors. Nothing is downloaded."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BLOCK = 32
needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed (pip install -e '.[eval]')"
)


@pytest.fixture(autouse=True)
def _offline_one_thread(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend with the rest of the suite
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bytes_data(tmp_path_factory) -> Path:
    from stacking.corpus import DataConfig, build_dataset

    out = tmp_path_factory.mktemp("evdata") / "ds"
    return build_dataset(
        DataConfig(out=str(out), sources=["stdlib"], max_files=30, tokenizer="bytes", val_fraction=0.3, workers=1)
    )


def _checkpoint(path: Path, vocab_size: int, meta: dict | None = None, seed: int = 0, block: int = BLOCK) -> Path:
    """A randomly initialised tiny litgpt model (PyTorch's default init: far from uniform predictions)."""
    from litgpt import GPT

    from stacking.checkpoint import save_litgpt_checkpoint
    from stacking.models import model_config

    torch.manual_seed(seed)
    config = model_config("tiny-L2-D64", vocab_size=vocab_size, block_size=block)
    save_litgpt_checkpoint(path, GPT(config).state_dict(), config, meta or {"tokens": 0, "flops": 0.0})
    return path


def _run_dir(tmp: Path, data: Path, vocab_size: int) -> Path:
    """A run dir as `stacking train` leaves it: config.yaml (data_dir) and two checkpoints."""
    run = tmp / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data_dir": str(data), "model": "tiny-L2-D64"}))
    _checkpoint(run / "checkpoints" / "tokens-000000000512", vocab_size, seed=1)
    _checkpoint(run / "checkpoints" / "tokens-000000001024", vocab_size, {"tokens": 1024, "run_dir": str(run)})
    return run


def _lm(ckpt: Path, data: Path, batch_size: int = 3):
    from stacking.checkpoint import load_checkpoint
    from stacking.evaluate import Scorer, build_model, lm_class
    from stacking.tokenizer import load_dataset_tokenizer

    tok = load_dataset_tokenizer(data)
    model = build_model(load_checkpoint(ckpt), tok, "cpu", "float32")
    return lm_class()(Scorer(model, tok, batch_size)), model, tok


def _logprobs(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[j] | ids[:j]) for j ≥ 1, from one plain forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].double()


def _reference_loglikelihood(model, tok, context: str, continuation: str, block: int = BLOCK) -> float | None:
    """lm-eval's (HFLM's) split: the context's trailing whitespace moves to the continuation, whose tokens are those of
    the encoded pair after the context's; one pass over the last block + 1 tokens. None: the continuation is longer
    than the block."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole, n_ctx = tok.encode(context + continuation), len(tok.encode(context))
    if len(whole) - n_ctx > block:
        return None
    seq = ([tok.eot_id] + whole)[-(block + 1) :]
    return float(_logprobs(model, seq)[-(len(whole) - n_ctx) :].sum())


PAIRS = [
    ("def area(r):\n", "    return 3.14159 * r * r\n"),
    ("", "import os\n"),
    ("class Point:\n    def __init__(self, x, y):\n        self.x = x\n", "        self.y = y\n"),
    ("x = [1, 2, 3]\nprint(len(x))", "\n"),
]


@needs_lm_eval
@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_loglikelihood_is_the_sum_of_the_models_token_logprobs(kind, bytes_data, tiny_data, tmp_path):
    """What lm-eval gets for (context, continuation) = Σ of the model's own log-probs of the continuation's tokens
    after EOT + context (contexts longer than the block keep their last tokens)."""
    from lm_eval.api.instance import Instance

    data = bytes_data if kind == "bytes" else tiny_data
    vocab = json.loads((data / "meta.json").read_text())["vocab_size"]
    lm, model, tok = _lm(_checkpoint(tmp_path / "ck", vocab), data)
    got = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(PAIRS)])
    for (context, continuation), (ll, greedy) in zip(PAIRS, got):
        assert ll == pytest.approx(_reference_loglikelihood(model, tok, context, continuation), rel=1e-5, abs=1e-4)
        assert isinstance(greedy, bool)
    # lm-eval's convention: a context's trailing whitespace belongs to the continuation
    moved = lm.loglikelihood(
        [Instance("loglikelihood", {}, ("x = 1\ny =", " 2"), 0), Instance("loglikelihood", {}, ("x = 1\ny = ", "2"), 1)]
    )
    assert moved[0][0] == pytest.approx(moved[1][0], rel=1e-6)
    # a continuation longer than the block is scored in the rolling windows (each token once)
    text = "".join(p + c for p, c in PAIRS) * 2
    ((long, _),) = lm.loglikelihood([Instance("loglikelihood", {}, ("", text), 0)])
    assert long == pytest.approx(
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])[0], rel=1e-6
    )


@needs_lm_eval
def test_rolling_loglikelihood_is_the_validation_loss_on_the_same_tokens(bytes_data, tmp_path):
    """A held-out file of k × block tokens: its rolling log-likelihood is −(mean token loss × tokens) of the
    training loss (`stacking.module.lm_loss`) on the windows [EOT + file] cut every block tokens; a length that is
    no multiple of the block matches lm-eval's own rolling windows (the last one with full context)."""
    from lm_eval.api.instance import Instance
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from stacking.data import load_tokens
    from stacking.module import lm_loss

    lm, model, tok = _lm(_checkpoint(tmp_path / "ck", 257), bytes_data)
    val = np.asarray(load_tokens(bytes_data, "val"))
    doc = val[: int(np.flatnonzero(val == 256)[0])]
    assert len(doc) > 4 * BLOCK and doc[: 4 * BLOCK].max() < 128  # ASCII: text ↔ bytes is exact
    ids = doc[: 3 * BLOCK].tolist()
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (tok.decode(ids),), 0)])
    stream = torch.tensor([256] + ids)
    windows = torch.stack([stream[i * BLOCK : (i + 1) * BLOCK + 1] for i in range(3)])
    with torch.no_grad():
        loss = float(lm_loss(model, windows[:, :-1], windows[:, 1:]))
    assert -rolling / len(ids) == pytest.approx(loss, rel=1e-5)

    ids = doc[: 3 * BLOCK + 7].tolist()
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (tok.decode(ids),), 0)])
    ref = 0.0
    for context, pred in map(make_disjoint_window, get_rolling_token_windows(ids, 256, BLOCK, 1)):
        ref += float(_logprobs(model, context + pred)[-len(pred) :].sum())
    assert rolling == pytest.approx(ref, rel=1e-5)


def test_build_tasks_rows_are_true_and_deterministic(bytes_data, tmp_path):
    from stacking.eval_data import build_tasks, val_documents
    from stacking.tokenizer import load_dataset_tokenizer

    a = build_tasks(bytes_data, tmp_path / "a", n_mc=40, n_ppl=30, max_doc_tokens=256)
    b = build_tasks(bytes_data, tmp_path / "b", n_mc=40, n_ppl=30, max_doc_tokens=256)
    c = build_tasks(bytes_data, tmp_path / "c", n_mc=40, n_ppl=30, max_doc_tokens=256, seed=1)
    for name in ("nextline_mc.jsonl", "heldout_ppl.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes() != (c / name).read_bytes()
    assert {p.name for p in a.iterdir()} >= {"nextline_mc.yaml", "heldout_ppl.yaml", "stacking_tasks.py", "tasks.json"}
    tok = load_dataset_tokenizer(bytes_data)
    texts = val_documents(bytes_data, tok, 2000)
    mc = [json.loads(x) for x in (a / "nextline_mc.jsonl").read_text().splitlines()]
    assert len(mc) == 40
    for row in mc:
        assert len(set(row["choices"])) == 4 and 0 <= row["gold"] < 4
        assert row["context"].count("\n") == 8
        assert row["context"] + row["choices"][row["gold"]] in texts[row["doc"]] + "\n"
    ppl = [json.loads(x) for x in (a / "heldout_ppl.jsonl").read_text().splitlines()]
    assert len(ppl) == 30 and all(r["n_tokens"] == len(tok.encode(r["text"])) for r in ppl)
    assert all(r["text"] in texts[r["doc"]] for r in ppl)


@needs_lm_eval
def test_eval_command_end_to_end(bytes_data, tmp_path, capsys):
    """`stacking eval RUN_DIR --tasks nextline_mc,heldout_ppl --include_path TASKS --limit 20`: the final checkpoint,
    the run's data dir, results in RUN_DIR/eval/; heldout_ppl's token_loss is the mean token loss of the model."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from stacking.evaluate import eval_main, eval_tasks_main
    from stacking.fsutil import sha256_file

    tasks = tmp_path / "tasks"
    assert (
        eval_tasks_main(
            [
                "--data_dir",
                str(bytes_data),
                "--out",
                str(tasks),
                "--n_mc",
                "50",
                "--n_ppl",
                "30",
                "--max_doc_tokens",
                "200",
            ]
        )
        == 0
    )
    run = _run_dir(tmp_path, bytes_data, 257)
    rc = eval_main([str(run), "--tasks", "nextline_mc,heldout_ppl", "--include_path", str(tasks), "--limit", "20"])
    assert rc == 0, capsys.readouterr().err
    out = run / "eval" / "tokens-000000001024_nextline_mc+heldout_ppl_limit20.json"
    assert str(out) in capsys.readouterr().out
    rec = json.loads(out.read_text())
    final = run / "checkpoints" / "tokens-000000001024"
    assert rec["checkpoint"]["path"] == str(final.resolve())
    assert rec["checkpoint"]["sha256"] == sha256_file(final / "lit_model.pth")
    assert rec["checkpoint"]["stacking_meta"]["tokens"] == 1024 and rec["data_dir"] == str(bytes_data.resolve())
    assert rec["versions"] == {"nextline_mc": 1.0, "heldout_ppl": 1.0} and rec["lm_eval_version"]
    assert rec["n-samples"]["nextline_mc"]["effective"] == 20 == rec["n-samples"]["heldout_ppl"]["effective"]
    assert 0.0 <= rec["results"]["nextline_mc"]["acc,none"] <= 1.0
    # each question's score, for the paired question bootstrap: its mean is lm-eval's aggregate
    per_doc = rec["per_doc"]["nextline_mc"]
    assert per_doc["doc_id"] == list(range(20)) and len(per_doc["docs_sha256"]) == 64
    for metric in ("acc", "acc_norm"):
        assert set(per_doc[metric]) <= {0.0, 1.0}
        assert np.mean(per_doc[metric]) == pytest.approx(rec["results"]["nextline_mc"][f"{metric},none"], abs=1e-12)
    assert "heldout_ppl" not in rec["per_doc"]  # (loglikelihood, weight) pairs per piece: no per-question number
    assert "samples" not in rec  # the full samples only with --log_samples
    other = eval_main(
        [
            str(run / "checkpoints" / "tokens-000000000512"),
            "--tasks",
            "nextline_mc",
            "--include_path",
            str(tasks),
            "--limit",
            "20",
            "--out",
            str(tmp_path / "other.json"),
        ]
    )
    assert other == 0
    # another checkpoint on the same questions: the same question hash (what pairs two runs' questions)
    assert (
        json.loads((tmp_path / "other.json").read_text())["per_doc"]["nextline_mc"]["docs_sha256"]
        == per_doc["docs_sha256"]
    )
    _, model, _ = _lm(final, bytes_data)
    rows = [json.loads(x) for x in (tasks / "heldout_ppl.jsonl").read_text().splitlines()][:20]
    total = 0.0
    for row in rows:
        ids = list(row["text"].encode())
        for context, pred in map(make_disjoint_window, get_rolling_token_windows(ids, 256, BLOCK, 1)):
            total += float(_logprobs(model, context + pred)[-len(pred) :].sum())
    loss = -total / sum(r["n_tokens"] for r in rows)
    assert rec["results"]["heldout_ppl"]["token_loss,none"] == pytest.approx(loss, rel=1e-5)


def test_per_doc_scores_keep_numbers_per_question_in_doc_order():
    from stacking.eval_records import per_doc_scores

    def row(doc, acc, filt="none", doc_hash="h"):
        return {
            "doc_id": doc,
            "filter": filt,
            "doc_hash": f"{doc_hash}{doc}",
            "target_hash": "t",
            "metrics": ["acc", "ppl"],
            "acc": acc,
            "ppl": [-1.5, 3],
        }

    samples = {
        "mc": [row(2, 1.0), row(0, 0.0), row(1, 1.0), row(0, 1.0, "maj"), row(1, 0.0, "maj"), row(2, 0.0, "maj")]
    }
    out = per_doc_scores(samples)["mc"]
    assert out["doc_id"] == [0, 1, 2]
    assert out["acc"] == [0.0, 1.0, 1.0] and out["acc_maj"] == [1.0, 0.0, 0.0]  # named as metrics() names them
    assert "ppl" not in out and "ppl_maj" not in out  # pairs, not numbers
    same = per_doc_scores({"mc": list(reversed(samples["mc"]))})["mc"]["docs_sha256"]
    other = per_doc_scores({"mc": [row(d, 1.0, doc_hash="x") for d in range(3)]})["mc"]["docs_sha256"]
    assert same == out["docs_sha256"] != other  # order-free; other questions, another hash
    assert per_doc_scores({"gen": [{"doc_id": 0, "metrics": ["bleu"], "bleu": [1, 2]}]}) == {}


@needs_lm_eval
def test_samples_hold_the_models_loglikelihoods(bytes_data, tmp_path):
    """Through lm-eval's own request building (nextline_mc, 3 documents × 4 choices), each choice's log-likelihood
    in its logged samples is the model's."""
    from stacking.eval_data import build_tasks
    from stacking.evaluate import evaluate

    tasks = build_tasks(bytes_data, tmp_path / "tasks", n_mc=10, n_ppl=2)
    ck = _checkpoint(tmp_path / "ck", 257, block=128)
    rec = evaluate(ck, ["nextline_mc"], include_path=[str(tasks)], limit=3, data_dir=bytes_data, log_samples=True)
    _, model, tok = _lm(ck, bytes_data)
    samples = rec["samples"]["nextline_mc"]
    assert len(samples) == 3
    checked = 0
    for sample in samples:
        for (context, continuation), ((ll, _),) in zip(sample["arguments"], sample["resps"]):
            ref = _reference_loglikelihood(model, tok, context, continuation, block=128)
            if ref is not None:  # lines are < 128 bytes but for a rare long one
                assert ll == pytest.approx(ref, rel=1e-5)
                checked += 1
    assert checked >= 10


def test_missing_lm_eval_is_one_line(monkeypatch, tmp_path, capsys):
    from stacking.evaluate import eval_main

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    assert eval_main([str(tmp_path), "--tasks", "nextline_mc"]) == 2
    assert capsys.readouterr().err == "stacking eval: error: lm-eval is not installed; pip install -e '.[eval]'\n"


@needs_lm_eval
def test_errors_are_one_line(bytes_data, tmp_path, capsys):
    from stacking.evaluate import eval_main

    ck = _checkpoint(tmp_path / "ck", 257)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    cases = [
        ([str(tmp_path / "nope"), "--tasks", "t"], "does not exist"),
        ([str(ck), "--tasks", "t"], "no data dir to read the tokenizer from"),
        ([str(tmp_path / "run"), "--tasks", "t"], "has no checkpoints/tokens-"),
        ([str(ck), "--tasks", "t", "--data_dir", str(tmp_path)], "has no meta.json"),
        (
            [str(ck), "--tasks", "t", "--data_dir", str(bytes_data), "--include_path", str(tmp_path / "x")],
            "is not a dir",
        ),
        ([str(ck), "--tasks", "t", "--limit", "0"], "--limit: must be positive"),
    ]
    for argv, message in cases:
        assert eval_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("stacking eval: error: ") and message in err and err.count("\n") == 1, err
