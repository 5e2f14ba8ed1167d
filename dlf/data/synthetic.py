"""Deterministic synthetic stand-ins for the MMSA MOSI / MOSEI pickles (``synthetic-mosi``, ``synthetic-mosei``).

The files have the exact MMSA layout (see docs/fidelity.md): splits
train/valid/test with ``text`` (N, 50, 768) float32, ``text_bert`` (N, 3, 50) int64,
``audio``/``vision`` (N, T, D) float32, ``regression_labels``/``classification_labels`` (N,),
object arrays ``id`` (``video$_$clip``), ``raw_text`` and ``annotations``, and
``audio_lengths``/``vision_lengths`` only in unaligned files. Widths and lengths are the real
ones (MOSI 768/5/20, MOSEI 768/74/35; unaligned audio/vision 375/500 for MOSI, 500/500 for
MOSEI), and so are the split sizes (MOSI 1284/229/686, MOSEI 16326/1871/4659) unless ``scale``
shrinks them. One extra top-level key, ``dlf_synthetic``, records the recipe, so a synthetic file
is never mistaken for (or captioned as) the real dataset.

Recipe (per sample; every random draw comes from ``seed``, so a file is reproducible byte for byte):

* label y drawn from the CMU-MOSI opinion-level histogram (multiples of 0.2 in [-3, 3], 4.4 %
  exact zeros); s = y / 1.5 is the standardised sentiment.
* videos of 9-63 clips (mean about 24, as in MOSI); splits never share a video; ids are
  ``<11-character video id>$_$<clip number>``.
* utterance length L (word pieces incl. [CLS]/[SEP]) from a log-normal around 18, in [6, 50].
  Aligned audio/vision have L valid steps; unaligned ones about 7.5 L (audio) and 10 L (vision)
  steps, capped at the stored length. Every feature is exactly 0 past its length.
* latents (noise e ~ N(0, 1), independent per modality): text s + 0.75 e, audio and vision
  0.05 s + e; except in a complementary subset (15 % of samples, listed per split under
  ``dlf_synthetic['complementary']``) where the text is neutral (0.3 e) and audio and vision
  carry the sign clearly (1.5 s + 0.3 e each). Net effect, measured by a ridge probe on
  mean-pooled features: text r ~ 0.7-0.77 with the label, audio and vision r ~ 0.15-0.3 each,
  and on the subset audio + vision get the sign right ~85 % of the time, text ~50 %.
* each modality's latent is written along a fixed random direction of the feature space (shared
  by all splits), modulated by a smooth per-sample envelope over the valid time steps (present
  at every step, not at one position), on top of AR(1) noise along time (rho 0.9: smooth, not
  iid; 96 independent sources for the 768 text dims) and a per-video (speaker) offset vector.
  About 0.3 % of valid audio values are -inf, as in real MOSI; the loader sets them to 0.
* tokens: [CLS] words [SEP] with words from a small sentiment lexicon (bert-base-uncased ids):
  the share of sentiment words grows with |text latent| and their polarity follows its sign, so
  the BERT text modes see the same signal; ``raw_text`` holds those words, and the text features
  add a per-word embedding that leans along the sentiment direction by the word's polarity.
"""
from __future__ import annotations

import math
import os
import pickle
import time
from pathlib import Path

import numpy as np

from dlf.errors import DLFError
from dlf.data.fingerprint import atomic_write
from dlf.resources import cache_dir

GENERATOR_VERSION = 1
META_KEY = "dlf_synthetic"
SPLITS = ("train", "valid", "test")
CORPORA = ("mosi", "mosei")
SPLIT_SIZES = {"mosi": (1284, 229, 686), "mosei": (16326, 1871, 4659)}
DIMS = {"mosi": (768, 5, 20), "mosei": (768, 74, 35)}  # text, audio, vision widths
UNALIGNED_LENS = {"mosi": (375, 500), "mosei": (500, 500)}  # audio, vision stored steps
TEXT_LEN = 50
MIN_SPLIT = 8  # even a tiny scale keeps a handful of samples per split

