#!/usr/bin/env bash
# docker-image-cleaner in five minutes, on a throwaway Docker: as root on Debian 12,
#
#   sudo scripts/demo.sh
#
# installs what is missing (busybox-static, e2fsprogs, and docker.io only on a machine with no
# Docker Engine at all), builds the binary (cargo build, its progress shown), starts a private
# containerd and dockerd on a small loop-mounted ext4 filesystem, fills
# it with images used in a known order, fills the disk above the high watermark, shows `status`,
# runs one pass (`once`) and shows what went, what stayed and the usage before and after. It
# exits 1 when the pass did not do what the narrative says it will, 2 when the demo could not run.
#
# It never touches the machine's own Docker (/var/run/docker.sock, /var/lib/docker) or its
# containerd, and never installs or removes an engine package when any Docker Engine is there
# (docker.io's /usr/sbin/dockerd, docker-ce's /usr/bin/dockerd, any dockerd on PATH): it runs
# a private daemon of that engine's own binaries. Everything lives under /tmp/dic-demo-<pid>/
# and is removed on exit, also after a
# failure or Ctrl-C; what a killed run left behind is removed by the next run first. About 20 s
# on an idle 2-core machine (50 s at most seen under load), plus the build (seconds when built
# before, minutes from scratch) and, on a fresh machine, the apt-get install.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

readonly NAME=docker-image-cleaner
readonly TMP_PREFIX=/tmp/dic-demo-
readonly FS_MIB=256     # the demo's /var/lib/docker filesystem
readonly PAYLOAD_MIB=23 # random bytes per image: with busybox, about a tenth of the filesystem
readonly HIGH=80 LOW=60 FILL_TO=87

die() {
    echo "demo.sh: $*" >&2
    exit 2
}
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): it mounts a loop filesystem and starts dockerd"

# Any Docker Engine on the machine, whichever package brought it: its dockerd, containerd and
# CLI are what the private daemon runs. Only a machine with none gets Debian's docker.io.
find_engine() {
    local d
    engine_dockerd=
    for d in "$(command -v dockerd 2>/dev/null || true)" /usr/bin/dockerd /usr/sbin/dockerd /usr/local/bin/dockerd; do
        if [ -n "$d" ] && [ -x "$d" ]; then
            engine_dockerd=$d
            break
        fi
    done
    engine_pkgs=$(dpkg-query -W -f='${Package} ${Status}\n' docker-ce docker-ee docker.io moby-engine 2>/dev/null |
        awk '/ install ok installed$/ { print $1 }' | tr '\n' ' ' || true)
}
find_engine
if [ -n "$engine_dockerd" ] || [ -n "$engine_pkgs" ]; then
    [ -n "$engine_dockerd" ] || die "a Docker Engine package is installed (${engine_pkgs% }) but no dockerd was found; the demo installs no engine beside it"
    DIC_DOCKERD=$engine_dockerd
    # The packages' own paths first (a newer client elsewhere on PATH may not speak to it).
    DIC_CONTAINERD=/usr/bin/containerd
    [ -x "$DIC_CONTAINERD" ] || DIC_CONTAINERD=$(command -v containerd 2>/dev/null || true)
    DIC_DOCKER=/usr/bin/docker
    [ -x "$DIC_DOCKER" ] || DIC_DOCKER=$(command -v docker 2>/dev/null || true)
    [ -n "$DIC_CONTAINERD" ] || die "found $engine_dockerd but no containerd on PATH; the demo installs no engine package beside an existing Docker Engine"
    [ -n "$DIC_DOCKER" ] || die "found $engine_dockerd but no docker CLI on PATH; the demo installs no engine package beside an existing Docker Engine"
    # Docker 29 keeps images in containerd's store by default, outside the demo's filesystem:
    # the classic store keeps them on it, where the demo measures.
    case $("$engine_dockerd" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p') in
    2[0-7] | 1[0-9] | '') ;;
    *) DIC_DAEMON_JSON='{"features": {"containerd-snapshotter": false}}' ;;
    esac
    export DIC_DOCKERD DIC_CONTAINERD DIC_DOCKER DIC_DAEMON_JSON
fi
# Private containerd and dockerd, teardown, pass/fail: shared with the packaging tests.
. packaging/testlib.sh

