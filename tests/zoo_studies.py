"""The zoo's built-in studies restricted to what this checkout has.

table1 and tune list every baseline by name, quickstart-table1 every baseline with a features text
mode; a baseline family lands as its own package and catalogue entry, so a checkout may hold only
some of them. Tests run the studies' own files, minus the variants whose catalogue entry is not
there yet.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from dlf.report.paper import BASELINE_GROUP
from dlf.resources import resource_dir
from dlf.study.catalogue import load_catalogue


def baselines() -> list[str]:
    """The catalogue's baseline variants (one per registered baseline family), in table order."""
    cat = load_catalogue()
    names = [n for n, v in cat.items() if v.group == BASELINE_GROUP]
    return sorted(names, key=lambda n: cat[n].order)


def has_features_mode(variant: str) -> bool:
    """Whether a baseline runs on the precomputed text features (MAG-BERT's gate sits inside BERT: no)."""
    from dlf.config import build_config
    from dlf.errors import DLFError

    try:
        build_config("mosi", (variant, load_catalogue()[variant].overrides), ("probe", {"model.text_encoder": "features"}))
    except DLFError:
        return False
    return True


def bert_baselines() -> list[str]:
    """The baselines that fine-tune BERT by default (their papers' setting)."""
    from dlf.config import build_config

    cat = load_catalogue()
    return [n for n in baselines() if build_config("mosi", (n, cat[n].overrides)).model.text_encoder == "bert"]


def raw_study(name: str) -> dict:
    return yaml.safe_load((resource_dir("studies") / f"{name}.yaml").read_text())


def available_copy(name: str, folder: Path, **changes) -> tuple[Path, list[str]]:
    """Built-in study ``name`` written to ``folder`` with only the variants this checkout defines (the
    catalogue's and the study's inline ones), top-level keys replaced by ``changes``: (path, dropped)."""
    body = raw_study(name)
    known = set(load_catalogue()) | set(body.get("variants_inline") or {})
    dropped = [v for v in body["variants"] if v not in known]
    body["variants"] = [v for v in body["variants"] if v in known]
    body.update(changes)
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path, dropped
