"""MMSA processed pickles (MOSI / MOSEI, aligned and unaligned) -> validated tensors.

A dataset ``spec`` is ``mosi`` / ``mosei`` (MMSA layout under the data root:
``<root>/MOSI/Processed/aligned_50.pkl`` or ``unaligned_50.pkl``), ``synthetic-mosi`` /
``synthetic-mosei`` (generated on first use and cached, see :mod:`dlf.synthetic`), or a path to
a pickle. Files are read with :mod:`dlf.safe_pickle` (containers, strings, numbers and numpy
arrays only: a hostile pickle is refused before it runs anything) and validated on load; bad
input raises one-line :class:`DLFError` naming the file, split and key, and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlf.config import DataConfig
from dlf.errors import DLFError
from dlf.data.fingerprint import file_fingerprint
from dlf.resources import data_root as resolve_root
from dlf.data.safe_pickle import load_file
from dlf.data.synthetic import META_KEY, SPLITS, ensure_synthetic

if TYPE_CHECKING:
    import torch  # loaded where tensors are made: planning and cached re-runs need no torch (~1 s)

CORPORA = {"mosi": "MOSI", "mosei": "MOSEI"}
FEATURE_KEYS = ("text", "audio", "vision")
REQUIRED_KEYS = ("text", "text_bert", "audio", "vision", "regression_labels", "id", "raw_text")
WIDTHS = {(5, 20): "mosi", (74, 35): "mosei"}  # (audio, vision) widths of the real files
_SCAN = 256  # samples per block when scanning features for NaN / inf (bounds temporary memory)


@dataclass(frozen=True)
class DatasetRef:
    name: str
    path: Path
    corpus: str
    synthetic: bool
    aligned: bool


@dataclass
class Split:
    text: torch.Tensor  # (N, T_l, D_text) float32
    text_bert: torch.Tensor  # (N, 3, T_l) long: input_ids, attention_mask, token_type_ids
    audio: torch.Tensor  # (N, T_a, D_a) float32, -inf -> 0
    vision: torch.Tensor  # (N, T_v, D_v) float32, -inf -> 0
    labels: torch.Tensor  # (N,) float32 in [-3, 3]
    ids: list[str]
    raw_text: list[str]
    audio_lengths: torch.Tensor | None = None  # (N,) long, unaligned files only
    vision_lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: str | torch.device) -> Split:
        import torch

        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in moved.items() if isinstance(v, torch.Tensor)})


@dataclass
class MSADataset:
    name: str
    path: Path
    corpus: str
    synthetic: bool
    aligned: bool
    fingerprint: str
    splits: dict[str, Split]
    dims: dict[str, int]  # 'l', 'a', 'v' -> feature width
    seq_lens: dict[str, int]  # 'l', 'a', 'v' -> stored time steps
    layout: dict[str, dict[str, tuple[tuple[int, ...], str]]] = field(default_factory=dict)
    # layout: split -> key -> (shape, dtype) as stored in the file, for `data check`

    @property
    def display_name(self) -> str:
        """'MOSI' / 'MOSEI' for real files; 'synthetic-MOSI' for synthetic ones, never the real name."""
        base = CORPORA[self.corpus]
        return f"synthetic-{base}" if self.synthetic else base


def resolve_dataset(spec: str, data: DataConfig = DataConfig(), data_root=None) -> DatasetRef:
    """Where ``spec``'s pickle is (generating a synthetic one on first use) and what it is."""
    return _resolve(spec, data, data_root)[0]


def load_dataset(spec: str, data: DataConfig = DataConfig(), data_root=None) -> MSADataset:
    """Load and validate a dataset; features become float32 tensors with -inf set to 0."""
    ref, raw = _resolve(spec, data, data_root)
    raw = raw if raw is not None else read_pickle(ref.path)
    splits, layout = {}, {}
    for name in SPLITS:
        layout[name] = {k: (_shape(v), str(getattr(v, "dtype", type(v).__name__))) for k, v in raw[name].items()}
        splits[name] = _convert_split(ref.path, name, raw[name])
        raw[name] = None  # free the stored arrays split by split (full MOSEI is several GB)
    _check_consistent(ref.path, splits)
    first = splits["train"]
    aligned = first.audio_lengths is None and first.vision_lengths is None
    dims = {"l": first.text.shape[2], "a": first.audio.shape[2], "v": first.vision.shape[2]}
    seq_lens = {"l": first.text.shape[1], "a": first.audio.shape[1], "v": first.vision.shape[1]}
    synthetic = ref.synthetic or META_KEY in raw  # a synthetic file put under the data root stays synthetic
    return MSADataset(ref.name, ref.path, ref.corpus, synthetic, aligned, file_fingerprint(ref.path),
                      splits, dims, seq_lens, layout)


