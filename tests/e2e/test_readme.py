"""The README's commands run as written.

Every shell command in the fenced code blocks of the README's "## Tour" is parsed out of README.md and run for real,
through bash, in one scratch working directory: in README order, since the tour's steps build on each other (data →
train → grow → sweep → report), except the few that nothing later reads (``SIDE``), which run beside them. Only
what would take too long is changed, by the substitution table below; each entry must still match the README
(``test_every_substitution_still_matches_the_readme``), so a renamed command, a dropped flag or a changed path
fails here instead of in a newcomer's terminal.

SUBSTITUTIONS — the only edits made to the README's text before running it:

=======================================  ======================================  =====================================
command                                  README text → run as                    why
=======================================  ======================================  =====================================
every ``stacking data``                  ``--out DIR`` → ``--out DIR              the first 120 source files, not the
                                         --max_files 120``                       whole stdlib / site-packages (≈ 1 s
                                                                                 of BPE instead of minutes)
``cat > run.yaml`` (tour §2)             ``max_tokens: N`` → ``8192``,           4 steps instead of 512; the grow
                                         ``save_at_tokens: [N]`` → ``[4096]``,   command reads the 4096 checkpoint
                                         ``val_every_tokens: N`` → ``4096``
                                         plus ``val_tokens: 2048``
``stacking grow`` (tour §3)              ``tokens-<12 digits>`` →                the checkpoint run.yaml now saves
                                         ``tokens-000000004096``
``stacking sweep … --out sweeps/ops``    ``experiments/grids/operators.yaml`` →  the same grid shrunk (see
                                         ``…/operators_readme.yaml``             ``shrunk_operators_grid``): one
                                                                                 depth and one width op, toy budgets
``stacking report … --out /tmp/report``  ``/tmp/report`` → ``report-fixture``    stay inside the scratch dir
``stacking fit-law``                     ``--bootstrap N`` → ``--bootstrap 10``  the point estimates (checked against
                                                                                 the README's comment) do not depend
                                                                                 on it
=======================================  ======================================  =====================================

The scratch directory also holds what the commands expect to find (fixtures, not edits): ``experiments/grids/``
and ``tests/fixtures/{sweep_small,chinchilla}`` copied from the repo; ``corpus/`` (text files) and ``notes.jsonl``
for ``stacking data --sources corpus/ notes.jsonl``; a fake ``sbatch``/``srun`` on PATH (as in test_sweep_slurm.py)
so that ``--executor slurm`` submits to it; and, for ``--scale paper``, a stand-in ``data/slimpajama-llama2``
whose meta.json claims the paper's corpus size over a sparse train.bin (submission reads only the sizes; no job runs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # end to end: `make test-fast` (-m 'not slow') leaves it out

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TIMEOUT = 600  # per command; the whole tour takes ~2 minutes on 2 idle cores


# --------------------------------------------------------------------------------------------------------------
# Parsing the README


def section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next level-2 heading."""
    m = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert m, f"README.md has no '## {heading}' section"
    return m.group(1)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(the ``###`` heading above it, body) of every ```bash / ```sh / ``` block, in order."""
    out, heading = [], ""
    fence = r"^### (.+?)\s*$|^```(?:bash|sh|shell|console)?\s*\n(.*?)^```\s*$"
    for m in re.finditer(fence, text, re.MULTILINE | re.DOTALL):
        if m.group(1) is not None:
            heading = m.group(1)
        else:
            out.append((heading, m.group(2)))
    return out


def split_commands(block: str) -> list[str]:
    """One shell command per entry: comment-only and blank lines dropped, ``\\`` continuations joined, a
    here-document kept with its body and terminator."""
    lines, cmds, i = block.splitlines(), [], 0
    while i < len(lines):
        cmd = lines[i]
        i += 1
        if not cmd.strip() or cmd.lstrip().startswith("#"):
            continue
        while cmd.rstrip().endswith("\\") and i < len(lines):
            cmd += "\n" + lines[i]
            i += 1
        if m := re.search(r"<<-?\s*(['\"]?)(\w+)\1", cmd):
            while i < len(lines):
                cmd += "\n" + lines[i]
                i += 1
                if lines[i - 1].strip() == m.group(2):
                    break
        cmds.append(cmd)
    return cmds


def tour_commands(text: str | None = None) -> list[tuple[str, str]]:
    """(``###`` heading, command) for every command of the tour, in README order."""
    text = README.read_text() if text is None else text
    return [(h, c) for h, body in fenced_blocks(section(text, "Tour")) for c in split_commands(body)]


# --------------------------------------------------------------------------------------------------------------
# What is changed, and what is put around the commands


MAX_FILES = 120  # ≥ 4 × the tiny operators grid's largest budget / tokens per file: its --dry-run needs ≤ 4 epochs

# (commands it applies to: regex, README text: regex, replacement, why) — the table in the module docstring
SUBSTITUTIONS: list[tuple[str, str, str, str]] = [
    (
        r"^stacking data ",
        r"^(stacking data --out \S+)",
        rf"\1 --max_files {MAX_FILES}",
        "a slice of each corpus, not all of it",
    ),
    (r"^cat > run\.yaml", r"(?m)^max_tokens: \d+", "max_tokens: 8192", "4 optimizer steps"),
    (r"^cat > run\.yaml", r"(?m)^save_at_tokens: \[\d+\]", "save_at_tokens: [4096]", "a checkpoint inside 8192"),
    (
        r"^cat > run\.yaml",
        r"(?m)^val_every_tokens: \d+",
        "val_every_tokens: 4096\nval_tokens: 2048",
        "two small evaluations",
    ),
    (r"^stacking grow ", r"tokens-\d{12}", "tokens-000000004096", "the checkpoint run.yaml saves now"),
    (
        r"--out sweeps/ops\b",
        r"experiments/grids/operators\.yaml",
        "experiments/grids/operators_readme.yaml",
        "the operators grid shrunk to toy budgets",
    ),
    (r"^stacking report ", r"--out /tmp/report\b", "--out report-fixture", "stay in the scratch dir"),
    (r"^stacking fit-law ", r"--bootstrap \d+", "--bootstrap 10", "fewer resamples, same point estimates"),
]


def substitute(cmd: str) -> tuple[str, list[int]]:
    """The command as run, and the indices of the substitutions that changed it."""
    used = []
    for k, (applies, pattern, repl, _) in enumerate(SUBSTITUTIONS):
        if re.search(applies, cmd, re.MULTILINE):
            new = re.sub(pattern, repl, cmd)
            if new != cmd:
                used.append(k)
            cmd = new
    return cmd, used


def shrunk_operators_grid(grid: dict) -> dict:
    """experiments/grids/operators.yaml at toy size: its first depth op and first width op (with the grid's g),
    a 4-layer 64-wide target, 32-token sequences, a 1024-token d, 2048 tokens after growth, one cooldown each."""
    g = dict(grid)
    depth = next(o for o in g["ops"] if isinstance(o, dict) and o.get("direction", "depth") == "depth")
    width = next(o for o in g["ops"] if isinstance(o, dict) and o.get("direction") == "width")
    g.update(
        targets=["tiny-L4-D64"],
        ops=[depth, width],
        d=[1024],
        grown={"tokens": 2048},
        seeds=[0],
        anneal={"fractions": [1.0], "decay_fraction": 0.2},
    )
    g["defaults"] = {
        **g["defaults"],
        "seq_len": 32,
        "micro_batch_size": 8,
        "global_batch_tokens": 256,
        "warmup_tokens": 256,
        "val_every_tokens": 512,
        "val_tokens": 1024,
    }
    if "scales" in g:
        g["scales"] = {g.get("scale", "tiny"): {}}
    return g


FAKE_SBATCH = """#!/bin/sh
n=$(( $(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 1000) + 1 ))
echo $n > "$FAKE_SLURM/counter"
cp "$1" "$FAKE_SLURM/job-$n.sh"
echo "Submitted batch job $n"
"""


def make_workdir(work: Path) -> None:
    (work / "experiments").mkdir(parents=True)
    shutil.copytree(ROOT / "experiments" / "grids", work / "experiments" / "grids")
    ops = yaml.safe_load((ROOT / "experiments" / "grids" / "operators.yaml").read_text())
    (work / "experiments" / "grids" / "operators_readme.yaml").write_text(
        yaml.safe_dump(shrunk_operators_grid(ops), sort_keys=False)
    )
    for name in ("sweep_small", "chinchilla"):
        shutil.copytree(ROOT / "tests" / "fixtures" / name, work / "tests" / "fixtures" / name)
    (work / "results").symlink_to(ROOT / "results", target_is_directory=True)  # the committed exports, read only
    # `--sources corpus/ notes.jsonl`: a directory of text files and a JSONL file with a "text" field
    (work / "corpus").mkdir()
    for i in range(24):
        words = " ".join(f"w{(i * 7 + j * 13) % 50}" for j in range(400))
        (work / "corpus" / f"doc{i:02d}.txt").write_text(f"document {i}\n{words}\n")
    (work / "notes.jsonl").write_text(
        "".join(json.dumps({"text": f"note {i}: " + "a few words " * 60}) + "\n" for i in range(40))
    )
    bin_dir, log = work / "fake-bin", work / "fake-slurm"
    bin_dir.mkdir()
    log.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)


