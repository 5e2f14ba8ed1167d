"""Data pickles are read by a restricted unpickler: hostile files are refused before anything runs."""
import builtins
import os
import pathlib
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlf.data import safe_pickle
from dlf.cli import main
from dlf.config import DataConfig
from dlf.data.mmsa import load_dataset
from dlf.errors import DLFError
from dlf.data.synthetic import ensure_synthetic

ENTRY = [sys.executable, "-c", "from dlf.cli import main; main()"]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
REAL_FILES = [REFERENCE / "baselines" / "data_unaligned.pkl", REFERENCE / "official-parity" / "data.pkl"]


class Payload:
    """Unpickling this object calls ``call(*args)``: what a hostile feature file would do."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def payloads(marker: Path) -> dict:
    """Three ways to create ``marker`` on load: a method, exec and a shell command."""
    return {
        "touch": Payload(pathlib.Path.touch, marker),
        "exec": Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "system": Payload(os.system, f"touch '{marker}'"),
    }


def plant(where: str, payload):
    """A mutation for ``mmsa_variant`` that hides ``payload`` at the top level, in a split or in an object array."""
    def mutate(d):
        if where == "file":
            return payload
        if where == "top-level key":
            d["extra"] = payload
        elif where == "split dict":
            d["valid"]["annotations"] = payload
        else:  # an element of the object array of raw text
            d["test"]["raw_text"][3] = payload
    return mutate


PLACES = ["file", "top-level key", "split dict", "object array"]


def test_the_payloads_do_run_under_plain_pickle(tmp_path):
    """Sanity check of the fixtures: each payload really creates the marker when loaded naively."""
    marker = tmp_path / "MARKER"
    for name, payload in payloads(marker).items():
        pickle.loads(pickle.dumps({"train": np.array([payload], dtype=object)}, protocol=4))
        assert marker.exists(), name
        marker.unlink()


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("kind", ["touch", "exec", "system"])
def test_hostile_files_are_refused_by_the_library(tiny_mosi, mmsa_variant, tmp_path, where, kind):
    marker = tmp_path / "MARKER"
    bad = mmsa_variant(tiny_mosi, plant(where, payloads(marker)[kind]), "hostile.pkl")
    with pytest.raises(DLFError) as err:
        load_dataset(str(bad))
    assert not marker.exists()
    msg = str(err.value)
    assert msg.startswith(f"{bad}: refused to load '") and "\n" not in msg
    assert "trusted source" in msg


@pytest.mark.parametrize("kind,name", [("touch", "pathlib.Path.touch"), ("exec", "builtins.exec"),
                                       ("system", f"{os.system.__module__}.system")])
def test_the_message_names_the_forbidden_object(tmp_path, kind, name):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"train": payloads(tmp_path / "MARKER")[kind]}, protocol=4))
    with pytest.raises(DLFError, match=f"refused to load '{name}' \\(a pickle may only hold containers"):
        safe_pickle.load_file(path)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_old_and_new_protocols_are_refused_too(tmp_path, protocol):
    marker = tmp_path / "MARKER"
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([np.array([payloads(marker)["touch"]], dtype=object)], protocol=protocol))
    with pytest.raises(DLFError, match="refused to load"):
        safe_pickle.load_file(path)
    assert not marker.exists()


def run_main(capsys, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.mark.parametrize("where", PLACES)
def test_data_check_refuses_hostile_files_with_one_line(capsys, monkeypatch, tiny_mosi, mmsa_variant, tmp_path,
                                                       where):
    marker = tmp_path / "MARKER"
    bad = mmsa_variant(tiny_mosi, plant(where, payloads(marker)["system"]), "hostile.pkl")
    code, out, err = run_main(capsys, monkeypatch, "data", "check", bad)
    assert code == 2 and not marker.exists()
    assert err.startswith(f"error: {bad}: refused to load ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_console_script_refuses_a_hostile_file(tiny_mosi, mmsa_variant, tmp_path):
    marker = tmp_path / "MARKER"
    bad = mmsa_variant(tiny_mosi, plant("object array", payloads(marker)["exec"]), "hostile.pkl")
    proc = subprocess.run([*ENTRY, "data", "check", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not marker.exists()
    assert proc.stderr == f"error: {bad}: refused to load 'builtins.exec' ({safe_pickle.ADMITTED}); this file is " \
                          "not a plain MMSA feature file: regenerate it or get it from a trusted source\n"
    assert proc.stdout == ""


def test_a_cached_synthetic_file_with_a_payload_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("DLF_CACHE", str(tmp_path / "cache"))  # the session's shared cache stays intact
    cached = ensure_synthetic("mosi", scale=0.02)
    data = safe_pickle.load_file(cached)
    marker = tmp_path / "MARKER"
    data["train"]["id"][0] = payloads(marker)["touch"]
    cached.write_bytes(pickle.dumps(data, protocol=5))
    with pytest.raises(DLFError, match=f"{cached.name}: refused to load 'pathlib.Path.touch'"):
        load_dataset("synthetic-mosi", DataConfig(scale=0.02))
    assert not marker.exists()


def _same(a, b) -> bool:
    """Deep equality that also compares types, dtypes and memory order."""
    if isinstance(a, np.ndarray):
        if type(b) is not np.ndarray or (a.dtype, a.shape, a.flags.f_contiguous) != (b.dtype, b.shape,
                                                                                     b.flags.f_contiguous):
            return False
        if a.dtype == object:
            return all(_same(x, y) for x, y in zip(a.ravel(), b.ravel()))
        return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("fixture", ["tiny_mosi", "tiny_mosi_unaligned"])
def test_synthetic_files_load_exactly_as_plain_pickle_does(request, fixture):
    path = request.getfixturevalue(fixture)
    with open(path, "rb") as fh:
        expected = pickle.load(fh)
    got = safe_pickle.load_file(path)
    assert got["train"]["id"].dtype == object and isinstance(got["train"]["raw_text"][0], str)
    assert _same(expected, got)


@pytest.mark.parametrize("path", REAL_FILES, ids=[p.parent.name for p in REAL_FILES])
def test_reference_mmsa_files_load_exactly_as_plain_pickle_does(path):
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with open(path, "rb") as fh:
        expected = pickle.load(fh)
    assert _same(expected, safe_pickle.load_file(path))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_admitted_type_round_trips(protocol):
    shared = np.arange(3.0)
    value = {
        "f32": np.ones((2, 3), np.float32), "fortran": np.asfortranarray(np.eye(3)), "int": np.arange(4),
        "u8": np.arange(3, dtype=np.uint8), "bool": np.array([True, False]), "big-endian": np.arange(2.0).astype(">f8"),
        "complex": np.array([1 + 2j]), "str": np.array(["a", "bcd"]), "bytes": np.array([b"x", b"yz"]),
        "objects": np.array(["v$_$1", "some text", None, 3, b"raw"], dtype=object),
        "ragged objects": np.array([np.zeros(2), np.ones(3)], dtype=object), "empty": np.zeros((0, 3)),
        "scalars": [np.float32(1.5), np.float64(2.5), np.int64(7), np.bool_(True), np.str_("s"), np.bytes_(b"b")],
        "python": (1, 2.5, 1 + 2j, "x", b"\x00\xff", b"", bytearray(b"ab"), None, True, {1, 2}, frozenset({3})),
        "nested": [[1], {"a": [2]}], "shared": [shared, shared], "dtype": np.dtype("<U7"),
    }
    got = safe_pickle.loads(pickle.dumps(value, protocol=protocol))
    assert _same(pickle.loads(pickle.dumps(value, protocol=protocol)), got)
    assert got["shared"][0] is got["shared"][1]


class Crafted:
    """Pickles as ``reduce`` verbatim: for hand-made streams numpy itself never writes."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


