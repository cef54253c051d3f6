"""Streaming tensor files: write a state dict tensor by tensor, and give back the pages of a memory-mapped one.

Why a streaming writer: a grown checkpoint is g times its source, and the point of growth experiments is models
bigger than a laptop's RAM. `torch.save` pickles one in-memory dict, so the whole output would have to exist at once.
litgpt's `incremental_save` writes the same zip format record by record (tensors first, then the pickled index), so
the reader side stays plain `torch.load(weights_only=True, mmap=True)`; `TensorFileWriter` adds a name → tensor API.

We used to write the zip records with a hand-written pickler. Measured against litgpt's, growing a 1.1B-parameter
fp32 checkpoint (TinyLlama shape, G_stack × 2 → 8.28 GB) with `python benchmarks/grow_memory.py [--writer litgpt]`
on a 2-core, 23 GB VM: peak RSS 0.727 GB with either writer (ratio 0.088 of the output; goal ≤ 0.5; baseline of
python + torch + stacking.growth 0.457 GB), 108 s ours vs 100 s litgpt's. So litgpt's is the one.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import torch
from litgpt.utils import incremental_save


class TensorFileWriter(incremental_save):
    """litgpt's `incremental_save` with names: ``add(name, tensor)`` writes the tensor's bytes now and keeps only a
    small record; leaving the ``with`` block writes the index of everything added (or call ``save(index)`` with an
    index of your own, e.g. one a litgpt converter built from `store_early` records).

    >>> with TensorFileWriter(path) as w:
    ...     for name, t in tensors: w.add(name, t)      # each tensor can be dropped right after
    """

    def __init__(self, path: str | Path):
        super().__init__(Path(path))
        self.path = Path(path)
        self.index: dict[str, object] = {}

    def store_early(self, tensor: torch.Tensor):
        # litgpt writes a tensor's whole storage: a view (a slice, a transpose) is compacted first, so the file holds
        # exactly the state dict's bytes, as torch.save of the same tensors after .contiguous().clone() would
        t = tensor.detach()
        if not t.is_contiguous():
            t = t.contiguous()
        elif t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        return super().store_early(t)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.index:
            raise ValueError(f"duplicate tensor name {name!r}")
        self.index[name] = self.store_early(tensor)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # on an error the index is never written: the file is refused by torch.load, not silently short
        if exc_type is None and not self.has_saved:
            self.save(self.index)
        super().__exit__(exc_type, exc, tb)


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """`torch.save` equivalent that never holds a second copy of the tensors."""
    with TensorFileWriter(path) as w:
        for name, t in state_dict.items():
            w.add(name, t)


# ---- giving pages back ------------------------------------------------------------------------------------------
_libc = None


def _in_private_file_mapping(start: int, end: int) -> bool:
    """True if [start, end) lies inside private, file-backed mappings of this process (/proc/self/maps)."""
    covered = start
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= covered < hi:
                file_backed = len(parts) >= 6 and parts[4] != "0" and not parts[5].startswith("[")
                if not (file_backed and parts[1].endswith("p")):
                    return False
                covered = hi
                if covered >= end:
                    return True
    return False


def release_pages(tensor: torch.Tensor) -> None:
    """Drop this tensor's pages from our address space if it is a read-only view of a memory-mapped file.

    Touched pages of an mmap count in the process RSS until unmapped, so streaming through a checkpoint bigger than
    RAM would otherwise look (and, under memory pressure, behave) like loading it. For a private file mapping that
    was only read, MADV_DONTNEED just forgets the pages; touching them again re-reads the file (from the page
    cache). On anonymous memory it would zero the data, hence the /proc/self/maps check; no-op off Linux.
    Callers must not have written to the mapped tensor (that copy-on-write data would be dropped).
    """
    global _libc
    if not sys.platform.startswith("linux") or tensor.numel() == 0:
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr() // page * page
    end = -(-(tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page) * page
    if not _in_private_file_mapping(start, end):
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4)  # 4 = MADV_DONTNEED
