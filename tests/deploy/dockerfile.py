"""Read the Dockerfile and .dockerignore the way ``docker build`` does, enough to check them."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def copies(self) -> list[tuple[list[str], str]]:
        """``COPY`` instructions from the build context (not ``--from``): (sources, destination)."""
        found = (copy_args(rest) for rest in self.all("COPY"))
        return [c for c in found if c is not None]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for rest in self.all("ENV"):
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                values[key] = value
        return values


def copy_args(rest: str) -> tuple[list[str], str] | None:
    """(sources, destination) of a ``COPY`` from the build context; None for ``COPY --from``."""
    words = shlex.split(rest)
    if any(w.startswith("--from") for w in words):
        return None
    words = [w for w in words if not w.startswith("--")]
    return words[:-1], words[-1]


def parse(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    """Stages in order, each with its (KEYWORD, rest) instructions; continuations joined.

    ``ARG`` defaults declared before the first ``FROM`` are substituted into the base images.
    """
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    args: dict[str, str] = {}
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.strip().partition("=")
            args[name] = default
        elif keyword == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert match, line
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), match[1])
            stages.append(Stage(base, match[2]))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def exec_form(rest: str) -> list[str]:
    """The JSON (exec) form of ENTRYPOINT/CMD; the shell form would make signals miss PID 1."""
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


class DockerIgnore:
    """``.dockerignore`` matching: patterns in order, the last match wins, ``!`` re-includes."""

    def __init__(self, path: Path = ROOT / ".dockerignore") -> None:
        self.rules: list[tuple[bool, str]] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:] if negate else line
            self.rules.append((negate, pattern.strip("/")))

    def _matches(self, pattern: str, rel: str) -> bool:
        # A pattern matching a directory matches everything below it.
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(
                prefix.rsplit("/", 1)[-1], pattern[3:]
            ):
                return True
        return False

    def excluded(self, rel: str) -> bool:
        out = False
        for negate, pattern in self.rules:
            if self._matches(pattern, rel):
                out = not negate
        return out

    def sent(self, source: str) -> list[str]:
        """The files under ``source`` (relative to the repo) that reach the build context."""
        path = ROOT / source
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        rels = [p.relative_to(ROOT).as_posix() for p in files]
        return [r for r in rels if not self.excluded(r)]