@pytest.mark.parametrize("crafted,refusal", [
    # an object array over raw bytes: the pointers are forged
    (Crafted(np.ndarray, ((1,), np.dtype("O"), b"A" * 8)), "a direct call of 'numpy.ndarray'"),
    # a structured dtype can hide an object field from numpy's own checks
    (np.zeros(1, [("a", "f8"), ("b", "O")]), "numpy dtype 'V16'"),
    (Crafted(list, ([1],), {"attr": 1}), "state for a list"),
    (Crafted(pickle.PickleBuffer, (b"x",)), "'pickle.PickleBuffer'"),
    (Crafted(np.ma.core._mareconstruct, (np.ma.MaskedArray, np.ndarray, (0,), "b")), "'numpy.ma.core._mareconstruct'"),
])
def test_numpy_callables_are_only_used_the_way_numpy_pickles_use_them(crafted, refusal):
    with pytest.raises(safe_pickle.Refused, match=f"refused to load {refusal}"):
        safe_pickle.loads(pickle.dumps(crafted, protocol=4))


def test_a_dtype_state_cannot_change_numpys_shared_dtypes():
    # copy=False would hand out numpy's own float64 descriptor for the next BUILD to turn big-endian
    crafted = Crafted(np.dtype, ("f8", False, False), (3, ">", None, None, None, -1, -1, 0))
    got = safe_pickle.loads(pickle.dumps(crafted, protocol=4))
    assert got.str == ">f8" and np.dtype("f8").str == "<f8" and np.dtype("f8").isnative