def paper_corpus_standin(work: Path) -> None:
    """data/slimpajama-llama2 (the paper scale's data_dir) from the tour's data/stdlib-bpe4096: its meta.json
    with the paper's corpus size (627B tokens) over a sparse train.bin (the one train shard of a sharded layout).
    Only sizes are read at submission."""
    src, dst = work / "data" / "stdlib-bpe4096", work / "data" / "slimpajama-llama2"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("train*.bin"))
    meta = json.loads((dst / "meta.json").read_text())
    meta.update(train_tokens=627_000_000_000, vocab_size=32000)
    if "shards" in meta:
        meta["shards"]["train"] = [{"path": "train.bin", "tokens": meta["train_tokens"]}]
    (dst / "meta.json").write_text(json.dumps(meta))
    try:
        with open(dst / "train.bin", "wb") as f:
            f.truncate(meta["train_tokens"] * 2)
    except OSError as e:
        pytest.skip(f"this filesystem cannot hold a sparse 1.25 TB stand-in for the paper's corpus: {e}")


BEFORE = [(r"--scale paper", paper_corpus_standin)]  # (command regex, setup run just before it)


# --------------------------------------------------------------------------------------------------------------
# What each command must leave behind, beyond exit status 0


def _check(cmd: str, work: Path, out: str) -> None:
    if m := re.match(r"stacking data --out (\S+)", cmd):
        meta = json.loads((work / m.group(1) / "meta.json").read_text())
        assert meta["train_tokens"] > 0 and meta["val_tokens"] > 0
        if "--sources corpus/ notes.jsonl" in cmd:
            assert len(meta["sources"]) == 2 and meta["tokenizer"] == "bytes"
    elif m := re.search(r"stacking train \S+ --out_dir (\S+)", cmd):
        summary = json.loads((work / m.group(1) / "summary.json").read_text())
        assert summary["status"] == "done"
        if m2 := re.search(r"--init_from (\S+)", cmd):  # initialised from the grown checkpoint, its FLOPs carried
            assert summary["init_from"] and Path(summary["init_from"]).name == Path(m2.group(1)).name
            assert summary["flops_offset"] > 0
    elif m := re.match(r"stacking grow \S+ (\S+)", cmd):
        assert (work / m.group(1) / "lit_model.pth").is_file()
    elif "--dry-run" in cmd:
        assert re.search(r"^plan: .*\d+ runs", out, re.MULTILINE), out[:2000]
    elif m := re.search(r"stacking sweep \S+ --out (\S+)", cmd):
        import pandas as pd

        results = pd.read_csv(work / m.group(1) / "results.csv")
        assert set(results["status"]) == {"done"} and len(results) == 8, results[["run_id", "status"]]
    elif "--executor slurm" in cmd:
        assert list((work / "fake-slurm").glob("job-*.sh")), "nothing was submitted to sbatch"
    elif m := re.match(r"stacking report (\S+)(?: --out (\S+))?", cmd):
        report = work / (m.group(2) or f"{m.group(1)}/report")
        assert (report / "report.md").is_file()
    elif m := re.match(r"stacking trend .* --out (\S+)", cmd):
        assert (work / m.group(1) / "trend.csv").is_file() and (work / m.group(1) / "trend.png").is_file()
    elif cmd.startswith("stacking loss-table results/") and "--pool" in cmd:
        assert re.search(r"^pooled from results/\S+: .*seeds", out, re.MULTILINE) and "| 10 |" in out, out[:2000]
        if "--seeds-for" in cmd:  # the planning table: each difference's sd and the seeds for the half-width
            assert re.search(
                r"^\| tiny-L8-D32 \| G_stack g=2 d=328K \| annealed \| 10 \| .* \| \d+ \|$", out, re.MULTILINE
            )
    elif cmd.startswith("stacking fit-law"):
        comment = re.search(r"E = ([\d.]+), α = ([\d.]+)", cmd)
        params = json.loads(out)["params"]
        if comment:  # the README quotes the fit: its numbers are the ones this command prints
            assert f"{params['E']:.3f}" == comment.group(1) and f"{params['alpha']:.3f}" == comment.group(2)


