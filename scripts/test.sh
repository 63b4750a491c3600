#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine: installs what the real-Docker and kubectl
# tests need when it is missing (as root), then runs every test layer through `cargo test`.
# The real-Docker tests start their own private dockerd on a loop-mounted ext4 filesystem; they
# never touch the machine's default daemon. With CI=true a missing dockerd or kubectl fails the
# tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
# The test images are FROM scratch around a static busybox.
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "warning: missing ${missing[*]}; the real-Docker tests will be skipped (run as root to install)" >&2
    fi
fi

cargo test --locked "$@"
