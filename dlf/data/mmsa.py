"""MMSA processed pickles (MOSI / MOSEI, aligned and unaligned) -> validated tensors.

A dataset ``spec`` is ``mosi`` / ``mosei`` (MMSA layout under the data root:
``<root>/MOSI/Processed/aligned_50.pkl`` or ``unaligned_50.pkl``), ``synthetic-mosi`` /
``synthetic-mosei`` (generated on first use and cached, see :mod:`dlf.data.synthetic`), or a path to
a pickle. Files are read with :mod:`dlf.data.safe_pickle` (containers, strings, numbers and numpy
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
from dlf.data import arrays
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
            raise arrays.split_error(path, split, key, "key is missing", "an MMSA split needs " + ", ".join(REQUIRED_KEYS))
    labels = arrays.labels(path, split, raw["regression_labels"])
    n = labels.shape[0]
    feats = {key: arrays.features(path, split, key, raw[key], n) for key in FEATURE_KEYS}
    text_bert = arrays.text_bert(path, split, raw["text_bert"], n, feats["text"].shape[1])
    lengths = {key: arrays.lengths(path, split, key, raw.get(key), n, feats[mod].shape[1])
               for key, mod in (("audio_lengths", "audio"), ("vision_lengths", "vision"))}
    return Split(
        text=torch.from_numpy(feats["text"]), text_bert=torch.from_numpy(text_bert),
        audio=torch.from_numpy(feats["audio"]), vision=torch.from_numpy(feats["vision"]),
        labels=torch.from_numpy(labels), ids=arrays.strings(path, split, "id", raw["id"], n),
        raw_text=arrays.strings(path, split, "raw_text", raw["raw_text"], n),
        audio_lengths=lengths["audio_lengths"], vision_lengths=lengths["vision_lengths"])


def _check_consistent(path: Path, splits: dict[str, Split]) -> None:
    """Widths and stored lengths must agree across splits: one model consumes them all."""
    ref = splits["train"]
    for name, sp in splits.items():
        for key in FEATURE_KEYS:
            if getattr(sp, key).shape[1:] != getattr(ref, key).shape[1:]:
                raise arrays.split_error(path, name, key, f"shape {tuple(getattr(sp, key).shape[1:])} per sample but train "
                             f"has {tuple(getattr(ref, key).shape[1:])}", "all splits need the same layout")
