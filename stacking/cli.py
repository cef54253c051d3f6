"""`stacking …` — one entry point, one subcommand per workflow.

    stacking data     [--out DIR] [--sources stdlib|site-packages|c-headers|PATH …] [--tokenizer bpe|bytes|PATH]
                      [--workers N] [--val_tokens N] [--val_sources PATH …] …
    stacking data     --import PATH … --out DIR [--val_import PATH …] [--dtype D] [--vocab_size V] [--tokenizer PATH]
    stacking train    CONFIG.yaml [--field value …]
    stacking grow     SRC_DIR DST_DIR --op OP [--direction depth|width] --g G [op options]
    stacking plan-growth --target PRESET (--flops C | --tokens T) [--g G] [--fit SWEEP_DIR] [--fit-op OP]
    stacking sweep    GRID.yaml [--out DIR] [--dry-run] [--executor local|slurm] [--jobs N] [--threads T]
                      [--only PATTERN] [--retries K] [--cluster slurm|local|debug]
    stacking sweep status SWEEP_DIR
    stacking report   SWEEP_DIR [--out DIR] [--target-loss X]
    stacking loss-table SWEEP_DIR [--pool SWEEP ...] [--per-seed] [--contrast SWEEP_B] [--seeds-for NATS]
    stacking trend    SWEEP_DIR [SWEEP_DIR …] [--out DIR]
    stacking export   SWEEP_DIR OUT_DIR [--overwrite]
    stacking eval     CKPT_OR_RUN --tasks T1,T2 [--include_path DIR] [--limit N] [--num_fewshot K] [--out FILE]
    stacking eval-tasks --data_dir DIR --out DIR
    stacking val-docs RUN_DIR_OR_SWEEP_DIR [--data_dir DIR] [--device cpu]
    stacking fit-law  CSV --n COL (--d COL | --flops COL) --loss COL [--bootstrap K]
    stacking import-hf HF_DIR LIT_DIR
    stacking export-hf LIT_DIR HF_DIR

Every command also takes ``--config FILE.yaml`` (its options as YAML keys, ``_`` for ``-``) and ``--help``. Every
error a user can cause prints one line (``stacking CMD: error: …``) and exits with status 2, before any compute.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

USAGE = __doc__.split("\n\n")[1]


class UsageError(ValueError):
    """A bad command line or --config file: printed as one line, ``stacking CMD: error: …``, exit status 2."""


def _formatter():
    from jsonargparse import DefaultHelpFormatter

    class HelpFormatter(DefaultHelpFormatter):
        """jsonargparse's help (each option's type and default), with multi-line text (an epilog's table) kept
        as written and one-line descriptions wrapped."""

        def _fill_text(self, text: str, width: int, indent: str) -> str:
            if "\n" in text.strip():
                return "".join(indent + line for line in text.splitlines(keepends=True))
            return super()._fill_text(text, width, indent)

    return HelpFormatter


def parser(prog: str, description: str, *, epilog: str | None = None, config_help: str | None = None):
    """The parser of every ``stacking`` subcommand: jsonargparse, so each one takes ``--config FILE.yaml`` (keys
    are the option names, ``_`` for ``-``; flags after it override it), shows each option's type, default and —
    for dataclass fields — docstring in ``--help``, and raises a `UsageError` instead of exiting on a bad argument
    (use `parse`)."""
    from jsonargparse import ArgumentParser

    try:  # jsonargparse >= 4.39
        from jsonargparse import set_parsing_settings

        set_parsing_settings(docstring_parse_attribute_docstrings=True)
    except ImportError:
        from jsonargparse import set_docstring_parse_options

        set_docstring_parse_options(attribute_docstrings=True)
    p = ArgumentParser(
        prog=prog, description=description, epilog=epilog, exit_on_error=False, formatter_class=_formatter()
    )
    p.add_argument(
        "--config",
        action="config",
        help=config_help
        or "YAML file with any of these options (keys: option names with _ for -); flags given after it override it",
    )
    return p


def _option(p, dest: str) -> str:
    """How the user wrote option ``dest``: ``--drop-top`` for drop_top, the name itself for a positional."""
    for a in p._actions:
        if a.dest == dest:
            names = [o for o in a.option_strings if not o.endswith("+")]  # not jsonargparse's list-append form
            return max(names, key=len) if names else dest
    return f"--{dest}"


def _one_line(p, message: str) -> str:
    """jsonargparse's (often multi-line) parse error as argparse would have said it, on one line."""
    typed = re.match(r'Parser key "([^"]+)":(.*)', message, re.DOTALL)
    if typed and "Got value: " in typed[2]:
        types = [t for t in dict.fromkeys(re.findall(r"Expected a <class '(\w+)'>", typed[2])) if t != "NoneType"]
        value = typed[2].split("Got value: ", 1)[1].splitlines()[0].strip()
        if types:
            return f"argument {_option(p, typed[1])}: invalid {' or '.join(types)} value: {value!r}"
    if typed:
        return f"argument {_option(p, typed[1])}: {' '.join(typed[2].split())}"
    required = re.search(r'Key "([^"]+)" is required', message)
    if required:
        return f"the following arguments are required: {_option(p, required[1])}"
    message = " ".join(message.split())
    return message[0].lower() + message[1:] if message[:1].isupper() and message[1:2].islower() else message


def parse(p, argv: list[str]):
    """``p.parse_args(argv)``, a parse error raised as a one-line `UsageError`. A flag may be spelled with ``-`` for
    ``_`` (``--max-files`` for the dataclass field ``--max_files``), in every subcommand alike."""
    from jsonargparse import ArgumentError

    known = p._option_string_actions  # argparse's own table of option strings

    def spelled(a: str) -> str:  # --tokenizer-from means --tokenizer_from where only the latter is an option
        flag, eq, value = a.partition("=")
        alt = "--" + flag[2:].replace("-", "_")
        return alt + eq + value if a.startswith("--") and flag not in known and alt in known else a

    try:
        return p.parse_args([spelled(a) for a in argv])
    except ArgumentError as e:
        raise UsageError(f"{_one_line(p, str(e))} (see --help)") from None


def run_command(
    prog: str, body: Callable[[list[str]], int], argv: list[str], user_errors: tuple[type[BaseException], ...] = ()
) -> int:
    """Run a subcommand's body: its exit code; a user error → one line ``PROG: error: …`` on stderr and 2;
    ``--help`` → 0."""
    try:
        return body(argv)
    except (UsageError, *user_errors) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `stacking … | head`: the reader has gone; stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
    except SystemExit as e:  # --help, --print_config: 0
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)  # sys.exit("message"), as the interpreter would
        return 1


