"""Packaging metadata agrees with itself and with what CI tests.

The slow half (build the sdist and wheel, install the wheel outside the checkout, run the
command line and the tests from the sdist) is `scripts/package_check.sh`, run by `.ci/run`;
these checks are the fast half: one version, the licence text, and support claims that CI
actually exercises.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import larq_meta

ROOT = Path(__file__).resolve().parents[1]
# SHA-256 of the Apache License 2.0 text as apache.org publishes it (LICENSE-2.0.txt).
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"

needs_checkout = pytest.mark.skipif(
    not (ROOT / "pyproject.toml").is_file(), reason="needs the source tree (pyproject.toml)"
)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_normalize(name)] = Version(version)
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _claimed_pythons(requires_python: str) -> set[str]:
    spec = SpecifierSet(requires_python)
    return {f"3.{minor}" for minor in range(8, 20) if f"3.{minor}.0" in spec}


@needs_checkout
def test_one_version_everywhere():
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "larq_meta._version.__version__"
    Version(larq_meta.__version__)  # a valid PEP 440 version
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(r"^version: (\S+)$", citation, re.M).group(1) == larq_meta.__version__
    installed = importlib.metadata.version("larq-meta")
    assert installed == larq_meta.__version__, (
        f"installed metadata says {installed}, larq_meta/_version.py says "
        f"{larq_meta.__version__}: reinstall (bash scripts/setup.sh)"
    )


@needs_checkout
def test_license_is_the_full_apache_text():
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]


@needs_checkout
def test_citation_names_the_paper():
    citation = (ROOT / "CITATION.cff").read_text()
    assert "doi: 10.1038/s41467-021-22768-y" in citation
    for author in ("Laborieux", "Ernoult", "Hirtzlin", "Querlioz"):
        assert f"family-names: {author}" in citation


@needs_checkout
def test_claimed_pythons_are_the_tested_ones():
    project = _pyproject()["project"]
    claimed = _claimed_pythons(project["requires-python"])
    assert claimed == {"3.11", "3.12"}, f"requires-python admits {sorted(claimed)}"
    classifiers = {
        c.rsplit(" ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert classifiers == claimed
    # 3.11 runs the full suite (setup.sh's default), 3.12 the smoke subset (matrix_check.sh)
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "PYTHON=${PYTHON:-python3.11}" in setup
    assert "(3, 11) <= sys.version_info[:2] <= (3, 12)" in setup
    matrix = (ROOT / "scripts" / "matrix_check.sh").read_text()
    assert "sys.version_info[:2] != (3, 12)" in matrix
    ci = ROOT / ".ci" / "run"  # not in the sdist
    if ci.is_file():
        assert "bash scripts/matrix_check.sh" in ci.read_text()


@needs_checkout
def test_pins_satisfy_every_declared_range():
    project = _pyproject()["project"]
    pins = _pins()
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    checked = 0
    for req in requirements:
        name = _normalize(req.name)
        if name == "larq-meta":
            continue
        assert name in pins, f"{req.name} is a dependency but has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req}"
        )
        checked += 1
    assert checked >= 15


@needs_checkout
def test_tensorflow_range_is_the_tested_release():
    """CI installs one TensorFlow (the pin): the declared range admits only its minor."""
    pins = _pins()
    project = _pyproject()["project"]
    for name in ("tensorflow", "tf-keras"):
        (req,) = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == name]
        pinned = pins[name]
        assert req.specifier.contains(pinned)
        for other in ("2.15.0", "2.20.0", "2.22.0"):
            assert not req.specifier.contains(other), f"{req} admits untested {other}"
    # larq 0.14 requires numpy < 2; TensorFlow 2.21 requires numpy >= 1.26
    (numpy,) = [Requirement(r) for r in project["dependencies"] if r.startswith("numpy")]
    assert not numpy.specifier.contains("2.0.0") and pins["numpy"] < Version("2")


@needs_checkout
def test_extras_for_tensorboard_docs_and_dev():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert [Requirement(r).name for r in extras["tensorboard"]] == ["tensorboard"]
    assert {Requirement(r).name for r in extras["docs"]} == {
        "mkdocs", "mkdocs-material", "mkdocstrings"
    }
    assert "python" in Requirement(
        next(r for r in extras["docs"] if r.startswith("mkdocstrings"))
    ).extras
    dev = [Requirement(r) for r in extras["dev"]]
    (self_req,) = [r for r in dev if r.name == "larq-meta"]
    assert {"examples", "tensorboard", "docs"} <= self_req.extras
    assert {"pytest", "build"} <= {r.name for r in dev}


@needs_checkout
def test_sdist_manifest_ships_what_the_tests_need():
    manifest = (ROOT / "MANIFEST.in").read_text().splitlines()
    for line in ("graft tests", "graft examples"):
        assert line in manifest
    include = next(line for line in manifest if line.startswith("include "))
    for name in ("LICENSE", "CITATION.cff", "setup.cfg", "constraints.txt"):
        assert name in include.split()
    find = _pyproject()["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["larq_meta*"]  # the wheel: the package only
