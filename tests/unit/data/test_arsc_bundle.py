"""The ARSC training domains shipped with metarec: checked against the manifest, unpacked once,
atomically; a corrupt or partial copy is refused with one error naming the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from metarec.data import arsc_bundle
from metarec.data.arsc import BUNDLED, ENV_DIR, resolve_data_dir
from metarec.data.arsc_bundle import ARCHIVE, MANIFEST, bundled_arsc_dir, make_bundle, read_manifest
from metarec.data.corpus import DataError
from tests.unit.data.test_arsc import make_arsc_dir


def test_bundled_copy_is_the_manifest_and_the_default_data_dir(arsc_dir, monkeypatch):
    manifest = read_manifest()
    assert sorted(p.name for p in arsc_dir.iterdir()) == sorted(manifest["files"])
    assert "workspace.filtered.list" in manifest["files"] and len(manifest["files"]) > 150
    # No data_dir and no $METAREC_ARSC_DIR: the bundled copy; "bundled" names it explicitly.
    monkeypatch.delenv(ENV_DIR, raising=False)
    assert resolve_data_dir(None) == arsc_dir
    assert resolve_data_dir(BUNDLED) == arsc_dir
    # Any other copy still wins when named.
    other = make_arsc_dir(arsc_dir.parent / "other-arsc")
    monkeypatch.setenv(ENV_DIR, str(other))
    assert resolve_data_dir(None) == other
    assert resolve_data_dir(str(other)) == other


@pytest.fixture
def small_bundle(tmp_path, monkeypatch) -> Path:
    """A bundle of a tiny ARSC directory standing in for the package data."""
    out = tmp_path / "bundled"
    make_bundle(make_arsc_dir(tmp_path / "src"), out)
    monkeypatch.setattr(arsc_bundle, "bundle_dir", lambda: out)
    return out


def _no_copy(cache: Path) -> bool:
    return not cache.exists() or not any(cache.iterdir())


def test_small_bundle_unpacks_once_and_is_identical(small_bundle, tmp_path):
    cache = tmp_path / "cache"
    got = bundled_arsc_dir(cache)
    src = tmp_path / "src"
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in src.iterdir())
    assert all((got / p.name).read_bytes() == p.read_bytes() for p in src.iterdir())
    assert [p.name for p in cache.iterdir()] == [got.name]     # no temporary directory left
    assert bundled_arsc_dir(cache) == got


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupt_or_partial_archive_is_refused_naming_it(small_bundle, tmp_path, damage):
    archive = small_bundle / ARCHIVE
    data = bytearray(archive.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    archive.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=rf"archive {re.escape(str(archive))} has .*corrupt"):
        bundled_arsc_dir(cache)
    assert _no_copy(cache)  # nothing half-written


def test_a_file_that_differs_from_the_manifest_is_refused_naming_it(small_bundle, tmp_path):
    manifest = json.loads((small_bundle / MANIFEST).read_text())
    manifest["files"]["baby.t2.test"]["sha256"] = "0" * 64
    (small_bundle / MANIFEST).write_text(json.dumps(manifest))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"file .*baby\.t2\.test has sha256 [0-9a-f]{64}, the manifest says 0{64}"):
        bundled_arsc_dir(cache)
    assert _no_copy(cache)


def test_a_damaged_unpacked_copy_is_refused_naming_the_file(small_bundle, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    got = bundled_arsc_dir(cache)
    monkeypatch.setattr(arsc_bundle, "_verified", set())  # a new process
    path = got / "apparel.t2.train"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match=rf"file {re.escape(str(path))} has \d+ bytes, the manifest says \d+ \(corrupt or partial"):
        bundled_arsc_dir(cache)


def test_a_missing_or_broken_manifest_is_refused_naming_it(small_bundle, tmp_path):
    path = small_bundle / MANIFEST
    path.write_text("{\n  oops")
    with pytest.raises(DataError, match=rf"manifest {re.escape(str(path))}, line 2: not valid JSON"):
        bundled_arsc_dir(tmp_path / "cache")
    path.unlink()
    with pytest.raises(DataError, match=rf"manifest {re.escape(str(path))} is missing"):
        bundled_arsc_dir(tmp_path / "cache")