# --------------------------------------------------------------------------------------------------------------
# Running the tour


# Commands that nothing later in the tour reads (the extra datasets, the committed fixtures' report and fit) run in
# a side lane beside the main chain, on the second core; the chain (data/stdlib-bpe4096 → train → grow → sweep →
# report) runs in README order. A new tour command joins the chain unless it is listed here.
SIDE = [
    r"^stacking data --out data/(stdlib-bytes|code-bpe4096|mine)\b",
    r"^stacking report tests/fixtures/",
    r"^stacking fit-law ",
    r"^stacking trend results/",
    r"^stacking loss-table results/",
]


class Tour:
    """Runs the tour's commands once each, in one scratch dir: the chain in order (a test needs the chain's earlier
    commands done), the SIDE commands in a second lane started with the first test."""

    def __init__(self, work: Path, commands: list[tuple[str, str]]):
        from concurrent.futures import ThreadPoolExecutor

        self.work, self.commands = work, commands
        self.side = [i for i, (_, c) in enumerate(commands) if any(re.search(p, c) for p in SIDE)]
        self.chain = [i for i in range(len(commands)) if i not in self.side]
        self.results: dict[int, tuple[str, subprocess.CompletedProcess]] = {}
        self.failed: str | None = None
        make_workdir(work)
        # one torch thread per command: two lanes on two cores, no oversubscription (a 4-step run: 6 s, not 28 s,
        # on a loaded 2-core machine)
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "PATH": os.pathsep.join(
                [str(work / "fake-bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
            ),
            "FAKE_SLURM": str(work / "fake-slurm"),
        }
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.futures = {i: self.pool.submit(self._run, i) for i in self.side}

    def _run(self, index: int) -> tuple[str, subprocess.CompletedProcess]:
        cmd, _ = substitute(self.commands[index][1])
        for pattern, setup in BEFORE:
            if re.search(pattern, cmd):
                setup(self.work)
        return cmd, subprocess.run(
            ["bash", "-c", "set -e\n" + cmd],
            cwd=self.work,
            env=self.env,
            check=False,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )

    def run_through(self, index: int) -> tuple[str, subprocess.CompletedProcess]:
        if index in self.futures:
            return self.futures[index].result()
        for i in self.chain[: self.chain.index(index) + 1]:
            if i in self.results:
                continue
            if self.failed is not None:
                pytest.skip(f"an earlier README command failed: {self.failed}")
            self.results[i] = self._run(i)
            if self.results[i][1].returncode != 0:
                self.failed = self.commands[i][1]
        return self.results[index]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


COMMANDS = tour_commands()


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    t = Tour(tmp_path_factory.mktemp("readme-tour"), COMMANDS)
    yield t
    t.close()


def _id(entry: tuple[str, str]) -> str:
    heading, cmd = entry
    first = cmd.splitlines()[0].split("#")[0].strip()
    return f"{heading.split('.')[0]}:{first[:70]}"


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[_id(c) for c in COMMANDS])
def test_tour_command_runs_as_written(tour, index):
    heading, readme_cmd = COMMANDS[index]
    cmd, proc = tour.run_through(index)
    assert proc.returncode == 0, (
        f"README tour, {heading}: `{readme_cmd}` (run as `{cmd}`) exited "
        f"{proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
        f"{proc.stderr[-3000:]}"
    )
    try:
        _check(cmd, tour.work, proc.stdout)
    except Exception:
        if index in tour.chain:
            tour.failed = readme_cmd
        raise


