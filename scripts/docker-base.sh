#!/usr/bin/env bash
# Make the Dockerfile's base image (debian:bookworm-slim) without any registry: debootstrap
# --variant=minbase bookworm, then `docker import`. For engines that cannot pull (offline
# classrooms, the compose test's private dockerd); an engine that can pull does not need it.
#   scripts/docker-base.sh [--docker "DOCKER CLIENT ARGV"] [--tag NAME] [--tarball-only]
# The host's extra CA certificates (/usr/local/share/ca-certificates/*.crt) are carried into the
# base, so the build's pip trusts an HTTPS proxy the host trusts. The root-fs tarball is cached in
# $FASTZERO_BASE_CACHE (default /var/cache/fastzero-lab), keyed by the day, this script and the
# CAs; older ones are deleted. Prints the tarball's path last. Needs root (debootstrap, chroot).
set -euo pipefail
cd "$(dirname "$0")/.."

docker_cmd=(docker)
tag=debian:bookworm-slim
import=1
while [ $# -gt 0 ]; do
  case "$1" in
    --docker) read -r -a docker_cmd <<< "$2"; shift ;;
    --tag) tag=$2; shift ;;
    --tarball-only) import=0 ;;
    -h|--help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "docker-base.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "docker-base.sh: needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "docker-base.sh: debootstrap is missing (scripts/install.sh --dev)" >&2; exit 1; }

mirror=${FASTZERO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${FASTZERO_BASE_CACHE:-/var/cache/fastzero-lab}
cas=(/usr/local/share/ca-certificates/*.crt)
[ -e "${cas[0]}" ] || cas=()
key=$(date -u +%Y%m%d)-$( { cat "$0"; [ ${#cas[@]} -eq 0 ] || cat "${cas[@]}"; } | sha256sum | cut -c1-12)
tarball=$cache/bookworm-minbase-$key.tar

if [ ! -s "$tarball" ]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.build.XXXXXX")
  root=$work/root
  cleanup() {
    # debootstrap mounts proc/sys inside the root; a failed run can leave them mounted.
    if [ -d "$root" ]; then
      { findmnt -rn -o TARGET | grep -F "$root/" | sort -r | while read -r m; do umount -l "$m"; done; } || true
    fi
    rm -rf "$work"
  }
  trap cleanup EXIT
  echo "docker-base.sh: debootstrap --variant=minbase bookworm ($mirror)" >&2
  debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # The same sources as the official bookworm-slim image: updates and security too.
  rm -f "$root/etc/apt/sources.list"
  cat > "$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  if [ ${#cas[@]} -gt 0 ]; then
    cp "${cas[@]}" "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates > /dev/null
  fi
  # What the official slim image leaves out too: package caches, lists, docs, logs.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar --numeric-owner -C "$root" -cf "$work/base.tar" .
  mv "$work/base.tar" "$tarball"
  find "$cache" -maxdepth 1 -name 'bookworm-minbase-*.tar' ! -name "$(basename "$tarball")" -delete
fi

if [ "$import" = 1 ]; then
  "${docker_cmd[@]}" import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$tag" > /dev/null
  echo "docker-base.sh: imported $tag from $tarball" >&2
fi
echo "$tarball"
