"""The synthetic generator: exact MMSA layout, determinism, caching and the planted structure."""
import hashlib
import os
import pickle
import re
import time

import numpy as np
import pytest

from dlf.data import synthetic as S
from dlf.errors import DLFError
from dlf.resources import cache_dir

MMSA_KEYS = {"raw_text", "audio", "vision", "id", "text", "text_bert", "annotations", "classification_labels",
             "regression_labels"}
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{11}\$_\$\d+$")


def _load(path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_real_split_sizes_by_default_and_a_floor_for_tiny_scales():
    assert S.split_sizes("mosi") == (1284, 229, 686)
    assert S.split_sizes("mosei") == (16326, 1871, 4659)
    assert S.split_sizes("mosi", 0.1) == (128, 23, 69)
    assert S.split_sizes("mosi", 0.001) == (S.MIN_SPLIT,) * 3


@pytest.mark.parametrize("fixture,corpus,lens", [
    ("tiny_mosi", "mosi", (50, 50)), ("tiny_mosi_unaligned", "mosi", (375, 500)), ("tiny_mosei", "mosei", (50, 50)),
])
def test_exact_mmsa_layout(request, fixture, corpus, lens):
    data = _load(request.getfixturevalue(fixture))
    aligned = fixture != "tiny_mosi_unaligned"
    assert set(data) == {"train", "valid", "test", S.META_KEY}
    d_text, d_audio, d_vision = S.DIMS[corpus]
    for split in ("train", "valid", "test"):
        sp = data[split]
        n = len(sp["regression_labels"])
        assert set(sp) == MMSA_KEYS | (set() if aligned else {"audio_lengths", "vision_lengths"})
        assert sp["text"].shape == (n, 50, d_text) and sp["text"].dtype == np.float32
        assert sp["text_bert"].shape == (n, 3, 50) and sp["text_bert"].dtype == np.int64
        assert sp["audio"].shape == (n, lens[0], d_audio) and sp["vision"].shape == (n, lens[1], d_vision)
        for key in ("id", "raw_text", "annotations"):
            assert sp[key].dtype == object and sp[key].shape == (n,)
        assert sp["regression_labels"].dtype == np.float32 and sp["classification_labels"].shape == (n,)
        assert all(ID_PATTERN.match(i) for i in sp["id"])
        np.testing.assert_array_equal(sp["classification_labels"], np.sign(sp["regression_labels"]) + 1)


def test_splits_never_share_a_video(tiny_mosi):
    data = _load(tiny_mosi)
    videos = [{i.split("$_$")[0] for i in data[s]["id"]} for s in ("train", "valid", "test")]
    assert not (videos[0] & videos[1] or videos[0] & videos[2] or videos[1] & videos[2])
    assert len(set(data["train"]["id"])) == len(data["train"]["id"])


@pytest.fixture(scope="module")
def mosi_half():
    return S.generate("mosi", scale=0.5, seed=1)


@pytest.mark.slow
def test_labels_follow_the_mosi_histogram(mosi_half):
    sp = mosi_half["train"]
    y = sp["regression_labels"].astype(np.float64)
    assert np.abs(y).max() <= 3.0 and np.allclose(y * 5, np.round(y * 5), atol=1e-5)  # multiples of 0.2
    assert 0.02 < np.mean(y == 0) < 0.08  # a few percent exact zeros (MOSI: 4.4 %)
    table = np.asarray(S.LABEL_COUNTS, dtype=float)
    assert np.abs(np.mean(y > 0) - table[16:].sum() / table.sum()) < 0.06
    assert 1.2 < y.std() < 1.8


def test_padding_is_exactly_zero_after_each_length(tiny_mosi, tiny_mosi_unaligned):
    aligned, unaligned = _load(tiny_mosi)["train"], _load(tiny_mosi_unaligned)["train"]
    length = aligned["text_bert"][:, 1].sum(1)
    steps = {"text": length, "audio": length, "vision": length}
    for sp, lens in ((aligned, steps), (unaligned, {"text": length, "audio": unaligned["audio_lengths"],
                                                    "vision": unaligned["vision_lengths"]})):
        for key, n_valid in lens.items():
            x = sp[key]
            valid = np.arange(x.shape[1])[None, :] < n_valid[:, None]
            assert (x[~valid] == 0).all()
            assert (np.abs(x[valid]).sum(-1) > 0).all()  # every valid step carries data
    assert (length >= 6).all() and (length < 50).any()


def test_tokens_and_raw_text_agree(tiny_mosi):
    sp = _load(tiny_mosi)["valid"]
    lexicon = dict(S.NEUTRAL_WORDS + S.POSITIVE_WORDS + S.NEGATIVE_WORDS)
    for ids, mask, types, text in zip(sp["text_bert"][:, 0], sp["text_bert"][:, 1], sp["text_bert"][:, 2],
                                      sp["raw_text"]):
        n = int(mask.sum())
        assert (mask[:n] == 1).all() and (mask[n:] == 0).all() and (types == 0).all()
        assert ids[0] == S.CLS_ID and ids[n - 1] == S.SEP_ID and (ids[n:] == S.PAD_ID).all()
        assert [lexicon[w] for w in text.split()] == list(ids[1: n - 1])


@pytest.mark.slow
def test_tokens_carry_the_sentiment(mosi_half):
    sp = mosi_half["train"]
    pos, neg = {i for _, i in S.POSITIVE_WORDS}, {i for _, i in S.NEGATIVE_WORDS}
    ids, n = sp["text_bert"][:, 0], sp["text_bert"][:, 1].sum(1)
    score = (np.isin(ids, list(pos)).sum(1) - np.isin(ids, list(neg)).sum(1)) / n
    assert np.corrcoef(score, sp["regression_labels"])[0, 1] > 0.5


def test_audio_has_some_negative_inf_inside_the_utterance(tiny_mosi):
    sp = _load(tiny_mosi)["train"]
    hit = np.isneginf(sp["audio"])
    assert 0 < hit.mean() < 0.01 and not np.isneginf(sp["vision"]).any()
    steps = np.nonzero(hit)[1]
    rows = np.nonzero(hit)[0]
    assert (steps < sp["text_bert"][rows, 1].sum(1)).all()


def test_temporal_structure_and_speaker_offsets(tiny_mosi):
    sp = _load(tiny_mosi)["train"]
    x = np.where(np.isneginf(sp["vision"]), 0, sp["vision"])[:, :5]  # the first 5 steps are always valid
    lag1 = np.corrcoef(x[:, :-1].reshape(-1), x[:, 1:].reshape(-1))[0, 1]
    assert lag1 > 0.5  # smooth along time, not iid
    video = np.array([i.split("$_$")[0] for i in sp["id"]])
    means = x.mean(1)  # (N, D)
    within = np.mean([means[video == v].var(0).mean() for v in np.unique(video)])
    assert means.var(0).mean() > 1.3 * within  # clips of one speaker resemble each other


def test_aligned_and_unaligned_describe_the_same_utterances(tiny_mosi, tiny_mosi_unaligned):
    a, u = _load(tiny_mosi)["test"], _load(tiny_mosi_unaligned)["test"]
    for key in ("id", "raw_text", "regression_labels", "text_bert", "text"):
        np.testing.assert_array_equal(a[key], u[key])


def test_deterministic_bytes_per_seed(tmp_path):
    paths = [S.write_synthetic("mosi", tmp_path / f"{i}.pkl", scale=0.02, seed=s) for i, s in enumerate((5, 5, 6))]
    assert _sha(paths[0]) == _sha(paths[1]) != _sha(paths[2])


def test_cached_generation_under_the_cache_dir():
    path = S.ensure_synthetic("mosi", aligned=False, scale=0.02, seed=4)
    assert path == cache_dir() / "synthetic" / "synthetic-mosi_unaligned_scale0.02_seed4_v1.pkl"
    stale = path.parent / ".old.pkl.x.tmp"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (time.time() - 7200,) * 2)
    before = path.stat().st_mtime_ns
    assert S.ensure_synthetic("mosi", aligned=False, scale=0.02, seed=4).stat().st_mtime_ns == before
    S.ensure_synthetic("mosi", aligned=False, scale=0.02, seed=7)  # a new file cleans stale temp files
    assert not stale.exists()


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    def killed(obj, fh, protocol=None):
        fh.write(b"\x80\x05partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(S.pickle, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        S.write_synthetic("mosi", tmp_path / "x.pkl", scale=0.01)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("corpus,scale,match", [("iemocap", 0.1, "unknown synthetic corpus"),
                                                ("mosi", 0.0, "scale must be in"), ("mosi", 1.5, "scale must be in")])
