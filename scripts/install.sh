#!/usr/bin/env bash
# One install path for README, CI and the Dockerfile: system packages, then the venv.
#   scripts/install.sh                 runtime (nbdkit, qemu-utils, libnbd, the app)
#   scripts/install.sh --dev           plus what the tests need (pytest, ruff, hadolint, chromium, playwright,
#                                      docker.io, docker-compose, debootstrap)
#   scripts/install.sh --system-only   only the Debian packages (the Dockerfile's first, rarely rebuilt layer)
#   scripts/install.sh --deps-only     only the venv and the third-party packages named in pyproject.toml,
#                                      not the app (the Dockerfile's second layer: rebuilt only when pyproject.toml changes)
# Idempotent: apt runs only for missing packages (and only as root), pip only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
only=""
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --system-only) only=system ;;
    --deps-only) only=deps ;;
    -h|--help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option: $arg (see --help)" >&2; exit 2 ;;
  esac
done

# python3-venv brings the pip wheel the venv needs: Debian's python3-pip is not required.
# The server kinds and storages (lab kinds): nbd-server, and mkfs for the loop-mounted filesystem images.
# redis-server: the broker of cluster mode (`lab worker`, compose's `cluster` profile runs it from this image).
pkgs=(nbdkit qemu-utils libnbd-bin python3-libnbd python3-venv nbd-server e2fsprogs xfsprogs btrfs-progs redis-server)
# docker.io + debootstrap: the compose test runs the classroom image on a private dockerd.
[ "$dev" = 1 ] && pkgs+=(chromium fonts-dejavu-core docker-compose docker.io debootstrap)

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
  # Installing docker.io must not start the host's Docker service (the tests start their own
  # engine): without a policy-rc.d of the machine's own, one denies service starts meanwhile.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
fi
[ "$only" = system ] && exit 0

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

pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if [ "$only" = deps ]; then
  # The requirements straight from pyproject.toml, so the app's code is not needed yet.
  mapfile -t reqs < <(.venv/bin/python - "$dev" <<'EOF'
import sys, tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
reqs = project["dependencies"] + (project["optional-dependencies"]["dev"] if sys.argv[1] == "1" else [])
print("\n".join(reqs))
EOF
  )
  "${pip[@]}" --upgrade pip
  "${pip[@]}" "${reqs[@]}"
  exit 0
fi

extra=""
[ "$dev" = 1 ] && extra="[dev]"
stamp=".venv/.installed$extra"
want=$(sha256sum < pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "${pip[@]}" --upgrade pip
  "${pip[@]}" -e ".$extra"
  echo "$want" > "$stamp"
fi
