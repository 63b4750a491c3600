#!/usr/bin/env bash
# The engines test bed: today's engines from Debian's archive, run on this Debian 12 host from a
# debootstrapped root, each daemon in a mount namespace of its own test.
#
#   tests/engines/bed.sh ensure            make the root when missing or stale; print its path
#   tests/engines/bed.sh path              print the root's path when it is complete (exit 1 if not)
#   tests/engines/bed.sh versions          the engines' versions in the root, one per line
#   tests/engines/bed.sh ns DIR [DIR...]   start a namespace holder for the daemons of DIR; prints
#                                          its pid (also in DIR/holder.pid)
#   tests/engines/bed.sh run DIR CMD...    run CMD from the root, inside DIR's namespace
#
# The root. Debian sid, `debootstrap --variant=minbase` with docker.io (dockerd 28), docker-cli,
# docker-buildx, containerd (2.1), runc and podman (5.8): about 840 MB, about 2 minutes. It is
# cached in $DIC_ENGINES_CACHE (default /var/cache/dic-engines) as `sid-<key>/`, where the key is
# a hash of the suite, the package list and this layout's version: a change to any of them makes
# the cached root stale, and `ensure` builds a new one and deletes the old. A root counts only
# once `ensure` has verified it (every engine answers `--version`) and written `.complete`; a
# half-made root (a killed run) is removed and made again. `ensure` holds a lock, so parallel
# callers wait for one build. `DIC_ENGINES_REFRESH=1` rebuilds it whatever the cache holds.
#
# The namespace. A daemon of the root runs chrooted into it, in a private mount namespace held
# by a `sleep` process (the holder) whose command line names DIR, so the harness's teardown (by
# command line, then by mount) finds it. Inside the namespace:
#   - the root is bind-mounted onto itself (dockerd's legacy builder remounts / and fails with
#     "remount /, flags: 0x84000: invalid argument" when / is not a mount point), read-only,
#     so no test writes into the shared cache;
#   - /proc, /sys and /dev are the host's; /run, /var/lib, /var/cache, /var/log, /var/tmp and
#     /tmp are tmpfs of the namespace's own (Podman writes its blob-info cache to
#     /var/lib/containers/cache whatever its --root says);
#   - DIR and each further DIR are bind-mounted at the same path, so sockets, data roots and
#     loop filesystems have the same path inside and out (a further DIR: a filesystem shared by
#     several engines). Mounts made later on the host under them are not seen inside: make the
#     filesystems first.
# Every daemon of one test (a containerd and the dockerd that uses it) runs in the same
# namespace: dockerd's mounts must be visible to containerd and runc. The namespace ends when
# its last process does.
#
# The Docker CLI and buildx run on the host itself (they need glibc 2.34; this host has 2.36):
# `<root>/usr/bin/docker`, with `"cliPluginsExtraDirs": ["<root>/usr/libexec/docker/cli-plugins"]`
# in its config.json for buildx. Podman's CLI needs the root's libraries: use `run`.
#
# Needs root, debootstrap (installed when missing and root), unshare and nsenter (util-linux).
set -euo pipefail