t_start=$SECONDS
step() {
    echo
    echo "== [$((SECONDS - t_demo))s] $*"
}
say() { echo "   $*"; }
# Shows a command as an operator would type it (without the private-daemon flags), runs it and
# indents its output. It runs in the background and is waited for: bash runs no INT trap after
# a foreground command that handles SIGINT itself and exits normally (the cleaner does, and so
# does an attached `docker run`), but a `wait` is always cut short by it.
show() {
    local cmd="$*"
    echo "   \$ ${cmd/#cleaner /$NAME --config \$CONF }"
    {
        "$@" 2>&1 | sed 's/^/   | /'
        exit "${PIPESTATUS[0]}"
    } &
    wait $!
}
# A settings file or the environment of whoever runs the demo must not change what it shows.
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_CONFIG DOCKER_TLS_VERIFY DOCKER_CERT_PATH KUBECONFIG RUST_LOG
while read -r var; do unset "$var"; done < <(compgen -e | grep '^DOCKER_IMAGE_CLEANER_' || true)

echo "docker-image-cleaner demo: one cleaning pass on a throwaway Docker, start to finish."

# --- 1. tools -----------------------------------------------------------------------------
t_demo=$SECONDS
step "1. Tools"
missing=()
if [ -n "$engine_dockerd" ]; then
    pkgs=${engine_pkgs% }
    say "Docker Engine found: $DOCKERD (package: ${pkgs:-none}); the demo runs a private daemon of it"
    say "and installs or removes no engine package"
else
    { [ -x "$DOCKERD" ] && [ -x "$DOCKER" ] && [ -x "$CONTAINERD" ]; } || missing+=(docker.io)
fi
# The demo's images are FROM scratch around a statically linked busybox.
# The build generates containerd's gRPC client with protoc.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
command -v fallocate >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    case " ${missing[*]} " in *" docker.io "*)
        say "(on a machine booted with systemd, Debian starts its own docker.service on install;"
        say " the demo never talks to it)" ;;
    esac
    t=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    say "apt-get: $((SECONDS - t)) s"
else
    say "busybox-static, e2fsprogs and a Docker Engine: already installed"
fi

# --- 2. build -----------------------------------------------------------------------------
step "2. Build the binary (cargo build)"
say "from scratch this takes a few minutes; cargo's progress follows"
t=$SECONDS
# Under sudo, build as the user who owns the checkout, so target/ does not become root's.
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && [ "$(stat -c %U "$repo")" = "$SUDO_USER" ]; then
    say "as $SUDO_USER (who ran sudo)"
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    runuser -u "$SUDO_USER" -- bash -lc 'cd "$1" && cargo build --locked' _ "$repo" ||
        die "cargo build failed (is Rust installed for $SUDO_USER? https://rustup.rs)"
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
    cargo build --locked || die "cargo build failed"
fi
bin=${CARGO_TARGET_DIR:-$repo/target}/debug/$NAME
[ -x "$bin" ] || die "$bin missing after cargo build"
say "cargo build: $((SECONDS - t)) s (not counted in the demo's time); binary $bin"
build_secs=$((SECONDS - t))

# --- 3. a throwaway Docker ----------------------------------------------------------------
t_demo=$((t_demo + build_secs))
step "3. A throwaway Docker on a ${FS_MIB} MiB filesystem"
work=$TMP_PREFIX$$
teardown() {
    local rc=$? t=$SECONDS
    set +e
    trap - EXIT INT TERM HUP
    echo
    echo "== teardown: stopping dockerd and containerd, unmounting, detaching the loop device, removing $work"
    teardown_dir "$work"
    echo "   done in $((SECONDS - t)) s; left behind: $(leftovers)"
    echo "   demo time: $((SECONDS - t_start - ${build_secs:-0})) s, plus $((${build_secs:-0})) s of cargo build"
    exit "$rc"
}
# What a run leaves when teardown failed: mounts, processes, loop devices, the dir.
leftovers() {
    local found=()
    grep -qsF " $work/" /proc/self/mountinfo && found+=(mounts)
    grep -lsF -- "$work/" /proc/[0-9]*/cmdline >/dev/null && found+=(processes)
    [ -n "$(losetup -j "$work/fs.img" -O NAME -n 2>/dev/null)" ] && found+=(loop device)
    [ -e "$work" ] && found+=("$work")
    echo "${found[*]:-nothing}"
}
trap teardown EXIT
trap 'echo; echo "   interrupted"; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
sweep_stale "$TMP_PREFIX"
mkdir -p "$work/fs" "$work/state"
truncate -s "${FS_MIB}M" "$work/fs.img"
mkfs.ext4 -q -F -b 4096 "$work/fs.img"
dev=$(losetup --find --show "$work/fs.img")
mount -t ext4 "$dev" "$work/fs"
start_dockerd "$work" "$work/fs/docker"
say "ext4 in $work/fs.img on $dev, mounted at $work/fs: it plays /var/lib/docker's filesystem"
say "dockerd --data-root $work/fs/docker --exec-root $work/exec"
say "        --pidfile $work/docker.pid -H unix://$work/docker.sock"
say "        with a containerd of its own ($work/containerd.sock)"
say "below, \`docker\` means $DOCKER -H unix://$work/docker.sock"
docker() { timeout 120 "$DOCKER" --config "$work/cli" -H "unix://$work/docker.sock" "$@"; }