def _sources_as_list(argv: list[str], flag: str = "--sources") -> list[str]:
    """``--sources A B C`` (every value up to the next ``-…``) → ``--sources '["A", "B", "C"]'`` for jsonargparse;
    a single value written as a list (``--sources '[A, B]'``) and ``--sources+ A`` pass through. ``flag``: another
    list option read the same way."""
    import json

    out, i = [], 0
    while i < len(argv):
        if argv[i] != flag:
            out.append(argv[i])
            i += 1
            continue
        j = i + 1
        while j < len(argv) and not argv[j].startswith("-"):
            j += 1
        values = argv[i + 1 : j]
        out += [flag, *values] if len(values) == 1 and values[0].startswith("[") else [flag, json.dumps(values)]
        i = j
    return out


def _data(argv: list[str]) -> int:
    if "--import" in argv:
        return _data_import(argv)
    from stacking.corpus import DataConfig, build_dataset

    p = parser(
        "stacking data",
        "Build a token dataset dir (ordered train/val shard files, the tokenizer, meta.json) "
        "from named sources (stdlib, site-packages, c-headers: nothing is downloaded) and/or paths (text, "
        "JSONL, .jsonl.gz/.jsonl.zst, Parquet, or dirs of them), e.g. `--sources stdlib site-packages "
        "c-headers my_dir/`. Streams the corpus and tokenizes it in --workers processes; a killed build "
        "resumes from its finished units when rerun. Documents are split train/val by a hash of their key "
        "(or --val_sources). A run validates on fixed windows spread over every val document "
        "(`stacking.data.val_window_offsets`, docs/formats.md).",
        config_help="YAML file with these fields",
    )
    p.add_class_arguments(DataConfig, fail_untyped=False, as_group=False)
    argv = ["--val_sources" if a == "--val-sources" else a for a in argv]
    ns = parse(p, _sources_as_list(_sources_as_list(argv), "--val_sources"))
    cfg = DataConfig(**{k: v for k, v in vars(ns).items() if k in DataConfig.__dataclass_fields__})
    print(build_dataset(cfg))
    return 0


