"""``dlf-ablate data synth`` / ``data check`` through the real entry point: exit codes and messages."""
import pickle
import subprocess
import sys

import numpy as np
import pytest

from dlf.cli import main
from dlf.data.synthetic import META_KEY

ENTRY = [sys.executable, "-c", "from dlf.cli import main; main()"]


def run_main(capsys, monkeypatch, *args):
    """Run ``dlf.cli.main`` in-process (as the console script does); (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return exited.value.code or 0, out, err


def assert_one_line_error(err, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("name,unaligned,scale", [
    ("synthetic-mosi", False, "0.02"), ("synthetic-mosi", True, "0.02"),
    ("synthetic-mosei", False, "0.002"), ("synthetic-mosei", True, "0.002"),
])
@pytest.mark.slow
def test_synth_then_check_passes(capsys, monkeypatch, tmp_path, name, unaligned, scale):
    out_file = tmp_path / "syn.pkl"
    flags = ["--unaligned"] if unaligned else []
    code, out, _ = run_main(capsys, monkeypatch, "data", "synth", name, "--out", out_file, "--scale", scale,
                            "--seed", "3", *flags)
    assert code == 0 and out_file.is_file() and "sha256" in out
    code, out, err = run_main(capsys, monkeypatch, "data", "check", out_file)
    assert code == 0 and err == ""
    corpus = name.split("-")[1].upper()
    assert f"synthetic-{corpus}" in out and ("unaligned" if unaligned else "(aligned)") in out
    for text in ("train", "valid", "test", "text_bert", "float32", "int64", "object", "valid\n"):
        assert text in out
    assert ("audio_lengths" in out) == unaligned
    assert "(26, 50, 768)" in out or "(33, 50, 768)" in out  # the train shape (MOSI 0.02 / MOSEI 0.002)


def test_check_prints_histogram_and_fingerprint(capsys, monkeypatch, tiny_mosi):
    import hashlib

    code, out, _ = run_main(capsys, monkeypatch, "data", "check", tiny_mosi)
    assert code == 0
    assert hashlib.sha256(tiny_mosi.read_bytes()).hexdigest() in out
    rows = {cells[0]: cells[1:] for cells in (line.strip("│┃ ").split() for line in out.splitlines())
            if len(cells) >= 8}  # table rows of >= 8 cells: the 7-class header and per-split counts
    rows = {k: [c for c in v if c not in "│┃"] for k, v in rows.items()}
    assert rows["split"] == ["-3", "-2", "-1", "0", "1", "2", "3"]
    with open(tiny_mosi, "rb") as fh:
        data = pickle.load(fh)
    for split in ("train", "valid", "test"):
        classes = np.round(np.clip(data[split]["regression_labels"], -3, 3)).astype(int)
        assert rows[split] == [str(int(np.sum(classes == c))) for c in range(-3, 4)]


def test_check_named_synthetic_dataset(capsys, monkeypatch):
    code, out, _ = run_main(capsys, monkeypatch, "data", "check", "synthetic-mosei", "--scale", "0.002")
    assert code == 0 and "synthetic-MOSEI" in out and "(33, 50, 74)" in out


def test_synth_refuses_to_overwrite_and_unknown_names(capsys, monkeypatch, tiny_mosi, tmp_path):
    before = tiny_mosi.read_bytes()
    code, _, err = run_main(capsys, monkeypatch, "data", "synth", "synthetic-mosi", "--out", tiny_mosi)
    assert code == 2 and tiny_mosi.read_bytes() == before
    assert_one_line_error(err, str(tiny_mosi), "--force")
    code, _, err = run_main(capsys, monkeypatch, "data", "synth", "iemocap", "--out", tmp_path / "x.pkl")
    assert code == 2
    assert_one_line_error(err, "iemocap", "synthetic-mosi")
    code, _, err = run_main(capsys, monkeypatch, "data", "synth", "synthetic-mosi", "--out", tmp_path / "y.pkl",
                            "--scale", "0")
    assert code == 2 and not (tmp_path / "y.pkl").exists()
    assert_one_line_error(err, "scale")


def _drop_key(split, key):
    def mutate(d):
        del d[split][key]
    return mutate


def _poke(split, key, index, value):
    def mutate(d):
        arr = d[split][key].copy()
        arr[index] = value
        d[split][key] = arr
    return mutate


def _truncate(split, key, n):
    def mutate(d):
        d[split][key] = d[split][key][:n]
    return mutate


def _drop_split(d):
    del d["valid"]


CLI_BAD_CASES = [
    (_drop_split, ["split 'valid'"]),
    (_drop_key("test", "text_bert"), ["split 'test'", "key 'text_bert'", "missing"]),
    (_truncate("train", "audio", 10), ["split 'train'", "key 'audio'", "10 samples"]),
    (_poke("valid", "vision", (0, 0, 0), np.nan), ["split 'valid'", "key 'vision'", "NaN"]),
    (_poke("train", "regression_labels", 0, -3.6), ["split 'train'", "key 'regression_labels'", "outside [-3, 3]"]),
    (lambda d: d["train"].update(text=d["train"]["text"][:, :, 0]), ["split 'train'", "key 'text'", "rank 2"]),
]


@pytest.mark.parametrize("mutate,needles", CLI_BAD_CASES)
def test_check_bad_files_exit_2_with_one_line(capsys, monkeypatch, tiny_mosi, mmsa_variant, mutate, needles):
    bad = mmsa_variant(tiny_mosi, mutate, "bad.pkl")
    code, out, err = run_main(capsys, monkeypatch, "data", "check", bad)
    assert code == 2
    assert_one_line_error(err, str(bad), *needles)


def test_check_missing_real_dataset_says_where_and_what_instead(capsys, monkeypatch, tmp_path):
    code, _, err = run_main(capsys, monkeypatch, "data", "check", "mosi", "--data-root", tmp_path)
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "MOSI" / "Processed" / "aligned_50.pkl"), "synthetic-mosi")


@pytest.mark.slow
def test_console_script_prints_no_traceback_for_a_truncated_file(tiny_mosi, tmp_path):
    bad = tmp_path / "truncated.pkl"
    bad.write_bytes(tiny_mosi.read_bytes()[:20000])
    proc = subprocess.run([*ENTRY, "data", "check", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, str(bad), "not a readable pickle")
    assert proc.stdout == ""


@pytest.mark.slow
def test_console_script_check_passes_on_unaligned(tiny_mosi_unaligned):
    proc = subprocess.run([*ENTRY, "data", "check", str(tiny_mosi_unaligned)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "synthetic-MOSI" in proc.stdout and "(51, 375, 5)" in proc.stdout and "Traceback" not in proc.stderr


def test_help_texts(capsys, monkeypatch):
    for args in (["data", "--help"], ["data", "synth", "--help"], ["data", "check", "--help"]):
        code, out, _ = run_main(capsys, monkeypatch, *args)
        assert code == 0
    assert "--unaligned" in out and "--data-root" in out and "histogram" in out


def test_metadata_free_real_layout_is_captioned_as_real(capsys, monkeypatch, tiny_mosei, mmsa_variant):
    plain = mmsa_variant(tiny_mosei, lambda d: d.pop(META_KEY) and None, "aligned_50.pkl")
    code, out, _ = run_main(capsys, monkeypatch, "data", "check", plain)
    assert code == 0 and "MOSEI (aligned)" in out and "synthetic" not in out.split("\n")[0]
