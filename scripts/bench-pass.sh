#!/usr/bin/env bash
# Benchmark the cost of a cleaning pass and of `status` on a real, private dockerd: a
# benchmark, not a test (it asserts nothing about time; it fails only when a pass did not
# remove what it was given). As root on Debian 12:
#
#   sudo scripts/bench-pass.sh
#
# What it does:
#   1. Installs what is missing (docker.io, busybox-static, e2fsprogs), as scripts/demo.sh does,
#      and builds the binary and examples/pass_cost in release mode (cargo build).
#   2. Starts a private containerd and dockerd (packaging/testlib.sh) whose data root is on a
#      loop-mounted ext4 filesystem of $FS_MIB MiB under /tmp/dic-bench-pass-<pid>/. It never
#      touches the machine's own Docker (/var/run/docker.sock, /var/lib/docker) or containerd.
#   3. Writes docker-save tarballs by hand (no image can be pulled): the set a pass removes,
#      $IMAGES images sharing a busybox layer, each with a layer of its own of $PAYLOAD_MIB MiB of
#      random bytes in $FILES files; $MANY images for `status` that differ only by a label and
#      share one tiny layer (one `docker load` instead of $MANY imports); and one image per load
#      worker.
#   4. Runs examples/pass_cost, which drives the library's `cycle::Pass` against that daemon:
#      each pass removes the whole set (loaded again before each), timed call by call, for
#      delay_seconds = 1 (the default), 0, and "adaptive" (none after a removal answered within
#      250 ms, after a slower one a pause as long as it took, at most 10 s). On an idle daemon, then under load: $LOAD_WORKERS workers load an image of
#      $LOAD_MIB MiB and delete it again in a loop, and a thread rewrites and flushes a file on
#      the same filesystem. Throughout, a
#      probe lists dockerd's images every 100 ms: the latency another client sees. Then
#      `status` and `status --json` of the built binary against `docker image ls -q` +
#      `docker ps -aq`, and the pieces of a status in-process (`policy::plan` among them).
#      It prints tables of medians and writes target/bench/pass-cost.csv and status-cost.csv.
#   5. Tears everything down on exit, also after a failure or Ctrl-C; what a killed run left
#      behind is removed by the next run first.
#
# Env:     REPS          passes of delay 0 and of the adaptive pause, idle          (default 3)
#          LOADED_REPS   the same under load (0: nothing under load)                (default 3)
#          SLOW_REPS     passes of delay_seconds = 1, idle and under load each      (default 1)
#                        (49 s of sleep each, whose length does not vary)
#          IMAGES        images a pass removes                                      (default 50)
#          PAYLOAD_MIB   random bytes in each of their own layers                   (default 4)
#          FILES         files those bytes are split into                           (default 256)
#          MANY          images for status (0: no status part)                      (default 5000)
#          STATUS_ROUNDS rounds of each status command                              (default 7)
#          LOAD_WORKERS  concurrent load-and-delete loops under load                (default 2)
#          LOAD_MIB      size of each load worker's image                           (default 32)
#          LOAD_FILES    files it is split into                                     (default 64)
#          DISK_WRITER   1: under load, the file writer runs too (0: not)           (default 1)
#          FS_MIB        the loop filesystem                                        (default 2048)
# Time:    about 6 minutes with the defaults on a 2-core machine that other work kept busy (load
#          average 3 to 5): 104 s of it is the two delay_seconds = 1 passes sleeping, and much of
#          the rest is loading the set again before each pass (about 9 s each there). Add the
#          release build (minutes from scratch) and, on a fresh machine, apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

readonly TMP_PREFIX=/tmp/dic-bench-pass-
REPS=${REPS:-3}
LOADED_REPS=${LOADED_REPS:-3}
SLOW_REPS=${SLOW_REPS:-1}
IMAGES=${IMAGES:-50}
PAYLOAD_MIB=${PAYLOAD_MIB:-4}
FILES=${FILES:-256}
MANY=${MANY:-5000}
STATUS_ROUNDS=${STATUS_ROUNDS:-7}
LOAD_WORKERS=${LOAD_WORKERS:-2}
LOAD_MIB=${LOAD_MIB:-32}
LOAD_FILES=${LOAD_FILES:-64}
DISK_WRITER=${DISK_WRITER:-1}
FS_MIB=${FS_MIB:-2048}

