"""The errors a user can cause. Each is raised before any compute with a one-line message naming the field or file
and what would be valid; the CLIs print that line and exit 2."""

from __future__ import annotations


class DataError(ValueError):
    """A data source or dataset dir a user gave that cannot be used."""


class ModelConfigError(ValueError):
    """A model name or override a user gave that cannot be built."""


class RunError(ValueError):
    """A run config or run dir that cannot be used; raised before any compute."""


class GrowthError(ValueError):
    """A mistake the user can fix. The message is one line naming the field and what would be valid."""


class CheckpointError(RunError, GrowthError):
    """A missing, truncated or corrupt checkpoint (never silently replaced by a fresh start).

    Both a RunError (a run's init_from, resume or branch_from) and a GrowthError (the source of `stacking grow`):
    training and growth read checkpoint dirs with one reader (`stacking.checkpoint.load_checkpoint`), and each
    caller's ``except`` clause keeps catching it."""


class EvalError(ValueError):
    """A checkpoint, data dir, task or option `stacking eval` cannot use: one line, exit status 2."""
