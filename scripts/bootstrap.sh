#!/usr/bin/env bash
# Creates (once) the project-local virtualenv .venv with everything metarec needs.
#
# Why this is a script and not just `pip install -e .`:
#  * learn2learn 0.2.0 is an sdist whose generated C files predate Python 3.11
#    (learnables/learn2learn#413). We re-cythonize its three .pyx files with Cython 3
#    and build it without build isolation.
#  * learn2learn imports torchvision, gym and qpth at import time but also asks for gsutil,
#    which we never need: it is installed with --no-deps and its real needs are listed below.
#  * torch and torchvision must be a pair that imports together (2.14.1 / 0.29.1 here).
# The stamp file records the hash of this script + pyproject.toml: editing either rebuilds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${METAREC_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.metarec-bootstrap"
want="$(cat "$root/scripts/bootstrap.sh" "$root/pyproject.toml" | sha256sum | cut -c1-16)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

log() { printf '[bootstrap] %s\n' "$*" >&2; }
log "setting up $venv (first use; a few minutes)"
# Whether the torch pair must be installed is decided once, here, for the disk check and the install below.
need_torch=0
"$venv/bin/python" -c "import torch, torchvision" >/dev/null 2>&1 || need_torch=1
# A finished .venv takes about 6.7 GB (PyPI's Linux torch is a CUDA build). Say so up front, with the
# numbers, instead of letting pip fail half-way with "[Errno 28] No space left on device".
need_gb="${METAREC_MIN_FREE_GB:-8}"
if (( need_torch )); then
  probe="$venv"; while [[ ! -d "$probe" ]]; do probe="$(dirname "$probe")"; done
  free_kb="$(df -Pk "$probe" | awk 'NR==2 {print $4}')"
  if [[ -n "$free_kb" ]] && (( free_kb < need_gb * 1024 * 1024 )); then
    log "not enough disk for $venv: $((free_kb / 1024 / 1024)) GB free on the filesystem of $probe, about $need_gb GB needed"
    log "free some space, or set METAREC_VENV to a directory on a larger disk (METAREC_MIN_FREE_GB=$need_gb sets the check)"
    exit 1
  fi
fi
if [[ ! -x "$venv/bin/python" ]]; then
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# pip's output is shown only when it fails (this machine's pip config adds many harmless warnings).
pipq() {
  local out
  out="$(mktemp)"
  if ! "${pip[@]}" "$@" >"$out" 2>&1; then
    grep -v "^WARNING: Location 'file" "$out" >&2
    rm -f "$out"
    log "pip $* failed"
    return 1
  fi
  rm -f "$out"
}
pipq install --upgrade pip setuptools wheel

TORCH_SPEC="${METAREC_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
if (( need_torch )); then
  log "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  pipq install $TORCH_SPEC
fi

if ! "$venv/bin/python" -c "import learn2learn" >/dev/null 2>&1; then
  log "building learn2learn 0.2.0 from its sdist with Cython 3"
  pipq install "cython>=3,<4" numpy scipy requests tqdm "gym>=0.14" "qpth>=0.0.15"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  pipq download --no-deps --no-binary :all: learn2learn==0.2.0 -d "$work"
  tar -xzf "$work"/learn2learn-0.2.0.tar.gz -C "$work"
  src="$work/learn2learn-0.2.0"
  for pyx in "$src"/learn2learn/data/*.pyx; do
    "$venv/bin/cython" -3 --directive embedsignature=True "$pyx" -o "${pyx%.pyx}.c"
  done
  pipq install --no-build-isolation --no-deps "$src"
fi

log "installing metarec and its dependencies"
pipq install -e "$root[dev]"
# The embedded ml-100k data of the cold-start family: the files the recbole wheel ships
# (recbole/dataset_example/ml-100k). --no-deps: metarec only reads those files, never imports recbole.
pipq install --no-deps "recbole==1.2.1"
# The setfit algorithm (metarec/algorithms/setfit.py). --no-deps: every `datasets` release that
# setfit needs either wants pyarrow >= 24 (pinned < 22 above) or caps huggingface_hub below the
# version transformers brought; setfit only builds an in-memory Dataset, which works with both.
pipq install --no-deps "setfit==1.2.0" "datasets==5.0.1" "evaluate==0.4.6" "dill==0.4.1" "multiprocess==0.70.19"
"$venv/bin/python" -c "import metarec, learn2learn, torch, torchvision, transformers, lightning" \
  || { log "import check failed"; exit 1; }
echo "$want" > "$stamp"
log "done"