def _resolve(spec: str, data: DataConfig, data_root) -> tuple[DatasetRef, dict | None]:
    """The reference, plus the already-read pickle when finding the corpus needed reading it."""
    data = data or DataConfig()
    key = str(spec).strip().lower()
    if key in CORPORA:
        return DatasetRef(key, _named_path(key, data, data_root), key, False, data.aligned), None
    if key.startswith("synthetic-") and key[len("synthetic-"):] in CORPORA:
        corpus = key[len("synthetic-"):]
        path = ensure_synthetic(corpus, aligned=data.aligned, scale=data.scale, seed=data.synth_seed)
        return DatasetRef(key, path, corpus, True, data.aligned), None
    path = Path(spec).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise DLFError(f"dataset {spec!r}: {what}; give a pickle file or one of mosi, mosei, "
                       "synthetic-mosi, synthetic-mosei")
    return _inspect(path.resolve())


def label_histogram(labels) -> np.ndarray:
    """Counts of the 7 classes -3..3 (clip to [-3, 3], round half to even, as Acc-7 does)."""
    classes = np.round(np.clip(np.asarray(labels, dtype=np.float64).reshape(-1), -3, 3)).astype(int)
    return np.bincount(classes + 3, minlength=7)


def read_pickle(path: Path) -> dict:
    """The top-level dict of an MMSA pickle (restricted unpickling), with its three splits checked to be dicts."""
    raw = load_file(path)
    if not isinstance(raw, dict):
        raise DLFError(f"{path}: top level is a {type(raw).__name__}, not a dict; an MMSA pickle is a dict "
                       "with splits train, valid and test")
    for name in SPLITS:
        if name not in raw:
            found = ", ".join(sorted(map(str, raw))) or "nothing"
            raise DLFError(f"{path}: split '{name}' is missing (found: {found}); an MMSA pickle has "
                           "train, valid and test")
        if not isinstance(raw[name], dict):
            raise DLFError(f"{path}: split '{name}' is a {type(raw[name]).__name__}, not a dict; store each "
                           "split as a dict of arrays (MMSA layout)")
    return raw


def _named_path(corpus: str, data: DataConfig, data_root) -> Path:
    root = resolve_root(data_root)
    rel = Path(CORPORA[corpus]) / "Processed" / ("aligned_50.pkl" if data.aligned else "unaligned_50.pkl")
    if root is None:
        raise DLFError(f"dataset '{corpus}' needs the MMSA files: pass --data-root DIR or set DLF_DATA_ROOT "
                       f"(expected DIR/{rel.as_posix()}), or use 'synthetic-{corpus}' instead")
    path = root / rel
    if not path.is_file():
        raise DLFError(f"dataset '{corpus}': {path} not found (MMSA layout <data root>/{rel.as_posix()}); "
                       f"put the file there or use 'synthetic-{corpus}' instead")
    return path


_INSPECTED: dict[tuple[str, int, int], DatasetRef] = {}  # a path's corpus/alignment, by (path, size, mtime)


