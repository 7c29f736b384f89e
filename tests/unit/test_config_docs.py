"""config/dev.yaml and config/prod.example.yaml document every setting: uncommenting every
``# key: value`` line gives a valid file that sets each one, and a commented value is the default
(so a new setting, or a changed default, fails here until the files say so)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskd.config.settings import Settings
from taskd.config.snapshot import Layer, compose, leaves, tree

CONFIG = Path(__file__).resolve().parents[2] / "config"
_KEY = re.compile(r"^(\s*)# (\s*[a-z_]+:(?: .*)?)$")


def uncomment(text: str) -> str:
    return "\n".join(_KEY.sub(r"\1\2", line) for line in text.splitlines()) + "\n"


def load(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", ["dev.yaml", "prod.example.yaml"])
def test_every_setting_is_documented_with_its_default(name: str) -> None:
    text = (CONFIG / name).read_text()
    active, full = load(text), load(uncomment(text))
    compose([Layer("yaml", active)])  # the file as shipped is valid
    compose([Layer("yaml", full)])  # and so is every documented default
    documented = leaves(full)
    defaults = leaves(tree(Settings()))
    assert sorted(set(defaults) - set(documented)) == [], f"{name} lacks these settings"
    assert sorted(set(documented) - set(defaults)) == [], f"{name} names unknown settings"
    set_here = leaves(active)
    wrong = {
        path: (value, defaults[path])
        for path, value in documented.items()
        if path not in set_here and value != defaults[path]
    }
    assert wrong == {}, f"{name}: commented values that are not the default (shown, default)"
