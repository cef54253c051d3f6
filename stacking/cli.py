"""`stacking …` — one entry point, one subcommand per workflow.

    stacking data     [--out DIR] [--sources stdlib|site-packages|c-headers|PATH …] [--tokenizer bpe|bytes] …
    stacking train    CONFIG.yaml [--field value …]
    stacking grow     SRC_DIR DST_DIR --op OP [--direction depth|width] --g G [op options]
    stacking sweep    GRID.yaml [--out DIR] [--dry-run] [--executor local|slurm] [--jobs N] [--threads T]
                      [--only PATTERN] [--retries K] [--cluster slurm|local|debug]
    stacking sweep status SWEEP_DIR
    stacking report   SWEEP_DIR [--out DIR] [--target-loss X]
    stacking fit-law  CSV --n COL (--d COL | --flops COL) --loss COL [--bootstrap K]
    stacking import-hf HF_DIR LIT_DIR
    stacking export-hf LIT_DIR HF_DIR

Every error a user can cause prints one line (``stacking CMD: error: …``) and exits with status 2, before any
compute.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USAGE = __doc__.split("\n\n")[1]


def _parser(prog: str, description: str):
    """A jsonargparse parser whose --help shows each dataclass field's docstring."""
    from jsonargparse import ArgumentParser

    try:  # jsonargparse >= 4.39
        from jsonargparse import set_parsing_settings

        set_parsing_settings(docstring_parse_attribute_docstrings=True)
    except ImportError:
        from jsonargparse import set_docstring_parse_options

        set_docstring_parse_options(attribute_docstrings=True)
    return ArgumentParser(prog=prog, description=description)


def _sources_as_list(argv: list[str]) -> list[str]:
    """``--sources A B C`` (every value up to the next ``-…``) → ``--sources '["A", "B", "C"]'`` for jsonargparse;
    a single value written as a list (``--sources '[A, B]'``) and ``--sources+ A`` pass through."""
    import json

    out, i = [], 0
    while i < len(argv):
        if argv[i] != "--sources":
            out.append(argv[i])
            i += 1
            continue
        j = i + 1
        while j < len(argv) and not argv[j].startswith("-"):
            j += 1
        values = argv[i + 1: j]
        out += ["--sources", *values] if len(values) == 1 and values[0].startswith("[") else ["--sources",
                                                                                              json.dumps(values)]
        i = j
    return out


def _data(argv: list[str]) -> int:
    from stacking.data import DataConfig, build_dataset

    p = _parser("stacking data", "Build a token dataset dir (train.bin, val.bin, tokenizer.json, meta.json) from "
                "named sources (stdlib, site-packages, c-headers: nothing is downloaded) and/or paths, e.g. "
                "`--sources stdlib site-packages c-headers my_dir/`. Files are split train/val by a hash of their "
                "path. A run validates on fixed windows spread over every val.bin document "
                "(`stacking.data.val_window_offsets`, docs/formats.md).")
    p.add_class_arguments(DataConfig, fail_untyped=False, as_group=False)
    p.add_argument("--config", action="config", help="YAML file with these fields")
    ns = p.parse_args(_sources_as_list(argv))
    cfg = DataConfig(**{k: v for k, v in vars(ns).items() if k in DataConfig.__dataclass_fields__})
    print(build_dataset(cfg))
    return 0


def _train(argv: list[str]) -> int:
    from stacking.train import RunConfig, run

    p = _parser("stacking train", "Train one run (scratch, init_from a checkpoint dir, or "
                       "resume its own last.ckpt). CONFIG.yaml holds RunConfig fields; flags override them.")
    p.add_argument("--config", action="config", help="YAML file with RunConfig fields (may be given positionally)")
    p.add_class_arguments(RunConfig, fail_untyped=False, as_group=False)
    if argv and not argv[0].startswith("-"):
        argv = ["--config", argv[0]] + argv[1:]
    ns = p.parse_args(argv)
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
    "import-hf": _lazy("stacking.growth.cli", "import_hf_main"),
    "export-hf": _lazy("stacking.growth.cli", "export_hf_main"),
    "sweep": _lazy("experiments.cli", "sweep_main"),
    "report": _lazy("analysis.cli", "report_main"),
    "fit-law": _lazy("analysis.cli", "fit_law_main"),
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
    from stacking.data import DataError
    from stacking.models import ModelConfigError
    from stacking.train import RunError

    user_errors: tuple[type[BaseException], ...] = (DataError, ModelConfigError, RunError)
    try:
        return COMMANDS[cmd](rest)
    except user_errors as e:
        print(f"stacking {cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
