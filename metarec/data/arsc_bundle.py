"""The public ARSC training domains, shipped with metarec and checked before use.

metarec carries the ARSC files that are public (the meta-training domains of
``workspace.filtered.list``; the official target domains are not public) as package data: one
xz-compressed tar archive (``bundled/arsc.tar.xz``) and a committed manifest
(``bundled/arsc.manifest.json``) with the sha256 and size of the archive and of every file in it.

On first use the archive is checked against the manifest, unpacked into
``$METAREC_CACHE_DIR/arsc-<hash>`` (default ``~/.cache/metarec``) through a temporary directory
that is renamed into place only when every file matches the manifest, so a reader never sees a
half-written copy. Every process re-hashes the unpacked files once before handing the directory
out (~35 MB). A corrupt or partial archive or unpacked file is refused with one
:class:`~metarec.data.corpus.DataError` naming it. Any other ARSC copy (e.g. a full one with the
official targets) is used through ``family.data_dir`` or ``$METAREC_ARSC_DIR`` instead.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import tarfile
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from metarec.data.corpus import DataError
from metarec.data.readers import read_json
from metarec.log import get_logger

log = get_logger(__name__)

ARCHIVE = "arsc.tar.xz"
MANIFEST = "arsc.manifest.json"
#: Version of the manifest format (see :func:`make_bundle`).
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20
#: Unpacked directories already verified in this process.
_verified: set[Path] = set()


def bundle_dir() -> Path:
    """The folder of the package data holding the archive and its manifest."""
    return Path(str(resources.files("metarec.data") / "bundled"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: Optional[Path] = None) -> dict[str, Any]:
    """The manifest (archive and per-file sha256 and sizes); DataError naming it if unreadable."""
    path = path or bundle_dir() / MANIFEST
    if not path.is_file():
        raise DataError(f"bundled ARSC data: the manifest {path} is missing (a partial install or checkout?)")
    manifest = read_json(path, "bundled ARSC data: the manifest")
    if manifest.get("format") != MANIFEST_FORMAT or "archive" not in manifest or "files" not in manifest:
        raise DataError(f"bundled ARSC data: the manifest {path} is not a format-{MANIFEST_FORMAT} manifest "
                        "with 'archive' and 'files'")
    return manifest


def _check_file(path: Path, entry: dict[str, Any], what: str) -> None:
    """DataError naming ``path`` unless its size and sha256 are those of ``entry``."""
    if not path.is_file():
        raise DataError(f"bundled ARSC data: {what} {path} is missing (partial copy)")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise DataError(f"bundled ARSC data: {what} {path} has {size} bytes, the manifest says {entry['bytes']} "
                        "(corrupt or partial copy)")
    digest = _sha256(path)
    if digest != entry["sha256"]:
        raise DataError(f"bundled ARSC data: {what} {path} has sha256 {digest}, the manifest says "
                        f"{entry['sha256']} (corrupt copy)")


def _check_tree(root: Path, files: dict[str, dict[str, Any]]) -> None:
    for name in sorted(files):
        _check_file(root / name, files[name], "file")


def _unpack(archive: Path, files: dict[str, dict[str, Any]], dst: Path) -> None:
    """Writes the manifest's files from ``archive`` into ``dst``; DataError naming the archive."""
    try:
        with tarfile.open(archive, mode="r:xz") as tar:
            for member in tar:
                if member.name not in files:
                    raise DataError(f"bundled ARSC data: {archive} holds {member.name!r}, which the manifest "
                                    "does not list")
                src = tar.extractfile(member)
                if not member.isfile() or src is None:
                    raise DataError(f"bundled ARSC data: {archive} entry {member.name!r} is not a regular file")
                with src, (dst / member.name).open("wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except (tarfile.TarError, lzma.LZMAError, EOFError) as e:
        raise DataError(f"bundled ARSC data: {archive} cannot be unpacked ({type(e).__name__}: {e}); "
                        "the archive is corrupt or partial") from None


def bundled_arsc_dir(cache_dir: Optional[Path | str] = None) -> Path:
    """The public ARSC training domains, unpacked and verified; unpacked on first use.

    Args:
        cache_dir: where the unpacked copy lives; default ``$METAREC_CACHE_DIR`` or
            ``~/.cache/metarec``.

    Returns:
        A directory in the ARSC layout (``workspace.filtered.list``, ``<domain>.<t>.<split>``).

    Raises:
        DataError: naming the manifest, the archive or the unpacked file that is missing,
            corrupt or partial.
    """
    manifest = read_manifest()
    archive = bundle_dir() / ARCHIVE
    files: dict[str, dict[str, Any]] = manifest["files"]
    base = Path(cache_dir or os.environ.get("METAREC_CACHE_DIR") or Path.home() / ".cache" / "metarec").expanduser()
    target = base / f"arsc-{manifest['archive']['sha256'][:16]}"
    if target in _verified:
        return target
    if not target.is_dir():
        _check_file(archive, manifest["archive"], "archive")
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.", suffix=".tmp", dir=base))
        try:
            log.info("unpacking the bundled ARSC data (%d files) into %s", len(files), target)
            _unpack(archive, files, tmp)
            _check_tree(tmp, files)
            try:
                os.rename(tmp, target)  # atomic: readers see no directory or a complete one
            except OSError:
                if not target.is_dir():
                    raise
                # Another process unpacked it first; its copy is checked below.
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    _check_tree(target, files)
    _verified.add(target)
    return target


def make_bundle(src: Path | str, out: Optional[Path | str] = None) -> Path:
    """Writes the archive and manifest of every file of ARSC directory ``src`` (maintainers).

    Files are stored flat, sorted by name, without owner or time stamps, so the same ``src``
    gives the same archive.

    Returns:
        The manifest written (``out`` defaults to :func:`bundle_dir`).
    """
    src, out = Path(src), Path(out) if out else bundle_dir()
    names = sorted(p.name for p in src.iterdir() if p.is_file())
    out.mkdir(parents=True, exist_ok=True)
    archive = out / ARCHIVE
    with tarfile.open(archive, mode="w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
        for name in names:
            info = tar.gettarinfo(str(src / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o644
            with (src / name).open("rb") as f:
                tar.addfile(info, f)
    manifest = {
        "format": MANIFEST_FORMAT,
        "note": "Public ARSC training domains (Yu et al., NAACL 2018, arXiv:1805.07513), as unpacked by "
                "metarec.data.arsc_bundle; sha256 and bytes of the archive and of every file in it.",
        "archive": {"name": ARCHIVE, "sha256": _sha256(archive), "bytes": archive.stat().st_size},
        "files": {n: {"sha256": _sha256(src / n), "bytes": (src / n).stat().st_size} for n in names},
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path