# CMU-MOSI opinion-level labels (2199 segments) rounded to multiples of 0.2: counts for -3.0, -2.8, ..., 3.0.
LABEL_COUNTS = (12, 32, 36, 42, 63, 103, 76, 101, 81, 79, 110, 76, 58, 89, 65, 96,
                73, 80, 65, 81, 62, 75, 96, 93, 98, 120, 96, 56, 44, 29, 12)

# bert-base-uncased vocabulary ids (looked up once in the uncased WordPiece vocab).
NEUTRAL_WORDS = (("the", 1996), ("movie", 3185), ("film", 2143), ("it", 2009), ("was", 2001), ("i", 1045),
                 ("a", 1037), ("and", 1998), ("this", 2023), ("to", 2000), ("of", 1997), ("really", 2428),
                 ("just", 2074), ("so", 2061), ("but", 2021), ("very", 2200), ("story", 2466),
                 ("acting", 3772), ("actually", 2941), ("like", 2066), ("kind", 2785), ("think", 2228),
                 ("watch", 3422), ("plot", 5436), ("character", 2839), ("scene", 3496), ("um", 8529), ("uh", 7910))
POSITIVE_WORDS = (("great", 2307), ("good", 2204), ("love", 2293), ("amazing", 6429), ("wonderful", 6919),
                  ("best", 2190), ("excellent", 6581), ("enjoyed", 5632), ("fun", 4569), ("awesome", 12476),
                  ("beautiful", 3376), ("perfect", 3819), ("brilliant", 8235), ("funny", 6057),
                  ("happy", 3407), ("liked", 4669), ("nice", 3835))
NEGATIVE_WORDS = (("bad", 2919), ("terrible", 6659), ("awful", 9643), ("boring", 11771), ("worst", 5409),
                  ("hate", 5223), ("horrible", 9202), ("stupid", 5236), ("waste", 5949),
                  ("disappointing", 15640), ("poor", 3532), ("dull", 10634), ("annoying", 15703),
                  ("weak", 5410), ("sad", 6517), ("hated", 6283), ("ugly", 9200))
CLS_ID, SEP_ID, PAD_ID = 101, 102, 0

COMPLEMENT_SHARE = 0.15
_CORPUS_CODE = {"mosi": 1, "mosei": 2}
_CHUNK = 512  # samples per feature block: bounds peak memory for full-size MOSEI
_NOISE_RANK = 96  # independent smooth noise sources per modality (text features are 768 correlated dims)


def split_sizes(corpus: str, scale: float = 1.0) -> tuple[int, int, int]:
    """(train, valid, test) sizes: the real ones times ``scale``, at least ``MIN_SPLIT`` each."""
    _check(corpus, scale)
    return tuple(max(MIN_SPLIT, int(round(n * scale))) for n in SPLIT_SIZES[corpus])  # type: ignore[return-value]


def cache_name(corpus: str, aligned: bool = True, scale: float = 1.0, seed: int = 0) -> str:
    """File name of a cached synthetic pickle; it encodes every input of the generator."""
    kind = "aligned" if aligned else "unaligned"
    return f"synthetic-{corpus}_{kind}_scale{float(scale):g}_seed{int(seed)}_v{GENERATOR_VERSION}.pkl"


def ensure_synthetic(corpus: str, aligned: bool = True, scale: float = 1.0, seed: int = 0) -> Path:
    """Path of the cached synthetic pickle under ``cache_dir()/synthetic``, generated on first use."""
    _check(corpus, scale)
    path = cache_dir() / "synthetic" / cache_name(corpus, aligned, scale, seed)
    if not path.is_file():
        _remove_stale_temp_files(path.parent)
        write_synthetic(corpus, path, aligned=aligned, scale=scale, seed=seed)
    return path


def write_synthetic(corpus: str, out: str | os.PathLike, aligned: bool = True, scale: float = 1.0,
                    seed: int = 0) -> Path:
    """Generate and write a synthetic MMSA pickle atomically (temp file + ``os.replace``)."""
    data = generate(corpus, aligned=aligned, scale=scale, seed=seed)
    try:
        return atomic_write(out, lambda fh: pickle.dump(data, fh, protocol=5))
    except OSError as err:
        raise DLFError(f"{out}: cannot write the synthetic pickle ({err.strerror or err}); choose a writable "
                       "--out path, or set DLF_CACHE to a writable folder for the cache") from None