def _data_import(argv: list[str]) -> int:
    from stacking.importers import ImportConfig, import_dataset

    p = parser(
        "stacking data --import",
        "Describe a corpus someone already tokenized as a dataset dir, without "
        "copying a token: Megatron-LM indexed datasets (PREFIX.bin + PREFIX.idx) or flat uint16/uint32 numpy "
        "token files (OLMo/Dolma; raw or .npy). Writes only meta.json (and a tokenizer copy) into --out; "
        "validation is --val_import, else the last --val_tokens tokens of the last file, cut at a document "
        "start (docs/formats.md, 'Imports').",
        config_help="YAML file with these fields",
    )
    p.add_class_arguments(ImportConfig, fail_untyped=False, as_group=False)
    argv = ["--paths" if a == "--import" else "--val_import" if a == "--val-import" else a for a in argv]
    ns = parse(p, _sources_as_list(_sources_as_list(argv, "--paths"), "--val_import"))
    cfg = ImportConfig(**{k: v for k, v in vars(ns).items() if k in ImportConfig.__dataclass_fields__})
    print(import_dataset(cfg))
    return 0


def _train(argv: list[str]) -> int:
    from stacking.config import RunConfig
    from stacking.train import run

    p = parser(
        "stacking train",
        "Train one run (scratch, init_from a checkpoint dir, or resume its own "
        "last.ckpt). CONFIG.yaml holds RunConfig fields; flags override them.",
        config_help="YAML file with RunConfig fields (may be given positionally)",
    )
    p.add_class_arguments(RunConfig, fail_untyped=False, as_group=False)
    if argv and not argv[0].startswith("-"):
        argv = ["--config", argv[0]] + argv[1:]
    ns = parse(p, argv)
    cfg = RunConfig(**{k: v for k, v in vars(ns).items() if k in RunConfig.__dataclass_fields__})
    summary = run(cfg)
    return 0 if summary["status"] == "done" else 1


def _lazy(module: str, fn: str) -> Callable[[list[str]], int]:
    def call(argv: list[str]) -> int:
        import importlib

        return getattr(importlib.import_module(module), fn)(argv)

    return call


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "data": _data,
    "train": _train,
    "grow": _lazy("stacking.growth.cli", "main"),
    "plan-growth": _lazy("analysis.cli", "plan_growth_main"),
    "import-hf": _lazy("stacking.growth.cli", "import_hf_main"),
    "export-hf": _lazy("stacking.growth.cli", "export_hf_main"),
    "sweep": _lazy("experiments.cli", "sweep_main"),
    "report": _lazy("analysis.cli", "report_main"),
    "loss-table": _lazy("analysis.cli", "loss_table_main"),
    "trend": _lazy("analysis.cli", "trend_main"),
    "export": _lazy("analysis.cli", "export_main"),
    "fit-law": _lazy("analysis.cli", "fit_law_main"),
    "eval": _lazy("stacking.evaluate", "eval_main"),
    "eval-tasks": _lazy("stacking.evaluate", "eval_tasks_main"),
    "val-docs": _lazy("stacking.val_docs", "main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage:\n" + USAGE + "\n\nRun `stacking CMD --help` for each command's options.")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"stacking: error: unknown command {cmd!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from stacking.errors import DataError, ModelConfigError, RunError  # light: a command imports what it needs

    return run_command(f"stacking {cmd}", COMMANDS[cmd], rest, (DataError, ModelConfigError, RunError))


if __name__ == "__main__":
    sys.exit(main())
