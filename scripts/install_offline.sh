#!/usr/bin/env bash
# Install crpbot's offline bundle on a node without a package index.
#
#   bash scripts/install_offline.sh dist/crpbot-offline-py3.12-x86_64.tar.xz /opt/crpbot
#   source /opt/crpbot/activate && python -m crpbot doctor
#
# Checks, before anything is written at PREFIX: the Python on PATH (or $PYTHON) matches the
# bundle's version; the archive matches its sha256 (BUNDLE.sha256 beside it); every unpacked
# file matches the manifest inside. It unpacks to a temporary directory beside PREFIX, writes
# PREFIX/activate there, and renames it into place: PREFIX holds a whole bundle or nothing.
# The image must already have the packages in ASSUMED.txt (torch, numpy, pandas, pyarrow,
# scipy, scikit-learn, matplotlib, PyYAML, safetensors) and an xz binary: both are checked, and
# what is missing is named. Installing the same bundle at the same PREFIX again is a no-op (exit 0);
# any other existing PREFIX is refused. Errors are one line on stderr, exit status 1.
set -euo pipefail

fail() {
  echo "install_offline.sh: error: $*" >&2
  exit 1
}

[ $# -eq 2 ] || fail "usage: install_offline.sh BUNDLE.tar.xz PREFIX"
bundle=$1
prefix=${2%/}
python=${PYTHON:-python3}

[ -f "$bundle" ] || fail "no bundle at $bundle"
name=$(basename "$bundle" .tar.xz)
[[ $name =~ ^crpbot-offline-py([0-9]+\.[0-9]+)-x86_64$ ]] ||
  fail "$bundle is not named crpbot-offline-py<X.Y>-x86_64.tar.xz"
wanted=${BASH_REMATCH[1]}
have=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null) ||
  fail "cannot run $python (set PYTHON to the image's python)"
[ "$have" = "$wanted" ] || fail "the bundle is for Python $wanted, but $python is Python $have"
digest=$(sha256sum "$bundle" | cut -d' ' -f1)
if [ -e "$prefix" ]; then
  [ "$(cat "$prefix/BUNDLE.sha256" 2>/dev/null)" = "$digest" ] ||
    fail "$prefix already exists; remove it or choose another PREFIX"
  echo "crpbot offline bundle $name is already installed at $prefix; nothing to do"
  exit 0
fi
command -v xz >/dev/null || fail "no xz binary on PATH (needed to unpack $bundle): install xz-utils"

if [ -f "$bundle.sha256" ]; then
  expected=$(cut -d' ' -f1 "$bundle.sha256")
  [ "$expected" = "$digest" ] || fail "$bundle does not match $bundle.sha256 (corrupt or incomplete download)"
fi

parent=$(dirname "$prefix")
mkdir -p "$parent" || fail "cannot create $parent"
staging=$(mktemp -d "$parent/.$(basename "$prefix").partial-XXXXXX") || fail "cannot write in $parent"
trap 'rm -rf "$staging"' EXIT

tar -xJf "$bundle" -C "$staging" 2>/dev/null || fail "$bundle is not a readable tar.xz archive (corrupt?)"
root="$staging/$name"
[ -f "$root/MANIFEST.sha256" ] || fail "$bundle has no $name/MANIFEST.sha256 (not a crpbot bundle?)"
(cd "$root" && sha256sum --check --quiet --strict MANIFEST.sha256 >/dev/null 2>&1) ||
  fail "$bundle: unpacked files do not match its MANIFEST.sha256 (corrupt bundle)"
[ -f "$root/ASSUMED.txt" ] || fail "$bundle has no $name/ASSUMED.txt (not a crpbot bundle?)"
lacking=$("$python" - "$root/ASSUMED.txt" <<'EOF'
import importlib.metadata as md, re, sys
specs = [line.strip() for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")]
def installed(spec):
    try:
        md.version(re.split(r"[=<>!~; ]", spec, maxsplit=1)[0])
        return True
    except md.PackageNotFoundError:
        return False
print(", ".join(spec for spec in specs if not installed(spec)))
EOF
)
[ -z "$lacking" ] || fail "$python lacks what the bundle assumes of the image: $lacking (ASSUMED.txt)"

# Ray drops its dashboard silently with an old protobuf, typing_extensions or packaging; put the
# bundle's newer copies first on the path only when the image's are missing or too old.
needs_fallback=$("$python" - <<'EOF'
import importlib.metadata as md
def version(name):
    try:
        return tuple(int(p) for p in md.version(name).split(".")[:2] if p.isdigit())
    except md.PackageNotFoundError:
        return (0,)
minimum = {"protobuf": (5, 0), "typing_extensions": (4, 16), "packaging": (24, 2)}
print(int(any(version(name) < least for name, least in minimum.items())))
EOF
)

echo "$digest" >"$root/BUNDLE.sha256"  # a rerun with this bundle finds it installed
mkdir -p "$root/bin"
final_site="$prefix/site"
path_entries="$final_site"
[ "$needs_fallback" = 1 ] && path_entries="$prefix/fallback:$final_site"
python_path=$(command -v "$python")
for tool in ray crpbot; do
  module=$([ "$tool" = ray ] && echo "ray.scripts.scripts" || echo "crpbot.cli")
  cat >"$root/bin/$tool" <<EOF
#!/usr/bin/env bash
PYTHONPATH="$path_entries\${PYTHONPATH:+:\$PYTHONPATH}" exec "$python_path" -c 'import sys; from $module import main; sys.exit(main())' "\$@"
EOF
  chmod +x "$root/bin/$tool"
done
cat >"$root/activate" <<EOF
# source this file: crpbot and Ray from the offline bundle, on $python_path (Python $have)
export PYTHONPATH="$path_entries\${PYTHONPATH:+:\$PYTHONPATH}"
export PATH="$prefix/bin:\$PATH"
export RAY_USAGE_STATS_ENABLED=0
EOF

mv "$root" "$prefix" || fail "cannot move the unpacked bundle to $prefix"
echo "crpbot offline bundle installed at $prefix (Python $have$([ "$needs_fallback" = 1 ] && echo ', with fallback protobuf/typing_extensions/packaging')); next: source $prefix/activate && python -m crpbot doctor"
