"""The vendored htmx files are exactly the ones VENDOR.md records, and the package ships them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "taskd" / "ui" / "static"
ROW = re.compile(r"^\| (\S+) \| (\S+) \| (\d+\.\d+\.\d+) \| \S+ \| ([0-9a-f]{64}) \|$", re.M)


def recorded() -> list[tuple[str, str, str, str]]:
    return ROW.findall((STATIC / "VENDOR.md").read_text())


def test_vendor_md_records_htmx_2_0_and_its_sse_extension() -> None:
    rows = {name: (package, version) for name, package, version, _ in recorded()}
    assert rows["htmx.min.js"][0] == "htmx.org"
    assert rows["htmx.min.js"][1].startswith("2.0.")
    assert rows["sse.js"][0] == "htmx-ext-sse"


def test_vendored_files_match_their_recorded_sha256() -> None:
    rows = recorded()
    assert len(rows) == 2
    for name, _, _, digest in rows:
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name


def test_the_htmx_file_is_the_recorded_version() -> None:
    version = next(v for n, _, v, _ in recorded() if n == "htmx.min.js")
    assert f'version:"{version}"' in (STATIC / "htmx.min.js").read_text()


def test_templates_and_static_files_are_package_data() -> None:
    text = (STATIC.parents[2] / "pyproject.toml").read_text()
    assert '"ui/templates/*.html"' in text and '"ui/static/*"' in text
