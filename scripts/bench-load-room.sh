#!/usr/bin/env bash
# How much room a `docker load` needs beside what it leaves: the measurement behind the
# headroom rule's factor (`policy::headroom::PULL_FACTOR`, twice the largest recent image).
# A benchmark, not a test: CI does not run it. As root on Debian 12:
#
#   sudo scripts/bench-load-room.sh
#
# What it does: a fresh ext4 loop filesystem under /tmp/dic-bench-load-room-<pid>/ and a private
# dockerd on it (never the machine's own Docker); an image of one layer ($MIB MiB of random
# bytes and a static busybox) imported, saved to a tarball outside the filesystem and removed;
# then the tarball loaded while the filesystem's usage is sampled every 50 ms. Prints the
# growth at the peak and at the end, and their ratio. Everything is torn down on exit.
#
# Env:     ENGINE  host: Debian 12's dockerd 20.10; bed: dockerd 28.5 from the engines test bed
#                  (tests/engines/bed.sh, made when missing)                    (default host)
#          MIB     the image's size, MiB                                        (default 150)
# Time:    about half a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TMP_PREFIX=/tmp/dic-bench-load-room-
ENGINE=${ENGINE:-host}
MIB=${MIB:-150}

die() {
    echo "bench-load-room: $*" >&2
    exit 2
}
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): it mounts a loop filesystem and starts dockerd"
case $MIB in '' | *[!0-9]*) die "MIB=$MIB: not a whole number" ;; esac
[ "$MIB" -ge 1 ] && [ "$MIB" -le 4096 ] || die "MIB=$MIB: between 1 and 4096"
case $ENGINE in host | bed) ;; *) die "ENGINE=$ENGINE: host or bed" ;; esac
[ -x /bin/busybox ] || die "/bin/busybox missing: apt-get install busybox-static"
# shellcheck source=packaging/testlib.sh
. packaging/testlib.sh
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_CONFIG

work=$TMP_PREFIX$$
teardown() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    [ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null
    teardown_dir "$work"
    rm -rf "$work"
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
sweep_stale "$TMP_PREFIX"
# Room for the image three times over: its tarball, its layer, and the import's copy.
disk=$((MIB * 4 + 256))
mkdir -p "$work/fs" "$work/img/bin" "$work/out"
truncate -s "${disk}M" "$work/fs.img"
mkfs.ext4 -q -F -m 0 "$work/fs.img"
mount -o loop "$work/fs.img" "$work/fs"
if [ "$ENGINE" = bed ]; then
    tests/engines/bed.sh ensure >/dev/null || die "the engines test bed could not be made"
    start_bed_dockerd "$work" "$work/fs/docker"
    cli=$BED_DOCKER
else
    start_dockerd "$work" "$work/fs/docker"
    cli=$DOCKER
fi
d() { "$cli" --config "$work/cli" -H "unix://$work/docker.sock" "$@"; }
version=$(d version --format '{{.Server.Version}}')

cp /bin/busybox "$work/img/bin/"
head -c "${MIB}M" /dev/urandom >"$work/img/blob"
tar -C "$work/img" -cf "$work/out/layer.tar" .
d import "$work/out/layer.tar" bench-load-room:1 >/dev/null
d save -o "$work/out/image.tar" bench-load-room:1
d rmi bench-load-room:1 >/dev/null
sync
used() { df -B1M --output=used "$work/fs" | tail -n 1 | tr -d ' '; }
before=$(used)
(while :; do
    used
    sleep 0.05
done) >"$work/out/samples" &
sampler=$!
d load -i "$work/out/image.tar" >/dev/null
sleep 2
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=
after=$(used)
peak=$(sort -n "$work/out/samples" | tail -n 1)
[ "$after" -gt "$before" ] || die "the load left no bytes on the filesystem ($before -> $after MiB)"
tarball=$(($(stat -c %s "$work/out/image.tar") / 1048576))
echo "docker $version ($ENGINE): a load of a ${tarball} MiB tarball grew the filesystem by" \
    "$((peak - before)) MiB at its peak and left $((after - before)) MiB:" \
    "peak / left = $(awk -v p="$((peak - before))" -v a="$((after - before))" 'BEGIN { printf "%.2f", p / a }')"
