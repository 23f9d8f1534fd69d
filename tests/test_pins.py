"""The pins of pyproject.toml, environment.yml (conda) and binder/requirements.txt (Binder) agree.

Each file lists every dependency of xailib (pyproject's ``dependencies`` and its ``dev`` extra) with one exact
version; conda names PyTorch ``pytorch``. A package pinned in one file and missing or pinned differently in another
fails, with the file and both versions in the message.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}          # conda-forge's name -> PyPI's
NOT_PACKAGES = {"python", "pip"}            # environment.yml lines that are not xailib's dependencies
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pip_pins(lines, where: str) -> dict[str, str]:
    pins = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):            # comments, --extra-index-url
            continue
        m = PIN.match(line)
        assert m, f"{where}: {line!r} is not pinned as name==version"
        pins[canonical(m.group(1))] = m.group(2)
    return pins


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return parse_pip_pins([*project["dependencies"], *project["optional-dependencies"]["dev"]], "pyproject.toml")


def conda_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pins.update(parse_pip_pins(dep.get("pip", []), f"{path.name} (pip)"))
            continue
        name, _, rest = dep.partition("=")
        if name in NOT_PACKAGES:
            continue
        version = rest.split("=")[0]
        assert version, f"{path.name}: {dep!r} is not pinned (name=version)"
        pins[canonical(CONDA_NAMES.get(name, name))] = version
    return pins


def binder_pins() -> dict[str, str]:
    return parse_pip_pins((ROOT / "binder" / "requirements.txt").read_text().splitlines(), "binder/requirements.txt")


def test_pyproject_pins_every_dependency():
    pins = pyproject_pins()
    assert {"torch", "torchvision", "captum", "grad-cam", "zennit", "scikit-image", "distributed", "voila",
            "selenium"} <= set(pins)


@pytest.mark.parametrize("name, read", [("environment.yml", lambda: conda_pins(ROOT / "environment.yml")),
                                        ("binder/requirements.txt", binder_pins)])
def test_pins_agree_with_pyproject(name, read):
    ours, theirs = pyproject_pins(), read()
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    differ = {k: (ours[k], theirs[k]) for k in sorted(set(ours) & set(theirs)) if ours[k] != theirs[k]}
    assert not missing, f"{name} lacks {missing}, pinned in pyproject.toml"
    assert not extra, f"{name} pins {extra}, which pyproject.toml does not list"
    assert not differ, f"{name} pins differ from pyproject.toml (pyproject, {name}): {differ}"


def test_binder_builds_from_pip_with_cpu_torch():
    """repo2docker uses binder/environment.yml over requirements.txt when both exist: there must be none."""
    binder = ROOT / "binder"
    assert not (binder / "environment.yml").exists() and not (binder / "environment.yaml").exists()
    lines = (binder / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert {"postBuild", "apt.txt", "runtime.txt"} <= {p.name for p in binder.iterdir()}


def test_the_checker_catches_a_mismatch(tmp_path):
    env = tmp_path / "environment.yml"
    env.write_text("dependencies:\n  - python=3.11\n  - pytorch=2.13.0\n  - pip:\n      - zennit==0.5.1\n")
    assert conda_pins(env) == {"torch": "2.13.0", "zennit": "0.5.1"}
    with pytest.raises(AssertionError, match="not pinned"):
        parse_pip_pins(["numpy>=2"], "x")
