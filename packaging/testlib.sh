# shellcheck shell=bash
# Shell functions shared by the scripts that run a private Docker: packaging/test-install.sh,
# packaging/test-packer.sh and scripts/demo.sh. Sourced, never run (bash, `set -euo pipefail`).
#
# The caller defines `die MESSAGE` (print, exit 2 or so) and keeps everything it starts under one
# temp dir, $work, named PREFIX<its pid> (see sweep_stale). What lives there:
#   <dir>/containerd.sock, containerd.pid, containerd.toml, containerd/   a private containerd
#   <dir>/docker.sock, docker.pid, daemon.json, dockerd.log, exec/, cli/  a private dockerd
# where <dir> is any directory below $work handed to start_dockerd. Nothing here touches the
# machine's own Docker daemon, its containerd, /var/lib/docker or /var/run/docker.sock.

# Debian's docker.io by default; a caller may name others before sourcing this file (the demo
# uses whatever Docker Engine the machine has, docker-ce's /usr/bin/dockerd included).
readonly DOCKERD=${DIC_DOCKERD:-/usr/sbin/dockerd}
readonly CONTAINERD=${DIC_CONTAINERD:-/usr/bin/containerd}
readonly DOCKER=${DIC_DOCKER:-/usr/bin/docker} # the 20.10 client matching dockerd (/usr/local/bin/docker may be newer)

# --- results ------------------------------------------------------------------------------
results=()
failures=0
pass() {
    results+=("PASS  $1")
    echo "PASS  $1"
}
fail() {
    results+=("FAIL  $1${2:+ ($2)}")
    echo "FAIL  $1${2:+ ($2)}"
    failures=$((failures + 1))
}
# check NAME CMD...: PASS when CMD succeeds, else FAIL with the last lines of its output.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$name"
    else
        fail "$name" "$(tail -n 4 <<<"$out" | tr '\n' ' ')"
    fi
}
summary() {
    echo
    echo "== summary"
    printf '%s\n' "${results[@]}"
    echo "${#results[@]} checks, $failures failed"
}

# --- private containerd and dockerd -------------------------------------------------------
# start_dockerd DIR DATA_ROOT: a containerd and a dockerd of their own under DIR, the daemon's
# data root at DATA_ROOT; returns once `docker version` answers on DIR/docker.sock.
#
# The containerd is started here, not left to dockerd: dockerd 20.10 uses the machine's
# containerd whenever /run/containerd/containerd.sock exists (installing docker.io on a systemd
# machine starts one), and then its containers and shims would live in the machine's containerd.
# Both run in a session of their own, so a Ctrl-C in the terminal reaches the caller (whose EXIT
# trap stops them in order) and not the daemons themselves.
start_dockerd() {
    local dir=$1 data_root=$2
    mkdir -p "$dir/cli" "$dir/containerd"
    # Keeps /etc/docker/daemon.json out; a caller may add settings (DIC_DAEMON_JSON).
    echo "${DIC_DAEMON_JSON:-"{}"}" >"$dir/daemon.json"
    # Like the config dockerd writes for the containerd it manages: no CRI plugin, every path
    # under DIR (the opt plugin would otherwise create /var/lib/containerd/opt).
    cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
EOF
    setsid "$CONTAINERD" --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 </dev/null &
    echo $! >"$dir/containerd.pid"
    for _ in $(seq 1 150); do
        [ -S "$dir/containerd.sock" ] && break
        sleep 0.2
    done
    [ -S "$dir/containerd.sock" ] || {
        tail -n 20 "$dir/containerd.log"
        die "containerd in $dir did not open its socket within 30 s"
    }
    setsid "$DOCKERD" --data-root="$data_root" --exec-root="$dir/exec" --pidfile="$dir/docker.pid" \
        --containerd="$dir/containerd.sock" \
        --config-file="$dir/daemon.json" -H "unix://$dir/docker.sock" \
        --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        --storage-driver=overlay2 >"$dir/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 300); do
        if "$DOCKER" --config "$dir/cli" -H "unix://$dir/docker.sock" version >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    tail -n 20 "$dir/dockerd.log"
    die "dockerd in $dir did not answer within 60 s"
}