def generate(corpus: str, aligned: bool = True, scale: float = 1.0, seed: int = 0) -> dict:
    """The synthetic dataset as the MMSA dict {'train','valid','test', META_KEY}."""
    _check(corpus, scale)
    params = _dataset_params(corpus, seed)
    data: dict = {}
    meta = {"corpus": corpus, "aligned": bool(aligned), "scale": float(scale), "seed": int(seed),
            "version": GENERATOR_VERSION, "complementary": {}}
    for index, (split, n) in enumerate(zip(SPLITS, split_sizes(corpus, scale))):
        seq = np.random.SeedSequence([int(seed), _CORPUS_CODE[corpus], index])
        data[split], comp = _make_split(corpus, aligned, n, seq, params)
        meta["complementary"][split] = np.flatnonzero(comp)  # samples where only audio/vision carry the sign
    data[META_KEY] = meta
    return data


def _check(corpus: str, scale: float) -> None:
    if corpus not in CORPORA:
        raise DLFError(f"unknown synthetic corpus {corpus!r}; use synthetic-mosi or synthetic-mosei")
    if not (math.isfinite(scale) and 0 < scale <= 1):
        raise DLFError(f"synthetic scale must be in (0, 1], got {scale}; e.g. --scale 0.1 for a small set")


def _remove_stale_temp_files(folder: Path, max_age_s: float = 3600.0) -> None:
    """Temp files left by a generation that was killed (an hour old: surely not in progress)."""
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
        try:
            if time.time() - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
        except OSError:
            pass


def _dataset_params(corpus: str, seed: int) -> dict:
    """What all splits share: per modality a sentiment direction and a noise layout; word embeddings.

    Only exactly rounded arithmetic (no BLAS, no SIMD transcendentals) touches stored float values,
    so every host with the same numpy writes the same bytes (workers compare fingerprints).
    """
    rng = np.random.default_rng([int(seed), _CORPUS_CODE[corpus], 99])
    dirs, mix = {}, {}
    for key, dim in zip(("l", "a", "v"), DIMS[corpus]):
        signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), dim)
        dirs[key] = signs / np.float32(math.sqrt(dim))  # unit vector with equal-magnitude entries
        if dim > _NOISE_RANK:  # output dim j copies smooth source j % _NOISE_RANK, sign flipped or not
            mix[key] = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), dim)
    polarity = np.array([0.0] * len(NEUTRAL_WORDS) + [1.0] * len(POSITIVE_WORDS) + [-1.0] * len(NEGATIVE_WORDS))
    # rows: lexicon words, then [CLS], [SEP], [PAD]; padding embeds to 0.
    emb = 0.3 * rng.standard_normal((len(polarity) + 3, DIMS[corpus][0]))
    emb[: len(polarity)] += 0.6 * polarity[:, None] * dirs["l"][None, :]
    emb[-1] = 0.0
    return {"dirs": dirs, "mix": mix, "word_emb": emb.astype(np.float32)}


def _make_split(corpus: str, aligned: bool, n: int, seq: np.random.SeedSequence,
                params: dict) -> tuple[dict, np.ndarray]:
    # Labels, ids, lengths and latents come from their own stream, so the aligned and unaligned
    # files of one seed describe the same utterances (as the real pair does).
    r_sample, r_text, r_audio, r_vision = (np.random.default_rng(s) for s in seq.spawn(4))
    smp = _samples(r_sample, n)
    d_text, d_audio, d_vision = DIMS[corpus]
    tokens = _sample_tokens(r_text, smp["z_l"], smp["length"], TEXT_LEN)
    text = _features(r_text, smp, "l", smp["length"], TEXT_LEN, d_text, params, amp=3.0, noise=0.5,
                     word_index=tokens["lexicon_index"])
    if aligned:
        a_len, v_len, t_a, t_v = smp["length"], smp["length"], TEXT_LEN, TEXT_LEN
    else:
        t_a, t_v = UNALIGNED_LENS[corpus]
        a_len = np.clip(np.round(smp["length"] * 7.5 * smp["rate_a"]), 10, t_a).astype(np.int64)
        v_len = np.clip(np.round(smp["length"] * 10.0 * smp["rate_v"]), 10, t_v).astype(np.int64)
    audio = _features(r_audio, smp, "a", a_len, t_a, d_audio, params, amp=1.0, noise=0.6)
    vision = _features(r_vision, smp, "v", v_len, t_v, d_vision, params, amp=1.0, noise=0.6)
    _plant_neg_inf(r_audio, audio, a_len)
    labels = smp["labels"]
    cls = np.sign(labels).astype(np.int64) + 1  # 0 negative, 1 neutral, 2 positive
    split = {
        "raw_text": tokens["raw_text"], "audio": audio, "vision": vision, "id": smp["ids"], "text": text,
        "text_bert": tokens["text_bert"],
        "annotations": np.array(["Negative", "Neutral", "Positive"], dtype=object)[cls],
        "classification_labels": cls.astype(np.float32), "regression_labels": labels,
    }
    if not aligned:
        split["audio_lengths"], split["vision_lengths"] = a_len, v_len
    return split, smp["complement"]