die() {
    echo "bench-pass: $*" >&2
    exit 2
}
say() { echo "bench-pass: $*" >&2; }
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): it mounts a loop filesystem and starts dockerd"
for v in REPS LOADED_REPS SLOW_REPS IMAGES PAYLOAD_MIB FILES MANY STATUS_ROUNDS LOAD_WORKERS LOAD_MIB LOAD_FILES DISK_WRITER FS_MIB; do
    case ${!v} in '' | *[!0-9]*) die "$v=${!v}: not a whole number" ;; esac
done
for v in IMAGES FILES LOAD_FILES STATUS_ROUNDS; do
    [ "${!v}" -ge 1 ] || die "$v=${!v}: must be at least 1"
done
[ "$LOADED_REPS" -eq 0 ] || [ "$LOAD_WORKERS" -ge 1 ] || die "LOADED_REPS=$LOADED_REPS needs LOAD_WORKERS >= 1"
# Private containerd and dockerd, teardown: shared with the demo and the packaging tests.
# shellcheck source=packaging/testlib.sh
. packaging/testlib.sh
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_CONFIG DOCKER_TLS_VERIFY DOCKER_CERT_PATH KUBECONFIG RUST_LOG
while read -r var; do unset "$var"; done < <(compgen -e | grep '^DOCKER_IMAGE_CLEANER_' || true)
t_start=$SECONDS

# --- 1. tools and build -------------------------------------------------------------------
missing=()
{ [ -x "$DOCKERD" ] && [ -x "$DOCKER" ] && [ -x "$CONTAINERD" ]; } || missing+=(docker.io)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
command -v sha256sum >/dev/null 2>&1 && command -v split >/dev/null 2>&1 || missing+=(coreutils)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get; on a machine booted with systemd Debian starts its own docker.service, which this never talks to)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
target=${CARGO_TARGET_DIR:-$repo/target}
build=(cargo build --release --locked --quiet --bin docker-image-cleaner --example pass_cost)
t=$SECONDS
# Under sudo, build as the user who owns the checkout, so target/ does not become root's.
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && [ "$(stat -c %U "$repo")" = "$SUDO_USER" ]; then
    # shellcheck disable=SC2016 # $1 and $@ are expanded by the inner bash
    runuser -u "$SUDO_USER" -- bash -lc 'cd "$1" && shift && "$@"' _ "$repo" "${build[@]}" ||
        die "cargo build failed (is Rust installed for $SUDO_USER? https://rustup.rs)"
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
    "${build[@]}" || die "cargo build failed"
fi
build_secs=$((SECONDS - t))
bin=$target/release/docker-image-cleaner
bench=$target/release/examples/pass_cost
for b in "$bin" "$bench"; do
    [ -x "$b" ] || die "$b missing after cargo build"
done
say "cargo build --release: $build_secs s (not counted below)"

# --- 2. a private dockerd -----------------------------------------------------------------
work=$TMP_PREFIX$$
teardown() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    teardown_dir "$work"
    say "torn down $work; benchmark time $((SECONDS - t_start - build_secs)) s (cargo build $build_secs s more)"
    exit "$rc"
}
trap teardown EXIT
trap 'echo; say interrupted; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
sweep_stale "$TMP_PREFIX"
mkdir -p "$work/fs" "$work/tars" "$work/run" "$work/stage"
truncate -s "${FS_MIB}M" "$work/fs.img"
mkfs.ext4 -q -F -b 4096 "$work/fs.img"
dev=$(losetup --find --show "$work/fs.img")
mount -t ext4 "$dev" "$work/fs"
start_dockerd "$work" "$work/fs/docker"
host=unix://$work/docker.sock
arch=$("$DOCKER" --config "$work/cli" -H "$host" version -f '{{.Server.Arch}}')
say "dockerd --data-root $work/fs/docker on a ${FS_MIB} MiB ext4 loop filesystem ($dev), $host"

