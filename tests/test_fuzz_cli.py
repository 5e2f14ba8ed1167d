"""Fuzzing `dlf-ablate plan` and `run` with generated bad config values and malformed study files.

Every generated input is invalid by construction. The property, for both commands: exit code 2,
one output line ``error: ...`` (the same line from `plan` and `run`), no traceback, and nothing
written under DLF_HOME (no tracking store, so no run, no lock). Most examples call the CLI's own
``main()`` in this process; a few go through a real ``dlf-ablate`` subprocess.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import math
import string
import subprocess
import sys
import typing
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlf.study.catalogue import load_catalogue
from dlf.cli import main
from dlf.config import RunConfig
from dlf.domains import Domain
from dlf.study.file import STUDY_KEYS
from study_fixtures import TINY_SET, cli_env

pytestmark = pytest.mark.slow  # 10-30 s in all on a 2-core machine, mostly Typer building the CLI per call
FUZZ = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CATALOGUE = set(load_catalogue())
BOOL_WORDS = {"true", "false", "yes", "no", "on", "off"}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_mosi):
    """An empty DLF_HOME for the whole module (each example checks it stays empty) and a study folder."""
    root = tmp_path_factory.mktemp("fuzz")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLF_HOME", str(home))
        mp.setenv("DLF_CODE_VERSION", "fuzz")
        yield {"home": home, "dir": root, "data": str(tiny_mosi)}


def valid_study(data: str) -> dict:
    return {"name": "fuzz", "datasets": [data], "variants": ["full"], "seeds": [1], "set": dict(TINY_SET)}


# ---------------------------------------------------------------- values outside a field's domain
def _fields(cls=RunConfig, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], f"{prefix}{f.name}.")
        elif f.name != "seed":  # studies list seeds under `seeds:` (fuzzed below)
            yield f"{prefix}{f.name}", hints[f.name], f.metadata.get("domain")


FIELDS = list(_fields())
words = st.text(alphabet=string.ascii_letters + "_-", min_size=1, max_size=12)
containers = st.one_of(st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(words, st.integers(), max_size=2))
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def outside(dom: Domain, integer: bool) -> st.SearchStrategy:
    """Finite numbers just or far outside ``dom``, and fractions for an int field."""
    step = st.integers(1, 10**30) if integer else st.floats(1e-9, 1e300)
    options = []
    if dom.lo is not None:
        options.append(step.map(lambda d: dom.lo - d))
        if dom.lo_open:
            options.append(st.just(int(dom.lo) if integer else float(dom.lo)))
    if dom.hi is not None:
        options.append(step.map(lambda d: dom.hi + d))
        if dom.hi_open:
            options.append(st.just(float(dom.hi)))
    if integer:
        options.append(st.integers(-1000, 1000).map(lambda i: i + 0.5))
    return st.one_of(*options)


def wrong_type(ftype) -> st.SearchStrategy:
    if ftype in (int, float):
        return st.one_of(words, containers, st.booleans())
    if ftype is bool:
        return st.one_of(st.integers(), st.floats(allow_nan=False), words.filter(lambda w: w.lower() not in BOOL_WORDS),
                         containers)
    if typing.get_origin(ftype) is typing.Literal:
        return st.one_of(words.filter(lambda w: w not in typing.get_args(ftype)), st.integers(), containers)
    if typing.get_origin(ftype) is tuple:  # modalities
        not_a_modality = words.filter(lambda w: w.strip().lower() not in ("l", "a", "v"))
        return st.one_of(st.just([]), st.lists(not_a_modality, min_size=1, max_size=3), st.integers(),
                         not_a_modality.map(lambda w: "z" + w), st.dictionaries(words, words, max_size=1))
    return st.one_of(st.integers(), st.floats(allow_nan=False), st.lists(words, max_size=2), st.booleans())  # str


NUMERIC = [f for f in FIELDS if f[1] in (int, float)]


@st.composite
def config_cases(draw):
    """(path, value, route): one out-of-domain or mistyped value, by one of the three override routes."""
    kind = draw(st.sampled_from(["outside", "outside", "non-finite", "wrong type", "heads"]))
    path, ftype, dom = draw(st.sampled_from(FIELDS if kind == "wrong type" else NUMERIC))
    if kind == "outside":
        value = draw(outside(dom, ftype is int))
    elif kind == "non-finite":
        value = draw(NON_FINITE)
    elif kind == "wrong type":
        value = draw(wrong_type(ftype))
    else:  # in its domain, but not dividing the study's d_model of 10
        path, value = "model.n_heads", draw(st.integers(3, 1000).filter(lambda h: 10 % h))
    return path, value, draw(st.sampled_from(["set", "inline", "cli"]))


def place(study: dict, path: str, value, route: str) -> list[str]:
    if route == "set":
        study["set"][path] = value
        return []
    if route == "inline":
        study["variants"] = ["full", "fz"]
        study["variants_inline"] = {"fz": {"overrides": {path: value}}}
        return []
    text = yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()
    return ["--set", f"{path}={text}"]


# ---------------------------------------------------------------- malformed study files
def mutations() -> st.SearchStrategy:
    """One change that makes a valid study invalid (or a file that is no study at all)."""
    scalar = st.one_of(st.integers(), st.floats(), st.booleans(), words)
    bad_seed = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32), st.floats(), words, st.booleans(),
                         st.lists(st.integers(0, 9), max_size=2), st.none())
    return st.one_of(
        st.sampled_from(["name", "datasets", "variants", "seeds"]).map(lambda k: ("drop", k)),
        st.tuples(st.just("set_key"), st.sampled_from(["name"]),
                  st.one_of(st.integers(), st.lists(words, max_size=2), st.just(""), st.just("  "),
                            st.integers(101, 600).map(lambda n: "n" * n),
                            st.sampled_from(["\x00", "\t", "\x1b", "\x7f"]).map(lambda c: f"a{c}b"))),
        st.tuples(st.just("set_key"), st.just("seeds"),
                  st.one_of(st.lists(bad_seed, min_size=1, max_size=3).map(lambda s: [1, *s]),
                            scalar, st.just([]), st.just([7, 7]), st.dictionaries(words, st.integers(), max_size=2))),
        st.tuples(st.just("set_key"), st.sampled_from(["datasets", "variants"]),
                  st.one_of(st.integers(), st.floats(), st.just([]), st.lists(st.integers(), min_size=1, max_size=2),
                            st.dictionaries(words, words, min_size=1, max_size=2))),
        st.tuples(st.just("set_key"), st.just("variants"),
                  words.filter(lambda w: w not in CATALOGUE).map(lambda w: ["full", "zz" + w])),
        st.tuples(st.just("set_key"), st.just("datasets"),
                  st.sampled_from(["mosx", "synthetic-mosx", "missing.pkl", "/nowhere/x.pkl"]).map(lambda d: [d])),
        st.tuples(st.just("set_key"), st.sampled_from(["set", "variants_inline"]),
                  st.one_of(st.integers(), st.lists(st.integers(), min_size=1, max_size=2), words)),
        st.tuples(st.just("set_key"), st.just("description"), st.one_of(st.integers(1), st.lists(words, min_size=1))),
        st.tuples(st.just("set_key"), words.filter(lambda w: w not in STUDY_KEYS), scalar),  # unknown key
        st.tuples(st.just("top"), st.one_of(st.lists(scalar, max_size=3), scalar, st.none())),
        st.tuples(st.just("text"), st.text(max_size=80)),
    )


def study_text(data: str, mutation) -> tuple[str, str]:
    """(YAML text, what was changed)."""
    study = valid_study(data)
    kind = mutation[0]
    if kind == "drop":
        study.pop(mutation[1])
    elif kind == "set_key":
        study[mutation[1]] = mutation[2]
    elif kind == "top":
        return yaml.safe_dump(mutation[1]), repr(mutation)
    else:  # arbitrary text: a syntax error, a scalar, or a mapping without the required keys
        return mutation[1], repr(mutation)
    return yaml.safe_dump(study), repr(mutation)


# ---------------------------------------------------------------- running the CLI
def cli(*args: str) -> tuple[int, str]:
    """``dlf-ablate ARGS`` in this process: (exit code, stdout + stderr). An escaping exception fails the test."""
    out, enabled = io.StringIO(), gc.isenabled()
    try:
        with mock.patch.object(sys, "argv", ["dlf-ablate", *args]), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(out):
            main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        if enabled:  # main() pauses the collector for its imports; keep this test process as it was
            gc.enable()
    return code, out.getvalue()


def assert_refused(env, study: Path, extra: list[str], what: str) -> None:
    lines = {}
    for command in ("plan", "run"):
        code, output = cli(command, str(study), *extra)
        shown = [line for line in output.splitlines() if line.strip()]
        assert code == 2, f"{command} {what}: exit {code}\n{output}"
        assert len(shown) == 1 and shown[0].startswith("error: "), f"{command} {what}:\n{output}"
        assert "Traceback" not in output
        lines[command] = shown[0]
    assert lines["plan"] == lines["run"], what  # both commands refuse through the same checks
    assert not env["home"].exists() or not any(env["home"].iterdir()), f"{what}: something was written"


@settings(FUZZ, max_examples=40)  # the main property: a few more examples (0.1-0.3 s each)
@given(case=config_cases())
def test_out_of_domain_config_values_are_refused_before_anything_is_written(env, case):
    path, value, route = case
    study = valid_study(env["data"])
    extra = place(study, path, value, route)
    file = env["dir"] / "config_case.yaml"
    file.write_text(yaml.safe_dump(study))
    assert_refused(env, file, extra, f"{path}={value!r} via {route}")


@FUZZ
@given(mutation=mutations())
def test_malformed_study_files_are_refused_before_anything_is_written(env, mutation):
    text, what = study_text(env["data"], mutation)
    file = env["dir"] / "study_case.yaml"
    file.write_text(text)
    assert_refused(env, file, [], what)


@settings(FUZZ, max_examples=3)
@given(case=config_cases(), command=st.sampled_from(["plan", "run"]))
def test_the_installed_entry_point_refuses_in_one_line(env, case, command):
    """The real process: the console script's exit code and streams, with no test harness around main()."""
    path, value, route = case
    study = valid_study(env["data"])
    extra = place(study, path, value, route)
    file = env["dir"] / "subprocess_case.yaml"
    file.write_text(yaml.safe_dump(study))
    code = "import sys; from dlf.cli import main; sys.argv[0] = 'dlf-ablate'; main()"
    done = subprocess.run([sys.executable, "-c", code, command, str(file), *extra], env=cli_env(env["home"]),
                          capture_output=True, text=True, timeout=120)
    shown = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(shown) == 1 and shown[0].startswith("error: "), done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert not env["home"].exists() or not any(env["home"].iterdir())
