"""Checkpoint dirs, streaming tensor files, and the small helpers every growth operator shares.

Why a streaming writer: a grown checkpoint is g times its source, and the point of growth experiments is models
bigger than a laptop's RAM. `torch.save` pickles one in-memory dict, so the whole output would have to exist at once.
`TensorFileWriter` writes the same zip format record by record (what `torch.save` does internally, in the order
"tensors first, then the pickled index"), so the reader side stays plain `torch.load(weights_only=True, mmap=True)`.

Layout facts used across the package (litgpt 0.5.13, read from litgpt/model.py):
  * per-layer keys are ``transformer.h.{i}.<rest>``; everything else (wte, ln_f, lm_head) is shared;
  * ``attn.qkv.weight`` is ``[all Q heads | all K groups | all V groups]``, rows ``(n_head + 2·n_query_groups)·hs``.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import io
import json
import math
import mmap
import pickle
import re
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from litgpt import GPT, Config

from stacking import fsutil

WEIGHTS = "lit_model.pth"
CONFIG = "model_config.yaml"
META = "stacking_meta.json"
GROWTH = "growth.json"


class GrowthError(ValueError):
    """A mistake the user can fix. The message is one line naming the field and what would be valid."""


# ---- state-dict layout -----------------------------------------------------------------------------------------
_LAYER_KEY = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")


def split_layer_key(key: str) -> tuple[int, str] | None:
    """``"transformer.h.3.attn.qkv.weight"`` -> ``(3, "attn.qkv.weight")``; ``None`` for non-layer keys."""
    m = _LAYER_KEY.match(key)
    return (int(m[1]), m[2]) if m else None


def layer_key(i: int, rest: str) -> str:
    return f"transformer.h.{i}.{rest}"


def derive_config(config: Config, **changes: Any) -> Config:
    """A new Config with some fields changed (``__post_init__`` re-derives rope_n_elem etc.); input untouched."""
    values = copy.deepcopy({f.name: getattr(config, f.name) for f in fields(Config)})  # lists/dicts not shared
    values.update(changes)
    try:
        return Config(**values)
    except (AssertionError, ValueError, TypeError) as e:
        raise GrowthError(f"the grown config is not a valid litgpt Config ({changes}): {e}") from None


def expected_shapes(config: Config) -> dict[str, torch.Size]:
    """Parameter names and shapes of ``litgpt.GPT(config)``, from a model on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            model = GPT(config)
    except Exception as e:  # noqa: BLE001 (litgpt asserts / divides by zero on inconsistent configs)
        raise GrowthError(f"model_config is not a buildable litgpt model: {type(e).__name__}: {e}") from None
    return {k: v.shape for k, v in model.state_dict().items()}