# --------------------------------------------------------------------------------------------------------------
# The parser, the table, and the README's own consistency


def test_the_tour_has_the_commands_this_file_expects():
    headings = {h.split(".")[0] for h, _ in COMMANDS}
    assert {"1", "2", "3", "4", "5"} <= headings, headings
    starts = [c.split()[0] for _, c in COMMANDS]
    assert set(starts) <= {"stacking", "cat", "python"}, f"a tour command this test has no fixture for: {starts}"
    assert sum(s == "stacking" for s in starts) >= 14


def test_every_substitution_still_matches_the_readme():
    used = {k for _, c in COMMANDS for k in substitute(c)[1]}
    stale = [SUBSTITUTIONS[k][:2] for k in range(len(SUBSTITUTIONS)) if k not in used]
    assert not stale, f"README changed: these substitutions no longer apply (update the table): {stale}"


def test_the_grow_step_reads_a_checkpoint_that_run_yaml_saves():
    run_yaml = next(c for _, c in COMMANDS if c.startswith("cat > run.yaml"))
    saved = [int(t) for t in re.search(r"save_at_tokens: \[([\d, ]+)\]", run_yaml).group(1).split(",")]
    grow = next(c for _, c in COMMANDS if c.startswith("stacking grow"))
    assert int(re.search(r"tokens-(\d{12})", grow).group(1)) in saved