def test_truncated_or_corrupt_pickles_are_one_line(tiny_mosi, tmp_path):
    data = tiny_mosi.read_bytes()
    for cut in (20, 100_000, len(data) - 1):
        path = tmp_path / f"cut{cut}.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(DLFError, match=f"{path.name}: not a readable pickle .*truncated or not an MMSA"):
            safe_pickle.load_file(path)


def _object_rows(split, key, shorten):
    """Store ``key`` as an object array of per-sample arrays, sample i shortened by ``shorten(i)`` steps."""
    def mutate(d):
        rows = d[split][key]
        out = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            out[i] = row[: len(row) - shorten(i)]
        d[split][key] = out
    return mutate


def _list_rows(split, key, shorten):
    def mutate(d):
        d[split][key] = [row[: len(row) - shorten(i)].tolist() for i, row in enumerate(d[split][key])]
    return mutate


@pytest.mark.parametrize("mutate,split,key,detail", [
    (_object_rows("train", "audio", lambda i: i % 3), "train", "audio", "sample 0 has shape (50, 5), sample 1 (49, 5)"),
    (_list_rows("valid", "vision", lambda i: 2 * (i == 4)), "valid", "vision", "sample 4 (48, 20)"),
    (_list_rows("test", "text_bert", lambda i: 0), None, None, None),  # equal lengths: fine as nested lists
    (lambda d: d["test"].update(regression_labels=[[0.5]] * 5 + [[0.5, 1.0]] + [[0.0]] * 21), "test",
     "regression_labels", "sample 5 (2,)"),
])
def test_ragged_features_are_one_line_naming_file_split_and_key(tiny_mosi, mmsa_variant, mutate, split, key,
                                                                  detail):
    bad = mmsa_variant(tiny_mosi, mutate, "ragged.pkl")
    if split is None:
        assert load_dataset(str(bad)).splits["test"].text_bert.shape == (27, 3, 50)
        return
    with pytest.raises(DLFError) as err:
        load_dataset(str(bad))
    msg = str(err.value)
    assert msg.startswith(f"{bad}: split '{split}', key '{key}': ragged rows (") and detail in msg, msg
    assert "pad every sample to the same shape" in msg


def test_an_object_array_of_equal_rows_loads_like_the_stacked_array(tiny_mosi, mmsa_variant):
    rows = mmsa_variant(tiny_mosi, _object_rows("train", "audio", lambda i: 0), "rows.pkl")
    assert (load_dataset(str(rows)).splits["train"].audio == load_dataset(str(tiny_mosi)).splits["train"].audio).all()


def test_data_check_reports_a_ragged_array_in_one_line(capsys, monkeypatch, tiny_mosi, mmsa_variant):
    bad = mmsa_variant(tiny_mosi, _list_rows("valid", "vision", lambda i: i % 2), "ragged.pkl")
    code, _, err = run_main(capsys, monkeypatch, "data", "check", bad)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {bad}: split 'valid', key 'vision': ragged rows (sample 0 has shape (50, 20), "
                          "sample 1 (49, 20))")