# usage: the cleaner's formula (100 × (1 − f_bavail / f_blocks); the 5 % ext4 reserves for root
# count as used) on the loop filesystem, as "<percent> <used MiB> <size MiB>".
usage() {
    stat -f -c '%b %a %S' "$work/fs" |
        awk '{ printf "%.1f %d %d\n", 100 * (1 - $2 / $1), ($1 - $2) * $3 / 1048576, $1 * $3 / 1048576 }'
}
usage_line() {
    local u
    read -r -a u < <(usage)
    echo "${u[0]} % used (${u[1]} of ${u[2]} MiB)"
}
say "usage now: $(usage_line)"

# --- 4. the cleaner's configuration and its first run -------------------------------------
step "4. The cleaner's configuration, and its first run on this 'node'"
conf=$work/$NAME.toml
say "\$CONF is $conf:"
cat >"$conf" <<EOF
# The demo's /etc/docker-image-cleaner.toml.
path_to_check = ["$work/fs/docker"]
docker_host = "unix://$work/docker.sock"
state_dir = "$work/state"
threshold_high = $HIGH
threshold_low = $LOW
# On a node, images used in the last two minutes are kept (the default, 120); the demo's are seconds old.
min_age_seconds = 0
# Never remove the pause image, whatever its last use.
keep = ["^demo/pause:"]
# Empty: cordoning is off. On a Kubernetes node, the node's name as the kubelet registered it.
node_name = ""
EOF
sed 's/^/   | /' "$conf"
cleaner() { "$bin" --config "$conf" --log stderr "$@"; }
say "check-config: the effective configuration and where each value comes from"
say "(keys not shown are at their defaults)"
show cleaner check-config | grep -v '# default$' || die "check-config failed"
say
say "First run: usage is below ${HIGH} %, so it cleans nothing; it records where Docker's event"
say "stream stands ($work/state/last-use.json). From now on every run replays what Docker did"
say "since, so it knows when each image was last used."
show cleaner once || die "the first 'once' failed"

# --- 5. images ----------------------------------------------------------------------------
step "5. Six images, FROM scratch: a static busybox and ${PAYLOAD_MIB} MiB of random bytes each"
# import TAG: a rootfs of /busybox plus a unique payload, streamed into `docker import`.
import() {
    local stage=$work/stage
    rm -rf "$stage"
    mkdir -p "$stage"
    cp /bin/busybox "$stage/busybox"
    head -c "$((PAYLOAD_MIB * 1048576))" /dev/urandom >"$stage/payload"
    tar -C "$stage" -cf - . | docker import --change 'CMD ["/busybox", "true"]' - "$1" >/dev/null
    rm -rf "$stage"
}
for tag in demo/alpha:1 demo/bravo:1 demo/charlie:1 demo/delta:1 demo/web:1 demo/pause:3.9; do
    import "$tag"
done
show docker images
say "usage now: $(usage_line)"

# --- 6. use them in a known order ---------------------------------------------------------
step "6. Use the images in a known order (last use is kept to the millisecond)"
say "Docker records no last-use time; the cleaner follows Docker's events (container create,"
say "start, die, destroy; image pull, tag, import) and keeps the time of each image's last use."
use() {
    show docker "$@"
}
use run --rm --network none demo/delta:1 /busybox true
use run --rm --network none demo/alpha:1 /busybox true
use run --name batch-job --network none demo/charlie:1 /busybox true
use run --rm --network none demo/bravo:1 /busybox true
use run -d --name web --network none --stop-timeout 1 demo/web:1 /busybox sleep 3600
say "demo/pause:3.9 is never used after its import."
say "An image a stopped container references counts as used when that container stopped: charlie"
say "keeps its place (its stopped container batch-job is removed first). So, least recently used"
say "first: delta, alpha, charlie, bravo. web stays: a running container uses it. pause stays: keep"
say "rule."
show docker ps -a

