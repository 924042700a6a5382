"""The private APIs of other packages (`larq_meta._compat`): the installed versions are the
tested ones, and any other version fails loudly, naming the module, the package and the range."""

import importlib.metadata

import pytest

from larq_meta import _compat


@pytest.mark.parametrize("distribution", sorted(_compat.TESTED_VERSIONS))
def test_installed_versions_are_in_the_tested_range(distribution):
    assert _compat.check_version(distribution) == importlib.metadata.version(distribution)


def fake_version(monkeypatch, distribution, fake):
    real = importlib.metadata.version

    def version(name):
        return fake if name == distribution else real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


@pytest.mark.parametrize(
    "distribution, fake, span",
    [
        ("keras-tuner", "1.5.0", ">=1.4.8,<1.5"),
        ("keras-tuner", "1.4.7", ">=1.4.8,<1.5"),
        ("larq-compute-engine", "0.17.0", ">=0.16,<0.17"),
        ("larq-compute-engine", "0.15.2", ">=0.16,<0.17"),
    ],
)
def test_a_version_outside_the_tested_range_is_refused(monkeypatch, distribution, fake, span):
    fake_version(monkeypatch, distribution, fake)
    with pytest.raises(ImportError) as error:
        _compat.check_version(distribution)
    message = str(error.value)
    assert "larq_meta._compat" in message and f"{distribution} {fake}" in message
    assert span in message


def test_keras_tuner_internals_check_the_version(monkeypatch):
    pytest.importorskip("keras_tuner")
    internals = _compat.keras_tuner_internals()
    assert internals.TrialStatus.COMPLETED == "COMPLETED"
    fake_version(monkeypatch, "keras-tuner", "1.5.1")
    _compat.keras_tuner_internals.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"larq_meta\._compat: keras-tuner 1\.5\.1 .*<1\.5"):
            _compat.keras_tuner_internals()
    finally:
        _compat.keras_tuner_internals.cache_clear()


def test_a_missing_package_is_named(monkeypatch):
    def version(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(ImportError, match="keras-tuner"):
        _compat.check_version("keras-tuner")