def test_bad_arguments(corpus, scale, match):
    with pytest.raises(DLFError, match=match):
        S.ensure_synthetic(corpus, scale=scale)


# ---- planted modality strengths, measured with a ridge probe on mean-pooled features ----------

def _pooled(sp, key):
    """(N, D) mean over the valid steps (padding is 0; -inf counts as 0, as the loader does)."""
    lengths = sp.get(f"{key}_lengths", sp["text_bert"][:, 1].sum(1)) if key != "text" else sp["text_bert"][:, 1].sum(1)
    x = sp[key]
    total = np.where(np.isneginf(x), 0, x).sum(1) if key == "audio" else x.sum(1, dtype=np.float64)
    return total / lengths[:, None]


def _ridge_fits(x_train, y_train, lams):
    """Ridge regressions on standardised features, one per strength in ``lams``."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
    a = (x_train - mu) / sd
    gram, rhs, eye = a.T @ a, a.T @ (y_train - y_train.mean()), np.eye(a.shape[1])
    weights = [np.linalg.solve(gram + lam * eye, rhs) for lam in lams]
    return [lambda x, w=w: ((x - mu) / sd) @ w + y_train.mean() for w in weights]


def _probe(data, keys):
    """Fit on train (ridge strength picked on valid); predictions on test. Memoised per data set."""
    memo = data.setdefault("_probe_memo", {})
    if tuple(keys) not in memo:
        feats = {s: np.concatenate([_pooled(data[s], k) for k in keys], 1) for s in ("train", "valid", "test")}
        y = {s: data[s]["regression_labels"].astype(np.float64) for s in feats}
        fits = _ridge_fits(feats["train"], y["train"], (1.0, 10.0, 100.0, 1e3, 1e4))
        best = max(fits, key=lambda f: np.corrcoef(f(feats["valid"]), y["valid"])[0, 1])
        memo[tuple(keys)] = best(feats["test"])
    return memo[tuple(keys)]


@pytest.fixture(scope="module", params=[("mosi", 1.0), ("mosei", 0.05)], ids=["mosi", "mosei"])
def probe_data(request):
    corpus, scale = request.param
    return S.generate(corpus, scale=scale, seed=0)


@pytest.mark.slow
def test_linear_probe_finds_the_planted_modality_strengths(probe_data):
    y = probe_data["test"]["regression_labels"]
    r = {key: np.corrcoef(_probe(probe_data, [key]), y)[0, 1] for key in ("text", "audio", "vision")}
    assert 0.6 < r["text"] < 0.85, r
    for key in ("audio", "vision"):
        assert 0.1 < r[key] < r["text"] - 0.3, r


@pytest.mark.slow
def test_complementary_subset_is_carried_by_audio_and_vision(probe_data):
    y = probe_data["test"]["regression_labels"]
    subset = probe_data[S.META_KEY]["complementary"]["test"]
    subset = subset[y[subset] != 0]
    assert len(subset) >= 20
    sign_acc = {name: np.mean((_probe(probe_data, keys)[subset] > 0) == (y[subset] > 0))
                for name, keys in (("text", ["text"]), ("av", ["audio", "vision"]))}
    assert sign_acc["av"] > 0.7 and sign_acc["av"] > sign_acc["text"] + 0.15, sign_acc