# --- 7. fill the disk ---------------------------------------------------------------------
step "7. Fill the filesystem to ${FILL_TO} % (high watermark ${HIGH} %, low ${LOW} %)"
say "A file beside Docker's data root stands for what else fills a node's disk (logs, writable"
say "layers, volumes). The cleaner cannot remove it: it removes containers and images until the"
say "filesystem as a whole is below the low watermark."
fill_to() {
    local pct=$1 blocks avail bsize want
    for _ in 1 2 3 4 5; do
        read -r blocks avail bsize < <(stat -f -c '%b %a %S' "$work/fs")
        # Free blocks that may stay so that 100 × (1 − avail / blocks) >= pct.
        want=$((blocks * (100 - pct) / 100))
        [ "$avail" -gt "$want" ] || return 0
        fallocate -o "$(stat -c %s "$work/fs/filler" 2>/dev/null || echo 0)" \
            -l "$(((avail - want + 1) * bsize))" "$work/fs/filler"
        sync -f "$work/fs"
    done
    die "could not fill $work/fs to $pct %: $(usage_line)"
}
fill_to "$FILL_TO"
read -r -a before < <(usage)
say "usage now: $(usage_line)"

# --- 8. status ----------------------------------------------------------------------------
step "8. docker-image-cleaner status: usage against the watermarks, and the eviction order"
say "(read-only: it replays the events since the first run, deletes and writes nothing)"
show cleaner status || die "status failed"

# --- 9. one pass --------------------------------------------------------------------------
step "9. One cleaning pass: docker-image-cleaner once"
say "On a Kubernetes node (node_name set) the pass would now cordon the node, as"
say "\`kubectl cordon\` does, before its first removal, and uncordon it after the last one; with"
say "node_name empty the log says \"cordoning is off\" and nothing talks to Kubernetes."
set +e
show cleaner once
rc=$?
set -e
read -r -a after < <(usage)

# --- 10. what went, what stayed -----------------------------------------------------------
step "10. What went and what stayed"
show docker images
show docker ps -a
say "usage before the pass: ${before[0]} % (${before[1]} MiB); after: ${after[0]} % (${after[1]} MiB)"

# --- 11. verdict --------------------------------------------------------------------------
step "11. Did the pass do what was promised?"
present() { docker image inspect "$1" >/dev/null 2>&1 || { echo "$1 is gone"; return 1; }; }
gone() { ! docker image inspect "$1" >/dev/null 2>&1 || { echo "$1 is still there"; return 1; }; }
container_gone() {
    ! docker container inspect "$1" >/dev/null 2>&1 || { echo "container $1 is still there"; return 1; }
}
running() {
    local state
    state=$(docker container inspect -f '{{.State.Status}}' "$1" 2>&1)
    [ "$state" = running ] || { echo "container $1: $state"; return 1; }
}
below_low() {
    awk -v u="${after[0]}" -v l="$LOW" 'BEGIN { exit !(u < l) }' || { echo "${after[0]} % used"; return 1; }
}
exited_ok() { [ "$rc" -eq 0 ] || { echo "exit status $rc"; return 1; }; }
check "once exited 0" exited_ok
check "the stopped container batch-job is gone" container_gone batch-job
check "demo/delta:1, the least recently used image, is gone" gone demo/delta:1
check "demo/alpha:1, the next one, is gone" gone demo/alpha:1
check "demo/charlie:1, the next one (its container stopped before bravo ran), is gone" \
    gone demo/charlie:1
check "demo/bravo:1, the last in line, stays: the pass stopped once below ${LOW} %" \
    present demo/bravo:1
check "demo/web:1 stays: the running container web uses it" present demo/web:1
check "the container web is still running" running web
check "demo/pause:3.9 stays: keep rule ^demo/pause:" present demo/pause:3.9
check "usage went from ${before[0]} % to ${after[0]} %, below the low watermark ${LOW} %" below_low
echo
if [ "$failures" -eq 0 ]; then
    echo "${#results[@]} checks passed: the pass did what this demo said it would."
else
    echo "$failures of ${#results[@]} checks FAILED: the pass did not do what this demo said it would."
    exit 1
fi
