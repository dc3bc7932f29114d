"""`make` installs exactly the lock file's versions: what the tests run on is what is locked."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_direct_dependency_with_hashes() -> None:
    import tomllib

    text = LOCK.read_text()
    pinned = {_canonical(name) for name, _ in PIN.findall(text)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in direct:
        name = _canonical(re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0])
        assert name in pinned, f"{requirement} is not in {LOCK.name}"
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1].strip())
    for block in blocks:
        if PIN.match(block):
            assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]}"


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="not running in the project's .venv (make installs the lock there)")
def test_installed_versions_equal_the_lock_file() -> None:
    pins = PIN.findall(LOCK.read_text())
    assert len(pins) > 20
    wrong = [f"{name}: installed {metadata.version(name)}, locked {version}"
             for name, version in pins if metadata.version(name) != version]
    assert not wrong, wrong
