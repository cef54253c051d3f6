"""Every `stacking` subcommand has one CLI style: jsonargparse, `--help` naming the command, `--config FILE.yaml`,
and one-line user errors (``stacking CMD: error: …``, exit status 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stacking.cli import COMMANDS
from stacking.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = [[c] for c in COMMANDS] + [["sweep", "status"]]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=" ".join)
def test_every_command_has_help(cmd, capsys):
    assert cli_main([*cmd, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: stacking {' '.join(cmd)} ") and "--config" in out, out[:300]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=" ".join)
def test_a_bad_flag_is_one_line(cmd, capsys):
    assert cli_main([*cmd, "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"stacking {' '.join(cmd)}: error: ") and err.count("\n") == 1, err
    assert "--no-such-flag" in err


def test_help_from_the_console_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "stacking", "fit-law", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: stacking fit-law "), proc.stderr[-2000:]


def test_typed_option_errors_read_like_argparse(capsys):
    assert cli_main(["grow", "a", "b", "--op", "G_stack", "--g", "two"]) == 2
    assert "stacking grow: error: argument --g: invalid float value: 'two' (see --help)" in capsys.readouterr().err
    assert cli_main(["grow", "a", "b"]) == 2
    assert "the following arguments are required: --op" in capsys.readouterr().err
    assert cli_main(["sweep", "grid.yaml", "--executor", "cloud"]) == 2
    assert "argument --executor: invalid choice: 'cloud'" in capsys.readouterr().err


def test_config_file_drives_a_command(tmp_path, capsys):
    """Positionals and options from YAML (keys with _ for -), a flag after --config overriding it."""
    rng = np.random.default_rng(0)
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e8, 1e10, 4), np.geomspace(1e9, 1e11, 4)))
    loss = (1.7 + 400 / n**0.35 + 1000 / d**0.3) * np.exp(0.002 * rng.standard_normal(n.size))
    pd.DataFrame({"N": n, "D": d, "L": loss}).to_csv(tmp_path / "t.csv", index=False)
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(f"csv: {tmp_path / 't.csv'}\nn: N\nd: D\nloss: L\ndrop_top: 3\nseed: 5\n")
    assert cli_main(["fit-law", "--config", str(cfg), "--drop-top", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_points"] == 15 and out["input"]["seed"] == 5 and out["input"]["d"] == "D"
    cfg.write_text(f"csv: {tmp_path / 't.csv'}\nn: N\nd: D\nflops: D\nloss: L\n")  # --d and --flops from YAML
    assert cli_main(["fit-law", "--config", str(cfg)]) == 2
    assert "argument --flops: not allowed with argument --d" in capsys.readouterr().err
    (tmp_path / "sweep.yaml").write_text("grid: g.yaml\njobs: 3\ndry_run: true\n")
    assert cli_main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--print_config"]) == 0
    assert "jobs: 3" in capsys.readouterr().out


def test_output_piped_into_head_ends_without_a_traceback():
    # `stacking … | head -1`: the reader closes the pipe early; the command stops quietly with 141 (128 + SIGPIPE)
    body = (
        "import sys; from stacking.cli import run_command\n"
        "def body(argv):\n    for i in range(100000): print('row', i)\n    return 0\n"
        "sys.exit(run_command('stacking x', body, []))"
    )
    proc = subprocess.run(
        f'{sys.executable} -c "{body}" | head -1; echo "rc=${{PIPESTATUS[0]}}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout == "row 0\nrc=141\n"
    assert proc.stderr == ""
