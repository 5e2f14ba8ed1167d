"""Loading, validation and resolution of MMSA pickles; content fingerprints."""
import hashlib
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from dlf.data import fingerprint as fp
from dlf.config import DataConfig
from dlf.data.mmsa import load_dataset, resolve_dataset
from dlf.errors import DLFError
from dlf.resources import cache_dir
from dlf.data.synthetic import META_KEY


def _raw(path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


def test_load_aligned_mosi(tiny_mosi):
    ds = load_dataset(str(tiny_mosi))
    assert (ds.corpus, ds.synthetic, ds.aligned, ds.display_name) == ("mosi", True, True, "synthetic-MOSI")
    assert ds.dims == {"l": 768, "a": 5, "v": 20} and ds.seq_lens == {"l": 50, "a": 50, "v": 50}
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [51, 9, 27]
    sp = ds.splits["train"]
    assert sp.text.shape == (51, 50, 768) and sp.text.dtype == torch.float32
    assert sp.text_bert.shape == (51, 3, 50) and sp.text_bert.dtype == torch.long
    assert sp.audio.shape == (51, 50, 5) and sp.vision.shape == (51, 50, 20)
    assert sp.labels.shape == (51,) and sp.labels.dtype == torch.float32
    assert sp.audio_lengths is None and sp.vision_lengths is None
    assert isinstance(sp.ids[0], str) and "$_$" in sp.ids[0] and isinstance(sp.raw_text[0], str)
    assert ds.fingerprint == hashlib.sha256(tiny_mosi.read_bytes()).hexdigest()


def test_negative_inf_becomes_exact_zero(tiny_mosi):
    stored = _raw(tiny_mosi)["train"]["audio"]
    hit = np.isneginf(stored)
    assert hit.any()  # the synthetic recipe plants -inf, as real MOSI audio has
    audio = load_dataset(str(tiny_mosi)).splits["train"].audio.numpy()
    assert np.isfinite(audio).all() and (audio[hit] == 0).all()
    np.testing.assert_array_equal(audio[~hit], stored[~hit])


def test_load_unaligned_mosi_has_lengths(tiny_mosi_unaligned):
    ds = load_dataset(str(tiny_mosi_unaligned))
    assert not ds.aligned and ds.seq_lens == {"l": 50, "a": 375, "v": 500}
    sp = ds.splits["test"]
    assert sp.audio_lengths.dtype == torch.long and sp.audio_lengths.shape == (27,)
    i = int(torch.argmin(sp.vision_lengths))
    assert (sp.vision[i, sp.vision_lengths[i]:] == 0).all()
    assert sp.to("cpu").audio_lengths is not None and len(sp.to("cpu")) == 27


def test_mosei_family_and_dims(tiny_mosei):
    ds = load_dataset(str(tiny_mosei))
    assert ds.corpus == "mosei" and ds.display_name == "synthetic-MOSEI"
    assert ds.dims == {"l": 768, "a": 74, "v": 35}


@pytest.mark.parametrize("fixture,name,corpus", [
    ("tiny_mosei", "features.pkl", "mosei"),  # widths 74/35
    ("tiny_mosi", "features.pkl", "mosi"),  # widths 5/20
])
def test_family_from_widths_without_metadata(request, mmsa_variant, fixture, name, corpus):
    path = mmsa_variant(request.getfixturevalue(fixture), _drop(META_KEY), name)
    ds = load_dataset(str(path))
    assert ds.corpus == corpus and not ds.synthetic and ds.display_name == corpus.upper()


@pytest.mark.parametrize("name,corpus", [("my_mosei_feats.pkl", "mosei"), ("other.pkl", "mosi")])
def test_family_from_file_name_when_widths_are_unknown(tiny_mosi, mmsa_variant, name, corpus):
    def narrow(d):
        d.pop(META_KEY)
        for s in ("train", "valid", "test"):
            d[s]["audio"] = d[s]["audio"][:, :, :3]
    assert resolve_dataset(str(mmsa_variant(tiny_mosi, narrow, name))).corpus == corpus


def test_dtype_variety_is_accepted(tiny_mosi, mmsa_variant):
    def widen(d):
        for s in ("train", "valid", "test"):
            sp = d[s]
            sp["audio"] = sp["audio"].astype(np.float64)
            sp["vision"][0, 0, 0] = -np.inf  # -inf in any feature array is zeroed
            sp["text_bert"] = sp["text_bert"].astype(np.float32)
            sp["regression_labels"] = sp["regression_labels"].astype(np.float64).reshape(-1, 1)
            sp["id"] = list(sp["id"])
    ds = load_dataset(str(mmsa_variant(tiny_mosi, widen)))
    sp = ds.splits["valid"]
    assert sp.audio.dtype == torch.float32 and sp.text_bert.dtype == torch.long and sp.labels.shape == (9,)
    assert sp.vision[0, 0, 0] == 0 and int(sp.text_bert[0, 0, 0]) == 101


def test_named_dataset_under_data_root(tiny_mosi, tmp_path, monkeypatch):
    target = tmp_path / "root" / "MOSI" / "Processed" / "aligned_50.pkl"
    target.parent.mkdir(parents=True)
    shutil.copy(tiny_mosi, target)
    ref = resolve_dataset("mosi", data_root=tmp_path / "root")
    assert ref.path == target and ref.corpus == "mosi" and not ref.synthetic and ref.aligned
    monkeypatch.setenv("DLF_DATA_ROOT", str(tmp_path / "root"))
    ds = load_dataset("MOSI")
    assert ds.path == target
    assert ds.synthetic and ds.display_name == "synthetic-MOSI"  # recipe metadata wins over the location
    with pytest.raises(DLFError, match=r"unaligned_50\.pkl not found.*synthetic-mosi"):
        resolve_dataset("mosi", DataConfig(aligned=False))


def test_named_dataset_without_root_says_how_to_fix():
    with pytest.raises(DLFError) as err:
        resolve_dataset("mosei")
    msg = str(err.value)
    assert "--data-root" in msg and "DLF_DATA_ROOT" in msg and "MOSEI/Processed/aligned_50.pkl" in msg
    assert "synthetic-mosei" in msg and "\n" not in msg


def test_unknown_spec_is_an_error(tmp_path):
    with pytest.raises(DLFError, match="does not exist.*synthetic-mosi"):
        resolve_dataset(str(tmp_path / "nope.pkl"))
    with pytest.raises(DLFError, match="is a folder"):
        resolve_dataset(str(tmp_path))


def test_synthetic_spec_is_generated_once_into_the_cache():
    data = DataConfig(scale=0.01, synth_seed=3)
    ref = resolve_dataset("synthetic-mosei", data)
    assert ref.path.parent == cache_dir() / "synthetic"
    assert ref.path.name == "synthetic-mosei_aligned_scale0.01_seed3_v1.pkl"
    assert (ref.corpus, ref.synthetic, ref.aligned) == ("mosei", True, True)
    mtime = ref.path.stat().st_mtime_ns
    assert resolve_dataset("synthetic-mosei", data).path.stat().st_mtime_ns == mtime  # cached, not rewritten


def _drop(key, inner=None):
    def mutate(d):
        del (d[key] if inner else d)[inner or key]
    return mutate


def _set_split(split, value):
    def mutate(d):
        d[split] = value
    return mutate


def _set(split, key, value):
    def mutate(d):
        d[split][key] = value(d[split][key]) if callable(value) else value
    return mutate


def _nan(a):
    a = a.copy()
    a[2, 3, 1] = np.nan
    return a


def _posinf(a):
    a = a.copy()
    a[1, 0, 0] = np.inf
    return a


def _label(a):
    a = a.copy()
    a[4] = 3.4
    return a


BAD_CASES = [
    # (mutation, regex the one-line message must match)
    (_drop("valid"), r"split 'valid' is missing"),
    (lambda d: [d["test"]], r"top level is a list, not a dict"),
    (_set_split("train", [1, 2]), r"split 'train' is a list, not a dict"),
    (_drop("test", "audio"), r"split 'test', key 'audio': key is missing"),
    (_set("train", "audio", lambda a: a[:, :, 0]), r"split 'train', key 'audio': rank 2"),
    (_set("valid", "vision", lambda a: a[:-1]), r"split 'valid', key 'vision': 8 samples but regression_labels has 9"),
    (_set("test", "id", lambda a: a[:-2]), r"split 'test', key 'id': 25 entries"),
    (_set("train", "text", _nan), r"split 'train', key 'text': NaN values \(first at sample 2\)"),
    (_set("train", "vision", _posinf), r"split 'train', key 'vision': \+inf values"),
    (_set("test", "regression_labels", _label), r"split 'test', key 'regression_labels': label 3.4 at sample 4"),
    (_set("valid", "text_bert", lambda a: a + 0.5), r"split 'valid', key 'text_bert': token ids are not whole"),
    (_set("valid", "audio", lambda a: a[:, :, :4]), r"split 'valid', key 'audio': shape \(50, 4\) per sample"),
    (_set("train", "audio", "loud"), r"split 'train', key 'audio': dtype <U4 is not numeric"),
]


@pytest.mark.parametrize("mutate,pattern", BAD_CASES)
@pytest.mark.slow
def test_bad_files_fail_with_one_line_naming_file_split_and_key(tiny_mosi, mmsa_variant, mutate, pattern):
    path = mmsa_variant(tiny_mosi, mutate, "bad.pkl")
    with pytest.raises(DLFError, match=pattern) as err:
        load_dataset(str(path))
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg and ";" in msg  # names the file, then says the fix


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", "truncated"])
def test_unreadable_or_truncated_pickle(tiny_mosi, tmp_path, content):
    path = tmp_path / "broken.pkl"
    path.write_bytes(tiny_mosi.read_bytes()[:5000] if content == "truncated" else content)
    with pytest.raises(DLFError, match=r"broken\.pkl: not a readable pickle .*truncated or not an MMSA") as err:
        load_dataset(str(path))
    assert "\n" not in str(err.value)


def test_fingerprint_is_sha256_and_cached(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    calls = []
    real = fp.sha256_file
    monkeypatch.setattr(fp, "sha256_file", lambda p: calls.append(p) or real(p))
    expected = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert fp.file_fingerprint(path) == expected
    assert fp.file_fingerprint(str(path)) == expected and len(calls) == 1  # second call from the cache
    path.write_bytes(b"abd" * 1000)  # same size, new content and mtime: hashed again
    os.utime(path, ns=(1, 1))
    assert fp.file_fingerprint(path) == hashlib.sha256(b"abd" * 1000).hexdigest() and len(calls) == 2


def test_corrupt_fingerprint_cache_is_ignored_and_rewritten(tmp_path):
    path = tmp_path / "g.bin"
    path.write_bytes(b"xyz")
    cache = cache_dir() / "fingerprints.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    assert fp.file_fingerprint(path) == hashlib.sha256(b"xyz").hexdigest()
    entry = json.loads(cache.read_text())[str(path.resolve())]
    assert entry["sha256"] == hashlib.sha256(b"xyz").hexdigest() and entry["size"] == 3
    with pytest.raises(DLFError, match="cannot fingerprint"):
        fp.file_fingerprint(tmp_path / "missing.bin")


def test_atomic_write_leaves_nothing_behind_when_interrupted(tmp_path):
    target = tmp_path / "out.pkl"
    target.write_bytes(b"old")

    def boom(fh):
        fh.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fp.atomic_write(target, boom)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.pkl"]
