#!/usr/bin/env bash
# One install path for README, CI and the Dockerfile: system packages, then the venv.
#   scripts/install.sh          runtime (nbdkit, qemu-utils, libnbd, the app)
#   scripts/install.sh --dev    plus what the tests need (pytest, ruff, chromium, playwright)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

pkgs=(nbdkit qemu-utils libnbd-bin python3-libnbd python3-venv python3-pip)
[ "$dev" = 1 ] && pkgs+=(chromium fonts-dejavu-core)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install.sh: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's libnbd bindings exist only for Debian's python3: build the venv from it, clean,
# and link just the bindings in (--system-site-packages would drag old requests/urllib3 along).
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.base_prefix != "/usr")' 2>/dev/null; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for f in /usr/lib/python3/dist-packages/nbd.py /usr/lib/python3/dist-packages/libnbdmod.cpython-3*.so; do
  ln -sf "$f" "$site/"
done
.venv/bin/python -c 'import nbd' || { echo "install.sh: the venv cannot import nbd" >&2; exit 1; }

extra=""
[ "$dev" = 1 ] && extra="[dev]"
stamp=".venv/.installed$extra"
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"
  echo "$want" > "$stamp"
fi
