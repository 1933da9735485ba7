#!/usr/bin/env bash
# The offline bundle end to end, as on an air-gapped CUDA node (here on the CPU):
#   1. build it for this machine's Python (make bundle);
#   2. make a fresh virtual environment holding only what the bundle assumes of the image
#      (torch, numpy, pandas, pyarrow, scipy, scikit-learn, matplotlib, PyYAML, safetensors);
#   3. install the bundle with scripts/install_offline.sh;
#   4. import-probe every module on the product's paths from the bundle alone;
#   5. python -m crpbot doctor;
#   6. python -m crpbot train --coin BTC --config .../smoke.yaml --epochs 1, and verify the artifact.
# Starts Ray: run it under the shared lock, `flock /tmp/crpbot-ray.lock make check-bundle`.
# Prints each step's seconds; exits non-zero at the first failure. About 10 minutes, most of it
# xz -9e; BUNDLE=dist/crpbot-offline-py3.11-x86_64.tar.xz checks an existing bundle.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
work=$(mktemp -d "${TMPDIR:-/tmp}/crpbot-offline-check-XXXXXX")
trap 'rm -rf "$work"' EXIT
bundle=${BUNDLE:-"$repo/dist/crpbot-offline-py$version-x86_64.tar.xz"}

step() {
  local name=$1
  shift
  local started=$SECONDS
  echo "=== $name"
  "$@"
  echo "=== $name: OK in $((SECONDS - started)) s"
}

assumed_packages() {
  "$python" -c "
import sys; sys.path.insert(0, '$repo/scripts')
from build_offline_bundle import ASSUMED; print(' '.join(ASSUMED.values()))"
}

fresh_venv() {
  "$python" -m venv "$work/venv"
  # shellcheck disable=SC2046
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check $(assumed_packages)
  "$work/venv/bin/pip" list --format=freeze | wc -l | xargs echo "packages in the fresh venv:"
}

in_bundle() {
  (cd "$work" && PATH="$work/venv/bin:$PATH" && . "$work/crpbot/activate" && "$@")
}

where_crpbot_comes_from() {
  local found
  found=$(in_bundle python -c "import crpbot, ray; print('crpbot from', crpbot.__file__); print('ray from', ray.__file__)")
  echo "$found"
  grep -q "crpbot from $work/crpbot/site/" <<<"$found"
}

train_one_epoch() {
  in_bundle python -m crpbot train --coin BTC --config "$work/crpbot/site/tune_configs/smoke.yaml" --epochs 1 \
    --out "$work/model" --storage "$work/runs"
  in_bundle python -c "from crpbot.registry.artifact import verify_artifact; verify_artifact('$work/model'); print('artifact verified')"
}

if [ -z "${BUNDLE:-}" ]; then  # BUNDLE=path checks an existing bundle instead of building one
  step "build the bundle (Python $version)" "$python" "$repo/scripts/build_offline_bundle.py" --python "$version"
fi
ls -l "$bundle"
step "fresh venv with only the assumed packages" fresh_venv
step "install_offline.sh" env PYTHON="$work/venv/bin/python" bash "$repo/scripts/install_offline.sh" "$bundle" "$work/crpbot"
step "crpbot and Ray come from the bundle" where_crpbot_comes_from
step "import probe" in_bundle python "$repo/scripts/build_offline_bundle.py" --probe "$work/crpbot"
step "crpbot doctor" in_bundle python -m crpbot doctor
step "crpbot train --epochs 1" train_one_epoch
echo "offline bundle check: OK ($(du -m "$bundle" | cut -f1) MiB)"