# --- 3. the tarballs ----------------------------------------------------------------------
# Staged on a tmpfs (thousands of small files: on this machine's disk five times slower), which
# holds one tarball's layers at a time; the tarballs themselves are written to the disk.
mount -t tmpfs -o size=$((IMAGES * PAYLOAD_MIB + 4 * (PAYLOAD_MIB > LOAD_MIB ? PAYLOAD_MIB : LOAD_MIB) + 64))m tmpfs "$work/stage"
# make_save OUT BASE COUNT TAG_FORMAT PAYLOAD_KIB FILES: a docker-save tarball of COUNT images,
# each tagged with TAG_FORMAT (printf, the image's number), all sharing one base layer (BASE:
# `busybox`, the static busybox, or `tiny`, one small file), each with a layer of its own of
# PAYLOAD_KIB KiB of random bytes split into FILES files (none when PAYLOAD_KIB is 0). Image
# configs differ by a label, so every image has an id of its own.
make_save() {
    local out=$1 base=$2 count=$3 format=$4 payload_kib=$5 files=$6
    local d=$work/stage/save st i c diff_ids layers hist tag base_id own sep=''
    rm -rf "$d"
    mkdir -p "$d/base" "$d/stage"
    st=$d/stage
    if [ "$base" = busybox ]; then cp /bin/busybox "$st/busybox"; else printf 'tiny\n' >"$st/tiny"; fi
    tar --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$d/base/layer.tar" -C "$st" .
    base_id=$(sha256sum "$d/base/layer.tar" | cut -d' ' -f1)
    rm -rf "$st" && mkdir -p "$st"
    {
        printf '['
        for ((i = 1; i <= count; i++)); do
            # Creation times a second apart: the least recently used order is the numbering.
            printf -v c '2024-01-01T%02d:%02d:%02dZ' $((i / 3600 % 24)) $((i / 60 % 60)) $((i % 60))
            # shellcheck disable=SC2059 # the format is the caller's tag pattern
            printf -v tag "$format" "$i"
            diff_ids="\"sha256:$base_id\"" layers='"base/layer.tar"'
            hist="{\"created\":\"$c\",\"created_by\":\"base\"}"
            if [ "$payload_kib" -gt 0 ]; then
                head -c $((payload_kib * 1024)) /dev/urandom >"$st/payload"
                mkdir -p "$st/p$i" "$d/l$i"
                split -n "$files" -a 5 "$st/payload" "$st/p$i/f"
                rm "$st/payload"
                tar --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$d/l$i/layer.tar" -C "$st" "p$i"
                own=$(sha256sum "$d/l$i/layer.tar" | cut -d' ' -f1)
                rm -rf "${st:?}/p$i"
                diff_ids+=",\"sha256:$own\"" layers+=",\"l$i/layer.tar\""
                hist+=",{\"created\":\"$c\",\"created_by\":\"payload $i\"}"
            fi
            printf '{"architecture":"%s","os":"linux","created":"%s","config":{"Cmd":["/busybox","true"],"Labels":{"bench.image":"%d"}},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[%s]}' \
                "$arch" "$c" "$i" "$diff_ids" "$hist" >"$d/c$i.json"
            printf '%s{"Config":"c%d.json","RepoTags":["%s"],"Layers":[%s]}' "$sep" "$i" "$tag" "$layers"
            sep=,
        done
        printf ']'
    } >"$d/manifest.json"
    rmdir "$st"
    tar -cf "$out" -C "$d" .
    rm -rf "$d"
}
t=$SECONDS
make_save "$work/tars/set.tar" busybox "$IMAGES" 'bench/img%02d:1' $((PAYLOAD_MIB * 1024)) "$FILES"
status_args=(--many "$MANY" --status-rounds "$STATUS_ROUNDS")
if [ "$MANY" -gt 0 ]; then
    make_save "$work/tars/many.tar" tiny "$MANY" 'many/img:%d' 0 1
    status_args+=(--many-tar "$work/tars/many.tar")
fi
load_args=()
for ((k = 1; k <= LOAD_WORKERS; k++)); do
    make_save "$work/tars/load-$k.tar" busybox 1 "load/w$k:%d" $((LOAD_MIB * 1024)) "$LOAD_FILES"
    load_args+=(--load-tar "$work/tars/load-$k.tar")
done
[ "$DISK_WRITER" -eq 0 ] || load_args+=(--disk-writer "$work/fs/disk-writer.bin")
say "tarballs: $IMAGES images of $PAYLOAD_MIB MiB in $FILES files, $MANY tiny images, $LOAD_WORKERS load images of $LOAD_MIB MiB: $((SECONDS - t)) s"

# --- 4. the benchmark ---------------------------------------------------------------------
out=$target/bench
mkdir -p "$out"
"$bench" --docker-host "$host" --data-root "$work/fs/docker" \
    --set-tar "$work/tars/set.tar" --images "$IMAGES" \
    "${status_args[@]}" "${load_args[@]}" \
    --binary "$bin" --docker-cli "$DOCKER" --cli-config "$work/cli" --work "$work/run" \
    --out-dir "$out" --reps "$REPS" --loaded-reps "$LOADED_REPS" --slow-reps "$SLOW_REPS"
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    chown -R "$SUDO_USER:" "$out" 2>/dev/null || true
fi