def check_state_dict(state_dict: Mapping[str, torch.Tensor], config: Config, where: str = "state_dict") -> None:
    """Raise GrowthError unless ``state_dict`` has exactly the keys and shapes of ``GPT(config)``."""
    want = expected_shapes(config)
    missing = [k for k in want if k not in state_dict]
    extra = [k for k in state_dict if k not in want]
    wrong = [f"{k} {tuple(state_dict[k].shape)} != {tuple(s)}" for k, s in want.items()
             if k in state_dict and tuple(state_dict[k].shape) != tuple(s)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
        if items:
            more = f" (+{len(items) - 2} more)" if len(items) > 2 else ""
            problems.append(f"{label}: {', '.join(items[:2])}{more}")
    if problems:
        raise GrowthError(f"{where} does not match its model config (n_layer={config.n_layer}, "
                          f"n_embd={config.n_embd}): {'; '.join(problems)}")


# ---- deterministic random init for new parameters --------------------------------------------------------------
def generator_for(seed: int, key: str) -> torch.Generator:
    """One generator per (seed, parameter name): the result does not depend on the order tensors are made in, so the
    streaming and in-memory paths agree and adding a key never shifts another key's random numbers."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def init_std(rest_or_key: str, config: Config) -> float:
    """TinyLlama / lit-gpt pretrain init (same as stacking.module.init_weights): N(0, √(2/(5d))), output projections
    N(0, 1/(√d·L)) so a deep residual stream does not blow up at init."""
    if rest_or_key.endswith(("attn.proj.weight", "mlp.proj.weight")):
        return 1.0 / math.sqrt(config.n_embd) / config.n_layer
    return math.sqrt(2.0 / (5 * config.n_embd))


def init_like(key: str, shape: tuple[int, ...], dtype: torch.dtype, config: Config, seed: int) -> torch.Tensor:
    """A freshly initialised parameter: norm weights 1, biases 0, matrices normal with `init_std`."""
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype) if key.endswith("weight") else torch.zeros(shape, dtype=dtype)
    out = torch.empty(shape, dtype=torch.float32)
    out.normal_(0.0, init_std(key, config), generator=generator_for(seed, key))
    return out.to(dtype)


# ---- streaming writer ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _StorageRef:
    key: str
    storage_type: type
    numel: int


@dataclass(frozen=True)
class TensorRecord:
    """A tensor already written to the zip; pickles to the same `_rebuild_tensor_v2` call `torch.save` emits."""

    storage: _StorageRef
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def __reduce_ex__(self, protocol):
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, self.shape, self.stride, False, OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        # torch.load resolves ("storage", type, key, location, numel) to the zip record data/<key>
        if isinstance(obj, _StorageRef):
            return "storage", obj.storage_type, obj.key, "cpu", obj.numel
        return None


def _storage_type(dtype: torch.dtype) -> type:
    name = torch.storage.TypedStorage(dtype=dtype, _internal=True)._pickle_storage_type()
    return getattr(torch, name)


class TensorFileWriter:
    """Write a state dict one tensor at a time into a file `torch.load(weights_only=True, mmap=True)` reads.

    >>> with TensorFileWriter(path) as w:
    ...     for name, t in tensors: w.add(name, t)      # each tensor can be dropped right after
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._zip = torch._C.PyTorchFileWriter(str(self.path))
        self._index: dict[str, TensorRecord] = {}
        self._records = 0
        self._closed = False

    def write_tensor(self, tensor: torch.Tensor) -> TensorRecord:
        """Write the tensor's bytes now; return the record to put in the index (litgpt's `store_early` idea)."""
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        key = str(self._records)  # records are numbered in write order: data/0, data/1, ...
        self._records += 1
        nbytes = t.numel() * t.element_size()
        storage = t.untyped_storage()
        offset = t.storage_offset() * t.element_size()
        if offset or storage.nbytes() != nbytes:
            storage = storage[offset:offset + nbytes]  # a view of the same memory (e.g. of an mmap), not a copy
        self._zip.write_record(f"data/{key}", storage, nbytes)
        stride = tuple(t.stride()) if t.numel() else tuple(int(math.prod(t.shape[i + 1:])) for i in range(t.dim()))
        return TensorRecord(_StorageRef(key, _storage_type(t.dtype), t.numel()), tuple(t.shape), stride)

    def store_early(self, tensor: torch.Tensor) -> TensorRecord:
        """Alias with litgpt's `incremental_save` name, so litgpt converters can write through this writer."""
        return self.write_tensor(tensor)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._index:
            raise ValueError(f"duplicate tensor name {name!r}")
        self._index[name] = self.write_tensor(tensor)

    def close(self, index: Mapping[str, TensorRecord] | None = None) -> None:
        """Write the pickled index (``index`` or everything `add`ed) and the zip directory."""
        if self._closed:
            return
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(dict(index if index is not None else self._index))
        data = buf.getvalue()
        self._zip.write_record("data.pkl", data, len(data))
        # the same bookkeeping records torch.save writes (serialization.py `_save`)
        self._zip.write_record(".format_version", "1", 1)
        self._zip.write_record(".storage_alignment", "64", 2)
        self._zip.write_record("byteorder", sys.byteorder, len(sys.byteorder))
        self._zip.write_end_of_file()
        self._closed = True

    def __enter__(self) -> TensorFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # leave no file that looks complete; the caller's temp dir is removed anyway
            self._zip.write_end_of_file()
            self._closed = True


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """`torch.save` equivalent that never holds a second copy of the tensors."""
    with TensorFileWriter(path) as w:
        for name, t in state_dict.items():
            w.add(name, t)


# ---- reading ---------------------------------------------------------------------------------------------------
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


def load_config(path: str | Path) -> Config:
    """A litgpt Config from a model_config.yaml (unknown keys such as rope_n_elem are ignored)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise GrowthError(f"{path} is not a readable YAML model config: {e}") from None
    if not isinstance(values, dict):
        raise GrowthError(f"{path} must hold a mapping of litgpt Config fields, got {type(values).__name__}")
    known = {f.name for f in fields(Config)}
    try:
        return Config(**{k: v for k, v in values.items() if k in known})
    except (AssertionError, ValueError, TypeError) as e:
        raise GrowthError(f"{path} is not a valid litgpt Config: {e}") from None


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(asdict(config), sort_keys=False))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Memory-mapped, weights-only load; a truncated or foreign file becomes a one-line GrowthError."""
    path = Path(path)
    if not path.is_file():
        raise GrowthError(f"checkpoint weights {str(path)!r} do not exist (expected {WEIGHTS} in the checkpoint dir)")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 (RuntimeError from the zip reader, UnpicklingError, EOFError, ...)
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise GrowthError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): "
                          f"{type(e).__name__}: {first}") from None
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):  # litgpt pretrain format {"model": ..., ...}
        sd = sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise GrowthError(f"{path} must hold a state dict of tensors (litgpt key names)")
    return sd