def _samples(rng: np.random.Generator, n: int) -> dict:
    """Per-sample labels, ids, video index, lengths, envelopes and the three modality latents."""
    counts = np.asarray(LABEL_COUNTS, dtype=np.float64)
    labels = ((rng.choice(len(counts), size=n, p=counts / counts.sum()) - 15) / 5.0).astype(np.float32)
    video, ids = _video_ids(rng, n)
    length = np.clip(np.round(np.exp(rng.normal(math.log(18.0), 0.45, n))), 6, TEXT_LEN).astype(np.int64)
    s = labels.astype(np.float64) / 1.5
    comp = rng.random(n) < COMPLEMENT_SHARE
    e = rng.standard_normal((3, n))
    z_l = np.where(comp, 0.3 * e[0], s + 0.75 * e[0])
    z_a = np.where(comp, 1.5 * s + 0.3 * e[1], 0.05 * s + e[1])
    z_v = np.where(comp, 1.5 * s + 0.3 * e[2], 0.05 * s + e[2])
    return {"labels": labels, "video": video, "ids": ids, "length": length, "complement": comp,
            "z_l": z_l, "z_a": z_a, "z_v": z_v, "freq": rng.uniform(0.5, 1.5, n), "phase": rng.random(n),
            "rate_a": rng.uniform(0.8, 1.2, n), "rate_v": rng.uniform(0.8, 1.2, n)}


