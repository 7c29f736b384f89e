"""The image's file system, laid out here without Docker, following the Dockerfile.

There is no Docker engine on our machines, so ``docker build`` cannot run in the tests. Instead the
steps of the Dockerfile are replayed: its ``COPY`` instructions (through ``.dockerignore``) into a
directory per stage, the build stage's ``RUN`` steps as the same pip commands offline (a wheel of
the copied sources, installed without dependencies: those come from this venv), and the final
stage's files, working directory and environment. A role started from that layout imports taskd
from the wheel, finds the migrations where the image has them and the demo handlers where
``--handlers examples.handlers`` looks (the working directory).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tests.deploy.dockerfile import ROOT, DockerIgnore, Stage, copy_args, exec_form, parse

# The build stage's RUN steps that this module replays; test_image.py checks they are still there.
BUILD_STEPS = (
    "pip wheel --no-deps --wheel-dir /wheels .",
    "pip install /wheels/taskd-*.whl",
    'cp -r /src/migrations "$pkg/migrations"',
)
VENV = "/opt/venv"


@dataclass
class Image:
    root: Path  # the final stage's file system
    site: Path  # the venv's site-packages inside it
    workdir: str
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]

    def local(self, container_path: str, mounts: dict[str, Path] | None = None) -> Path:
        """Where a path of the container is here; volume mounts hide what the image has there."""
        path = PurePosixPath(container_path)
        for mount, directory in sorted((mounts or {}).items(), key=lambda m: -len(m[0])):
            if path == PurePosixPath(mount) or PurePosixPath(mount) in path.parents:
                return directory / path.relative_to(mount)
        return self.root / path.relative_to("/")

    def program(self) -> list[str]:
        """The ENTRYPOINT as a command line here: the console script the wheel installed."""
        assert self.entrypoint == ["taskd"], self.entrypoint
        return [str(self.site / "bin" / "taskd")]

    def process_env(self, mounts: dict[str, Path], extra: dict[str, str]) -> dict[str, str]:
        """A container's environment: the image's ENV, then the orchestrator's, paths mapped.

        Nothing is inherited from the test runner's environment (a ``TASKD_*`` variable there
        would change the settings), except what the interpreter needs to run here.
        """
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        for key, value in {**self.env, **extra}.items():
            if key == "PATH":
                continue
            if value.startswith("/") and self._exists(value, mounts):
                value = str(self.local(value, mounts))
            env[key] = value
        env["PYTHONPATH"] = str(self.site)  # the venv's site-packages, on top of this venv's
        return env

    def _exists(self, value: str, mounts: dict[str, Path]) -> bool:
        return self.local(value, mounts).exists()


def _copy(sources: list[str], dest: str, workdir: str, root: Path, ignore: DockerIgnore) -> None:
    target = PurePosixPath(dest if dest.startswith("/") else f"{workdir}/{dest}")
    for source in sources:
        files = ignore.sent(source.rstrip("/"))
        assert files, f"COPY {source}: nothing of it reaches the build context (.dockerignore)"
        base = ROOT / source.rstrip("/")
        for rel in files:
            here = ROOT / rel
            if base.is_dir():
                out = root / target.relative_to("/") / here.relative_to(base)
            elif dest.endswith("/"):
                out = root / target.relative_to("/") / here.name
            else:
                out = root / target.relative_to("/")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(here, out)


def _replay_copies(stage: Stage, root: Path, ignore: DockerIgnore) -> str:
    workdir = "/"
    for keyword, rest in stage.instructions:
        if keyword == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
            (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY" and (copy := copy_args(rest)) is not None:
            _copy(*copy, workdir, root, ignore)
    return workdir


def _pip(*args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-index", "--disable-pip-version-check", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"pip {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"


def build(tmp: Path) -> Image:
    """Lay out the image under ``tmp`` as ``docker build`` would (see the module docstring)."""
    stages = parse()
    build_stage, final = stages[0], stages[-1]
    ignore = DockerIgnore()
    build_root, root = tmp / "build", tmp / "image"
    src_workdir = _replay_copies(build_stage, build_root, ignore)
    src = build_root / src_workdir.lstrip("/")
    wheels = build_root / "wheels"
    # --no-build-isolation: offline, with this venv's setuptools (the image build may download).
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(src))
    site = root / VENV.lstrip("/") / "site-packages"
    (wheel,) = wheels.glob("taskd-*.whl")
    _pip("install", "--no-deps", "--target", str(site), str(wheel))
    shutil.copytree(build_root / "src" / "migrations", site / "taskd" / "migrations")
    workdir = _replay_copies(final, root, ignore)
    return Image(
        root=root,
        site=site,
        workdir=workdir,
        env=final.env(),
        entrypoint=exec_form(final.last("ENTRYPOINT")),
        cmd=exec_form(final.last("CMD")),
    )
