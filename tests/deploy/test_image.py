"""The Dockerfile: its base, user, entrypoint and files, and the image it lays out (replayed here
without Docker, tests/deploy/image.py): taskd from the wheel, migrations where `taskd migrate`
finds them, the demo handlers where `--handlers` looks."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from tests.deploy.dockerfile import DockerIgnore, exec_form, parse
from tests.deploy.image import BUILD_STEPS, Image
from tests.deploy.run import Launcher, parse_args, roles
from tests.deploy.stacks import ROOT, Container

COMPILERS = ("gcc", "g++", "clang", "build-essential", "cc ", "make ", "rustc", "cargo")


def in_image(image: Image, code: str) -> str:
    env = image.process_env({}, {})
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=image.local(image.workdir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_multi_stage_on_python_311_slim_running_as_a_numeric_non_root_user() -> None:
    stages = parse()
    assert len(stages) >= 2
    for stage in stages:
        assert stage.base.startswith("python:3.11-slim"), stage.base
    final = stages[-1]
    uid, _, gid = final.last("USER").partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "runAsNonRoot needs a numeric UID"
    for run in final.all("RUN"):
        assert not any(word in f"{run} " for word in COMPILERS), run
        assert "apt-get install" not in run, run


def test_entrypoint_is_taskd_and_cmd_parses_as_taskd_arguments() -> None:
    final = parse()[-1]
    assert exec_form(final.last("ENTRYPOINT")) == ["taskd"]
    cmd = exec_form(final.last("CMD"))
    parse_args(cmd)  # taskd's own parser; SystemExit fails the test
    assert sorted(roles(cmd)) == ["api", "notifier", "promoter", "worker"]


def test_the_image_exposes_the_ports_its_config_listens_on(image: Image, tmp_path: Path) -> None:
    exposed = {int(p) for rest in parse()[-1].all("EXPOSE") for p in rest.split()}
    settings = Launcher(image, tmp_path).settings(Container("image", image.cmd, {}))
    assert {settings.api.port, settings.ops.port} == exposed
    assert settings.api.host == settings.ops.host == "0.0.0.0"


def test_the_build_stage_runs_the_steps_the_tests_replay() -> None:
    text = " ".join(parse()[0].all("RUN"))
    for step in BUILD_STEPS:
        assert step in text, f"Dockerfile no longer runs {step!r}: update tests/deploy/image.py"


def test_dockerignore_keeps_the_context_small_and_sends_every_copied_file() -> None:
    ignore = DockerIgnore()
    for stage in parse():
        for sources, _ in stage.copies():
            for source in sources:
                assert ignore.sent(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"
    for path in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "taskd/__pycache__/x.pyc"):
        assert ignore.excluded(path), path


def test_the_image_runs_taskd_from_its_wheel_with_the_migrations_inside(image: Image) -> None:
    assert Path(in_image(image, "import taskd; print(taskd.__file__)")).is_relative_to(image.site)
    found = in_image(
        image,
        "from taskd.store.migrate import default_directory; print(default_directory())",
    )
    assert Path(found) == image.site / "taskd" / "migrations"
    shipped = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert sorted(p.name for p in Path(found).glob("*.sql")) == shipped
    (record,) = image.site.glob("taskd-*.dist-info/entry_points.txt")
    scripts = configparser.ConfigParser()
    scripts.read(record)
    assert scripts["console_scripts"]["taskd"] == "taskd.cli:main"


def test_the_demo_handlers_import_from_the_working_directory(image: Image) -> None:
    names = in_image(
        image,
        "from taskd.registry import load_handlers\n"
        "print(load_handlers(['examples.handlers']).names())",
    )
    assert "demo.echo" in names