readonly SUITE=sid
readonly MIRROR=${DIC_ENGINES_MIRROR:-http://deb.debian.org/debian}
readonly PACKAGES=docker.io,docker-cli,docker-buildx,containerd,runc,podman,conmon,catatonit,iptables,iproute2
readonly LAYOUT=1
readonly CACHE=${DIC_ENGINES_CACHE:-/var/cache/dic-engines}
KEY=$(printf '%s\n' "$SUITE" "$PACKAGES" "$LAYOUT" | sha256sum | cut -c1-12)
readonly KEY
ROOT=$CACHE/$SUITE-$KEY
readonly ROOT

die() {
    echo "bed.sh: $*" >&2
    exit 2
}

complete() {
    [ -f "$ROOT/.complete" ] && [ "$(head -n 1 "$ROOT/.complete")" = "$KEY" ]
}

# CMD from the root in a throwaway mount namespace with /proc (podman needs it even for
# --version).
in_root() {
    unshare --mount --propagation private -- bash -c \
        'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$ROOT" "$@"
}

# The engines' versions, from their own binaries inside the root.
versions() {
    local out
    out=$(in_root /usr/sbin/dockerd --version) && echo "dockerd: $out"
    out=$(in_root /usr/bin/docker --version) && echo "docker: $out"
    out=$(in_root /usr/libexec/docker/cli-plugins/docker-buildx version) && echo "buildx: $out"
    out=$(in_root /usr/bin/containerd --version) && echo "containerd: $out"
    out=$(in_root /usr/bin/runc --version | head -n 1) && echo "runc: $out"
    out=$(in_root /usr/bin/podman --version) && echo "podman: $out"
}

ensure() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot)"
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    if complete && [ "${DIC_ENGINES_REFRESH:-}" != 1 ]; then
        echo "$ROOT"
        return 0
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "bed.sh: installing debootstrap" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
    fi
    rm -rf "$ROOT"
    local t=$SECONDS log=$CACHE/debootstrap-$KEY.log
    echo "bed.sh: debootstrap $SUITE with $PACKAGES into $ROOT (cached for later runs)" >&2
    # sid's Release file may be past its Valid-Until on a frozen mirror; debootstrap does not
    # check it, and nothing here runs apt afterwards.
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -rf "$ROOT"
        die "debootstrap failed (log: $log)"
    fi
    rm -rf "$ROOT/var/cache/apt/archives/"*.deb "$ROOT/var/lib/apt/lists/"*
    local v
    if ! v=$(versions); then
        rm -rf "$ROOT"
        die "the new root at $ROOT does not run its engines"
    fi
    printf '%s\n%s\n' "$KEY" "$v" >"$ROOT/.complete"
    # Roots made for an earlier package list or layout are of no further use.
    find "$CACHE" -mindepth 1 -maxdepth 1 -type d -name "$SUITE-*" ! -path "$ROOT" -exec rm -rf {} +
    echo "bed.sh: root ready in $((SECONDS - t)) s" >&2
    echo "$ROOT"
}

# The namespace holder's script: $1 the root, $2 the holder's pid file, $3... the dirs.
# shellcheck disable=SC2016 # expanded by the holder's shell
readonly HOLDER='
set -eu
root=$1 pidfile=$2
shift 2
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
for d in run var/lib var/cache var/log var/tmp tmp; do
    mount -t tmpfs -o mode=0755 dic-bed "$root/$d"
done
chmod 1777 "$root/tmp" "$root/var/tmp"
for d in "$@"; do
    mkdir -p "$root$d"
    mount --rbind "$d" "$root$d"
done
echo $$ >"$pidfile.tmp"
mv "$pidfile.tmp" "$pidfile"
# The command line names each dir with a trailing slash, as the teardown looks for.
label=dic-bed-holder
for d in "$@"; do label="$label $d/"; done
exec -a "$label" sleep infinity
'

ns() {
    [ $# -ge 1 ] || die "usage: bed.sh ns DIR [DIR...]"
    complete || die "no engines root at $ROOT: run 'tests/engines/bed.sh ensure' first"
    local dir=$1 d
    for d in "$@"; do
        case $d in /*) ;; *) die "not an absolute path: $d" ;; esac
        [ -d "$d" ] || die "no such directory: $d"
    done
    rm -f "$dir/holder.pid"
    # Its own session: a Ctrl-C in the caller's terminal does not reach it.
    setsid unshare --mount --propagation private -- bash -c "$HOLDER" dic-bed-holder "$ROOT" "$dir/holder.pid" "$@" \
        </dev/null >"$dir/holder.log" 2>&1 &
    local i
    for i in $(seq 1 100); do
        if [ -s "$dir/holder.pid" ]; then
            cat "$dir/holder.pid"
            return 0
        fi
        kill -0 $! 2>/dev/null || break
        sleep 0.05
    done
    cat "$dir/holder.log" >&2
    die "the namespace holder for $dir did not start"
}

run() {
    [ $# -ge 2 ] || die "usage: bed.sh run DIR CMD..."
    local dir=$1 pid
    shift
    pid=$(cat "$dir/holder.pid" 2>/dev/null) || die "no namespace for $dir (bed.sh ns $dir)"
    exec nsenter --mount="/proc/$pid/ns/mnt" chroot "$ROOT" "$@"
}

case ${1:-} in
    ensure) ensure ;;
    path) complete && echo "$ROOT" || { echo "bed.sh: no complete root at $ROOT" >&2; exit 1; } ;;
    versions) complete || die "no engines root at $ROOT"; versions ;;
    ns) shift; ns "$@" ;;
    run) shift; run "$@" ;;
    *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