@dataclass
class Checkpoint:
    """A checkpoint dir read lazily: tensors are views of the memory-mapped lit_model.pth."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: Config
    meta: dict | None


def load_checkpoint(ckpt_dir: str | Path) -> Checkpoint:
    """Read and validate a checkpoint dir (lit_model.pth + model_config.yaml [+ stacking_meta.json])."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise GrowthError(f"checkpoint dir {str(d)!r} does not exist")
    if not (d / CONFIG).is_file():
        raise GrowthError(f"checkpoint dir {str(d)!r} has no {CONFIG}")
    config = load_config(d / CONFIG)
    sd = load_weights(d / WEIGHTS)
    check_state_dict(sd, config, where=f"{d / WEIGHTS}")
    meta = None
    if (d / META).is_file():
        try:
            meta = json.loads((d / META).read_text())
        except json.JSONDecodeError as e:
            raise GrowthError(f"{d / META} is not valid JSON: {e}") from None
    return Checkpoint(d, sd, config, meta)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_dir(dst: str | Path) -> Iterator[Path]:
    """Yield a temp dir next to ``dst``; rename it to ``dst`` only if the block succeeds (never a half-written dst).

    The temp dir is a sibling so the final rename stays on one filesystem, where it is atomic.
    """
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise GrowthError(f"output dir {str(dst)!r} already exists and is not empty; pick a new path")
    with fsutil.atomic_dir(dst) as tmp:
        yield tmp


def json_safe(value: Any) -> Any:
    """Options as they go into growth.json: paths as strings, a target Config as its field dict."""
    if isinstance(value, Config):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# ---- shared operator plumbing ----------------------------------------------------------------------------------
@dataclass
class GrowthResult:
    """What an operator returns. `grow(...)` hands back ``(state_dict, config)``; ``return_info=True`` gives this."""

    state_dict: dict[str, torch.Tensor]
    config: Config
    g: float
    """Effective growth factor: n_layer ratio (depth) or n_embd ratio (width)."""
    options: dict = field(default_factory=dict)
    """Options as resolved (defaults filled in); recorded in growth.json."""
    mask: dict | None = None
    """G_random: the spec `masks.GrowthMask.from_spec` takes (growth.json "mask")."""
    trainable: list[str] | None = None
    """llama_pro train_new_only: names of the only parameters to train (growth.json "trainable")."""
    log: dict = field(default_factory=dict)
    """Diagnostics not written to growth.json (e.g. G_learn's loss per step)."""
    extra_flops: float = 0.0
    """Training FLOPs the operator itself spent (G_learn's map training, `learn.learn_flops`); growth.json
    "extra_flops"."""


def check_g(g: Any, op: str, *, integer: bool) -> float | int:
    """g is a number >= 1; an int when the operator copies whole models/units."""
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g < 1:
        raise GrowthError(f"g must be a number >= 1 for {op} (got {g!r})")
    if integer:
        if float(g) != int(g):
            raise GrowthError(f"g must be an integer >= 1 for {op} (got {g}); {op} copies whole layers/units")
        return int(g)
    return float(g)


# Fields that may differ between a source config and a `to=` target besides the grown dimensions.
_FREE_FIELDS = {"name", "hf_config", "block_size"}


def check_target(config: Config, to: Any, grown: set[str], op: str) -> Config:
    """Validate a `to=` target: a litgpt Config equal to the source except the grown fields (and name, block_size)."""
    if not isinstance(to, Config):
        raise GrowthError(f"to must be a litgpt Config for {op} (got {type(to).__name__})")
    for f in fields(Config):
        if f.name in grown or f.name in _FREE_FIELDS:
            continue
        a, b = getattr(config, f.name), getattr(to, f.name)
        if a != b:
            raise GrowthError(f"to.{f.name}={b!r} differs from the source's {a!r}; {op} only changes "
                              f"{', '.join(sorted(grown))}")
    return to