_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def _video_ids(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive runs of 9-63 clips per video, as in MOSI; ids ``video$_$clip`` (object array)."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(np.clip(round(rng.normal(23.6, 9.6)), 9, 63)))
    sizes[-1] -= sum(sizes) - n
    names = ["".join(rng.choice(_ID_ALPHABET, 11)) for _ in sizes]
    video = np.repeat(np.arange(len(sizes)), sizes)
    ids = np.array([f"{names[v]}$_${c + 1}" for v, k in enumerate(sizes) for c in range(k)], dtype=object)
    return video, ids


def _sample_tokens(rng: np.random.Generator, z_l: np.ndarray, length: np.ndarray, t_max: int) -> dict:
    """[CLS] words [SEP] [PAD]...: more sentiment words for a stronger text latent, polarity by its sign."""
    n = len(z_l)
    n_neu, n_pos = len(NEUTRAL_WORDS), len(POSITIVE_WORDS)
    words = np.array([w for w, _ in NEUTRAL_WORDS + POSITIVE_WORDS + NEGATIVE_WORDS], dtype=object)
    vocab_ids = np.array([i for _, i in NEUTRAL_WORDS + POSITIVE_WORDS + NEGATIVE_WORDS] + [CLS_ID, SEP_ID, PAD_ID])
    p_sent = np.clip(0.15 + 0.2 * np.abs(z_l), 0.0, 0.6)[:, None]
    p_pos = (1.0 / (1.0 + np.exp(-2.5 * z_l)))[:, None]
    u_sent, u_pos = rng.random((n, t_max)), rng.random((n, t_max))
    pick_neu = rng.integers(n_neu, size=(n, t_max))
    pick_pos = n_neu + rng.integers(n_pos, size=(n, t_max))
    pick_neg = n_neu + n_pos + rng.integers(len(NEGATIVE_WORDS), size=(n, t_max))
    index = np.where(u_sent < p_sent, np.where(u_pos < p_pos, pick_pos, pick_neg), pick_neu)  # (N, T) lexicon rows
    t = np.arange(t_max)[None, :]
    n_words = len(words)
    index = np.where(t >= length[:, None], n_words + 2, index)  # [PAD]
    index[:, 0] = n_words  # [CLS]
    index[np.arange(n), length - 1] = n_words + 1  # [SEP]
    text_bert = np.stack([vocab_ids[index], (t < length[:, None]).astype(np.int64),
                          np.zeros((n, t_max), dtype=np.int64)], axis=1)  # (N, 3, T)
    raw = np.array([" ".join(words[index[i, 1: length[i] - 1]]) for i in range(n)], dtype=object)
    return {"lexicon_index": index, "text_bert": text_bert, "raw_text": raw}


def _features(rng: np.random.Generator, smp: dict, key: str, steps: np.ndarray, t_max: int, dim: int,
              params: dict, amp: float, noise: float, word_index: np.ndarray | None = None) -> np.ndarray:
    """(N, t_max, dim) float32: latent x envelope along the modality direction + AR(1) noise
    + speaker offset (+ word embeddings for text), exactly 0 from ``steps`` on."""
    n = len(steps)
    offsets = rng.standard_normal((int(smp["video"].max()) + 1, dim)).astype(np.float32)
    offsets *= 0.1 if key == "l" else 0.5
    direction = params["dirs"][key]
    out = np.empty((n, t_max, dim), dtype=np.float32)
    t = np.arange(t_max)[:, None]  # blocks are time-major (T, b, D) so each time step is contiguous
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, min(n, lo + _CHUNK))
        pos = t / np.maximum(steps[sl] - 1, 1)  # (T, b): 0..1 over the valid part
        envelope = 1.0 + 0.5 * _wave(smp["freq"][sl] * pos + smp["phase"][sl])
        block = _ar1_noise(rng, (t_max, sl.stop - lo, min(dim, _NOISE_RANK)), rho=0.9)
        if key in params["mix"]:  # (T, b, K) -> (T, b, dim), scaled by noise in the same pass
            block = np.tile(block, (1, 1, -(-dim // _NOISE_RANK)))[:, :, :dim] * (params["mix"][key] * noise)
        else:
            block *= noise
        block += (amp * smp[f"z_{key}"][sl] * envelope).astype(np.float32)[:, :, None] * direction
        block += offsets[smp["video"][sl]][None]
        if word_index is not None:
            block += params["word_emb"][word_index[sl].T]
        block *= (t < steps[sl])[:, :, None]  # zero padding after the length
        out[sl] = block.transpose(1, 0, 2)
    return out


def _wave(x: np.ndarray) -> np.ndarray:
    """A smooth sine-like wave of period 1 in [-1, 1], from + and * only (exact on every CPU)."""
    g = x - np.floor(x)
    return np.where(g < 0.5, 16.0 * g * (0.5 - g), -16.0 * (g - 0.5) * (1.0 - g))


def _ar1_noise(rng: np.random.Generator, shape: tuple[int, int, int], rho: float) -> np.ndarray:
    """Unit-variance AR(1) noise along axis 0 (time): smooth rather than iid."""
    x = rng.standard_normal(shape, dtype=np.float32)
    keep, carry = np.float32(math.sqrt(1 - rho * rho)), np.empty(shape[1:], dtype=np.float32)
    for step in range(1, shape[0]):
        np.multiply(x[step - 1], np.float32(rho), out=carry)
        x[step] *= keep
        x[step] += carry
    return x


def _plant_neg_inf(rng: np.random.Generator, audio: np.ndarray, steps: np.ndarray) -> None:
    """Set about 0.3 % of the valid audio values to -inf, as real MOSI audio has."""
    n, t_max, dim = audio.shape
    for lo in range(0, n, _CHUNK):  # chunked: full-size unaligned MOSEI audio is 2.4 G values
        block = audio[lo: lo + _CHUNK]
        valid = np.arange(t_max)[None, :] < steps[lo: lo + _CHUNK, None]  # (b, T)
        block[(rng.random(block.shape, dtype=np.float32) < 0.003) & valid[:, :, None]] = -np.inf