# --- teardown -----------------------------------------------------------------------------
# teardown_dir DIR: stops and removes everything a run made under DIR. Processes are found by
# their pid files and by their command line naming DIR, mounts by their mount point under it,
# loop devices by a backing file under it. Safe to call twice, and on a half-made DIR.
teardown_dir() {
    local dir=$1 pid pids m dev pidfile img
    [ -d "$dir" ] || return 0
    # dockerd first (it stops its containers), then containerd.
    for name in docker.pid containerd.pid; do
        while read -r pidfile; do
            pid=$(cat "$pidfile" 2>/dev/null) || continue
            [ -n "$pid" ] || continue
            if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/"; then
                kill -TERM "$pid" 2>/dev/null || true
                for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            fi
        done < <(find "$dir" -maxdepth 3 -name "$name" -type f 2>/dev/null)
    done
    # Whatever is left: shims (their -address names DIR) and what they still run.
    pids=$(grep -lsF -- "$dir/" /proc/[0-9]*/cmdline | cut -d/ -f3 || true)
    for pid in $pids; do
        [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] && continue
        pkill -KILL --parent "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    done
    # Innermost mounts first (overlays and netns under the data and exec roots, then loop fs).
    for _ in 1 2 3; do
        while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done < <(awk -v d="$dir/" 'index($5, d) == 1 { print length($5), $5 }' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-)
    done
    while read -r img; do
        for dev in $(losetup -j "$img" -O NAME -n 2>/dev/null); do
            losetup -d "$dev" 2>/dev/null || true
        done
    done < <(find "$dir" -maxdepth 3 -name '*.img' -type f 2>/dev/null)
    rm -rf "$dir"
}

# sweep_stale PREFIX: tears down PREFIX<pid> dirs whose process is gone (a run killed before its
# EXIT trap could run: SIGKILL, a lost terminal, a reboot of the container it ran in).
sweep_stale() {
    local prefix=$1 stale pid
    for stale in "$prefix"*; do
        [ -d "$stale" ] || continue
        pid=${stale#"$prefix"}
        case $pid in '' | *[!0-9]*) continue ;; esac
        if [ "$pid" = "$$" ] || ! [ -d "/proc/$pid" ]; then
            echo "removing $stale left by an earlier run"
            teardown_dir "$stale"
        fi
    done
}

# --- the Debian 12 tree that systemd boots in (install and Packer tests) -------------------
readonly CACHE=${DIC_ROOTFS_CACHE:-/var/cache/dic-test-rootfs}
readonly SUITE=bookworm
# rpm: Debian's rpm installs the .rpm too, which runs its scriptlets (their fallback branch).
# Nothing the package needs is added: the deb goes in with dpkg -i, which fetches nothing, so a
# dependency it forgets to declare fails the install test. No ca-certificates either: a
# kubeconfig with its own CA must work without the system store.
readonly INCLUDE=systemd,systemd-sysv,dbus,rpm

# ensure_rootfs: sets $rootfs (a tarball of a debootstrapped tree, cached in $CACHE) and $key
# (a hash of what went into it), running debootstrap into $work/rootfs when it is not cached.
ensure_rootfs() {
    local t
    key=$(echo "$SUITE $INCLUDE minbase" | sha256sum | cut -c1-12)
    rootfs=$CACHE/$SUITE-$key.tar
    if [ -f "$rootfs" ]; then
        echo "== rootfs: cached $rootfs"
        return 0
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    echo "== rootfs: debootstrap $SUITE into $rootfs (cached for later runs)"
    t=$SECONDS
    mkdir -p "$CACHE" "${work:?}/rootfs"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$work/rootfs" http://deb.debian.org/debian \
        >"$work/debootstrap.log" 2>&1 || {
        tail -n 20 "$work/debootstrap.log"
        die "debootstrap failed"
    }
    # No getty on a console that does not exist; nothing else in minbase needs a tweak.
    ln -sf /dev/null "$work/rootfs/etc/systemd/system/getty.target"
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" --numeric-owner -cf "$rootfs.tmp" .
    mv "$rootfs.tmp" "$rootfs"
    # Trees made for an earlier package list are of no further use.
    find "$CACHE" -maxdepth 1 -name "$SUITE-*.tar" ! -name "$(basename "$rootfs")" -delete
    rm -rf "$work/rootfs"
    echo "debootstrap: $((SECONDS - t)) s"
}

# `docker run` options for a container whose PID 1 is systemd. cgroup v1 (hybrid) here: systemd
# needs the host hierarchy mounted read-write, /run and /run/lock as tmpfs, CAP_SYS_ADMIN for
# the mounts it and the unit's sandboxing make, and no seccomp filter. It stops on SIGRTMIN+3.
# /run is a tmpfs, so a `docker commit` never captures it (nor the volatile journal in it).
# shellcheck disable=SC2034 # used by the scripts that source this
readonly SYSTEMD_RUN_ARGS=(--network none --cap-add SYS_ADMIN --security-opt seccomp=unconfined
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock
    -e container=docker --stop-signal SIGRTMIN+3)

# wait_systemd BOUND EXEC...: waits until systemd in a container is up, running `EXEC... CMD` to
# run CMD in it; sets $systemd_state to `systemctl is-system-running`'s answer (running,
# degraded, or what went wrong). Until systemd has set up its bus, systemctl fails with
# "Failed to connect to bus".
wait_systemd() {
    local bound=$1 deadline
    shift
    deadline=$((SECONDS + bound))
    while :; do
        systemd_state=$("$@" timeout "$bound" systemctl is-system-running --wait 2>&1 || true)
        case $systemd_state in *"connect to bus"*) ;; *) break ;; esac
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.5
    done
}