def _inspect(path: Path) -> tuple[DatasetRef, dict | None]:
    """Corpus and alignment of a pickle given by path: recipe metadata, else widths, else file name."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo in _INSPECTED:
        return _INSPECTED[memo], None
    raw = read_pickle(path)
    meta = raw.get(META_KEY) if isinstance(raw.get(META_KEY), dict) else None
    train = raw["train"]
    corpus = (meta.get("corpus") or meta.get("family")) if meta else None  # "family" before 0.x
    if corpus not in CORPORA:
        widths = tuple(_width(train.get(k)) for k in ("audio", "vision"))
        corpus = WIDTHS.get(widths) or _corpus_from_name(path.name)
    aligned = "audio_lengths" not in train and "vision_lengths" not in train
    _INSPECTED[memo] = DatasetRef(path.stem, path, corpus, meta is not None, aligned)
    return _INSPECTED[memo], raw


def _shape(value: Any) -> tuple[int, ...]:
    """Stored shape for the layout table; a ragged list (numpy gives it no shape) shows its length."""
    try:
        return tuple(np.shape(value))
    except ValueError:
        return (len(value),)


def _width(value: Any) -> int | None:
    """Last dimension of a rank-3 array, else None (ragged or other input is reported on conversion)."""
    shape = _shape(value)
    return shape[-1] if len(shape) == 3 else None


def _corpus_from_name(name: str) -> str:
    return "mosei" if "mosei" in name.lower() else "mosi"


def _convert_split(path: Path, split: str, raw: dict[str, Any]) -> Split:
    import torch

    for key in REQUIRED_KEYS:
        if key not in raw:
            raise _error(path, split, key, "key is missing", "an MMSA split needs " + ", ".join(REQUIRED_KEYS))
    labels = _labels(path, split, raw["regression_labels"])
    n = labels.shape[0]
    feats = {key: _features(path, split, key, raw[key], n) for key in FEATURE_KEYS}
    text_bert = _text_bert(path, split, raw["text_bert"], n, feats["text"].shape[1])
    lengths = {key: _lengths(path, split, key, raw.get(key), n, feats[mod].shape[1])
               for key, mod in (("audio_lengths", "audio"), ("vision_lengths", "vision"))}
    return Split(
        text=torch.from_numpy(feats["text"]), text_bert=torch.from_numpy(text_bert),
        audio=torch.from_numpy(feats["audio"]), vision=torch.from_numpy(feats["vision"]),
        labels=torch.from_numpy(labels), ids=_strings(path, split, "id", raw["id"], n),
        raw_text=_strings(path, split, "raw_text", raw["raw_text"], n),
        audio_lengths=lengths["audio_lengths"], vision_lengths=lengths["vision_lengths"])


def _error(path: Path, split: str, key: str, problem: str, fix: str) -> DLFError:
    return DLFError(f"{path}: split '{split}', key '{key}': {problem}; {fix}")


def _asarray(path: Path, split: str, key: str, value: Any) -> np.ndarray:
    """``value`` as one ndarray: nested lists and object arrays of equal-shape rows are stacked."""
    try:
        arr = np.asarray(value)
        if arr.dtype == object:  # e.g. an object array holding one float array per sample
            arr = np.asarray(arr.tolist(), dtype=np.float64)
    except (TypeError, ValueError):
        ragged = _ragged(value)
        if ragged:
            raise _error(path, split, key, f"ragged rows ({ragged})", "pad every sample to the same shape "
                         "(MMSA stores one array per key, zero-padded past each sample's length)") from None
        raise _error(path, split, key, "values are not numeric", "store a float array") from None
    return arr


def _ragged(value: Any) -> str | None:
    """Where rows differ in shape ('sample 0 has shape (50, 5), sample 3 (48, 5)'), else None."""
    if not isinstance(value, (list, tuple, np.ndarray)) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return None
    first = None
    for i, row in enumerate(value):
        try:
            shape = tuple(np.shape(row))
        except ValueError:
            return f"sample {i} is itself ragged"
        if first is None:
            first = shape
        elif shape != first:
            return f"sample 0 has shape {first}, sample {i} {shape}"
    return None


def _numeric(path: Path, split: str, key: str, value: Any, rank: int, n: int | None) -> np.ndarray:
    """``value`` as a numeric ndarray of the given rank (and first dimension ``n``), not yet cast."""
    arr = _asarray(path, split, key, value)
    if arr.dtype.kind not in "fiub":
        raise _error(path, split, key, f"dtype {arr.dtype} is not numeric", "store a float array")
    if arr.ndim != rank:
        raise _error(path, split, key, f"rank {arr.ndim} (shape {arr.shape}), expected rank {rank}",
                     "store the MMSA layout (see docs)")
    if n is not None and arr.shape[0] != n:
        raise _error(path, split, key, f"{arr.shape[0]} samples but regression_labels has {n}",
                     "every key of a split needs one row per sample")
    return arr


def _features(path: Path, split: str, key: str, value: Any, n: int) -> np.ndarray:
    """float32 (N, T, D); NaN or +inf is an error, -inf becomes 0 (as MMSA does for audio)."""
    arr = np.ascontiguousarray(_numeric(path, split, key, value, 3, n), dtype=np.float32)
    if not arr.flags.writeable:
        arr = arr.copy()
    for lo in range(0, n, _SCAN):
        block = arr[lo: lo + _SCAN]
        bad = np.isnan(block)
        if bad.any():
            where = lo + int(np.argwhere(bad)[0][0])
            raise _error(path, split, key, f"NaN values (first at sample {where})", "clean or drop those samples")
        if np.isposinf(block).any():
            where = lo + int(np.argwhere(np.isposinf(block))[0][0])
            raise _error(path, split, key, f"+inf values (first at sample {where})", "clean or drop those samples")
        block[np.isneginf(block)] = 0.0
    return arr


def _labels(path: Path, split: str, value: Any) -> np.ndarray:
    arr = _asarray(path, split, "regression_labels", value)
    if arr.ndim == 2 and arr.shape[1] == 1:  # (N, 1) as some exports store them
        arr = arr[:, 0]
    arr = _numeric(path, split, "regression_labels", arr, 1, None).astype(np.float32)
    if arr.shape[0] == 0:
        raise _error(path, split, "regression_labels", "no samples", "every split needs at least one sample")
    bad = ~np.isfinite(arr) | (np.abs(arr) > 3.0 + 1e-4)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _error(path, split, "regression_labels", f"label {float(arr[i]):g} at sample {i} is outside [-3, 3]",
                     "MSA sentiment labels lie in [-3, 3]")
    return np.clip(arr, -3.0, 3.0)


def _text_bert(path: Path, split: str, value: Any, n: int, t_text: int) -> np.ndarray:
    arr = _numeric(path, split, "text_bert", value, 3, n)
    if arr.shape[1:] != (3, t_text):
        raise _error(path, split, "text_bert", f"shape {arr.shape}, expected (N, 3, {t_text}) like 'text'",
                     "rows are input_ids, attention_mask, token_type_ids")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
        raise _error(path, split, "text_bert", "token ids are not whole numbers", "store integer token ids")
    if (arr < 0).any():
        raise _error(path, split, "text_bert", "negative token ids", "store integer token ids")
    return arr.astype(np.int64)


def _lengths(path: Path, split: str, key: str, value: Any, n: int, t_max: int) -> torch.Tensor | None:
    if value is None:
        return None
    arr = _numeric(path, split, key, value, 1, n)
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr > t_max).any():
        raise _error(path, split, key, f"lengths outside [0, {t_max}]", "lengths count valid time steps")
    import torch

    return torch.from_numpy(arr.astype(np.int64))


def _strings(path: Path, split: str, key: str, value: Any, n: int) -> list[str]:
    try:
        arr = np.asarray(value, dtype=object).reshape(-1) if not isinstance(value, list) else value
    except ValueError:  # e.g. a tuple of arrays of different shapes
        raise _error(path, split, key, "not one entry per sample", "store a list or 1-D array of strings") from None
    if len(arr) != n:
        raise _error(path, split, key, f"{len(arr)} entries but regression_labels has {n}",
                     "every key of a split needs one row per sample")
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr]


def _check_consistent(path: Path, splits: dict[str, Split]) -> None:
    """Widths and stored lengths must agree across splits: one model consumes them all."""
    ref = splits["train"]
    for name, sp in splits.items():
        for key in FEATURE_KEYS:
            if getattr(sp, key).shape[1:] != getattr(ref, key).shape[1:]:
                raise _error(path, name, key, f"shape {tuple(getattr(sp, key).shape[1:])} per sample but train "
                             f"has {tuple(getattr(ref, key).shape[1:])}", "all splits need the same layout")