def test_side_lane_commands_are_in_the_tour():
    side = [c for _, c in COMMANDS if any(re.search(p, c) for p in SIDE)]
    assert len(side) == len(SIDE) + 2, side  # three extra datasets, the fixture report, the fit


def test_split_commands_handles_continuations_heredocs_and_comments():
    block = "# comment\ncat > a <<'EOF'\nx: 1\nEOF\nrun a \\\n    --b c   # note\n\nnext\n"
    assert split_commands(block) == ["cat > a <<'EOF'\nx: 1\nEOF", "run a \\\n    --b c   # note", "next"]


def test_the_two_commands_are_make_demo_and_make_test_and_ci_runs_make_test():
    text = README.read_text()
    assert [split_commands(b) for _, b in fenced_blocks(section(text, "The main job"))] == [["make demo"]]
    assert next(split_commands(b) for _, b in fenced_blocks(section(text, "The tests"))) == ["make test"]
    ci = [
        ln.strip()
        for ln in (ROOT / ".ci" / "run").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert ci[-1] == "make test"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_runs_the_steps_the_readme_spells_out(tmp_path):
    """`make -n` on a fresh venv path: the by-hand block's set-up, main job and test command, in that order."""
    by_hand = fenced_blocks(section(README.read_text(), "The tests"))[-1][1]
    cmds = split_commands(by_hand)
    main_job = next(c for c in cmds if c.startswith("stacking data"))
    venv = tmp_path / "venv"

    def dry(target: str) -> str:
        out = subprocess.run(
            ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"], capture_output=True, text=True, check=True
        ).stdout
        return out.replace(f"{venv}/bin/", "")

    demo, test = dry("demo"), dry("test")
    for out in (demo, test):
        assert "-m venv" in out
        assert out.index("torch==2.13.0") < out.index('-m pip install -q -e ".[dev]"')
    steps = [s.split("#")[0].strip() for s in main_job.split("&&")]
    positions = [demo.index(s) for s in steps]
    assert positions == sorted(positions), (steps, demo)
    assert "python -m pytest -q" in test and "python -m pytest -q" in cmds
    assert 'pip install -e ".[dev]"' in by_hand and "pip install torch==2.13.0" in by_hand


def test_notebooks_extra_covers_what_the_notebooks_import():
    import importlib.metadata as md

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert 'pip install -e ".[notebooks]"' in README.read_text()
    extra = project["optional-dependencies"]["notebooks"]
    listed = {re.split(r"[<>=!~\[; ]", r)[0].lower() for r in project["dependencies"] + extra}
    assert "jupyterlab" in listed
    provided = set(listed)  # what they install, one level down
    for dist in listed:
        try:
            provided |= {
                re.split(r"[<>=!~\[; (]", r)[0].lower() for r in md.requires(dist) or [] if "extra ==" not in r
            }
        except md.PackageNotFoundError:
            pass
    modules = set()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                modules |= set(re.findall(r"^\s*(?:from|import)\s+(\w+)", "".join(cell["source"]), re.MULTILINE))
    dists = md.packages_distributions()
    own = {"stacking", "experiments", "analysis"}
    missing = {
        m for m in modules - own - set(sys.stdlib_module_names) if not {d.lower() for d in dists.get(m, [m])} & provided
    }
    assert not missing, f"notebooks import {missing}, which neither the dependencies nor the notebooks extra install"
