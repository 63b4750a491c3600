#!/usr/bin/env bash
# The real-binary benchmark: generated, time-compressed traces replayed on a real, private
# dockerd beside each real cleaner in turn: ours (the built binary), docuum (from crates.io) and
# the original jupyterhub/docker-image-cleaner (from PyPI). A benchmark, not a test: it asserts
# nothing about time, and CI does not run it. As root on Debian 12:
#
#   sudo scripts/bench-trace.sh
#
# What it does:
#   1. Installs what is missing (docker.io, busybox-static, e2fsprogs, python3-venv), builds the
#      binary, examples/replay and examples/trace_bench in release mode, and installs docuum
#      $DOCUUM_VERSION (`cargo install`) and docker-image-cleaner $ORIGINAL_VERSION (`pip install`
#      in a venv) under target/bench/tools/, once.
#   2. Makes the traces (`replay --bench --emit`, examples/replay/bench.rs): per seed a catalog of
#      $IMAGES images (a shared base layer of one of four families and a layer of their own, 20 to
#      about 190 MiB, $CATALOG_MIB MiB in all) and $USES uses $GAP_MS ms apart on average, with
#      Zipf popularity that drifts, each running a container for 3 to 60 s; other files between
#      3 and 10 % of the disk. One second stands for 25 of a node: the cleaners' intervals and
#      ages are scaled by as much (ours and the original: a check every 12 s; min ages 5 s).
#      The images' `docker save` tarballs are the "registry" (no image can be pulled here): their
#      layers' digests are computed once per seed (examples/trace_bench `prepare`, kept in
#      $TARS), and a tarball is made in memory when a pod loads it (never stored: the disk is
#      shared).
#   3. For every disk size, seed and policy: a fresh ext4 loop filesystem of that size (no blocks
#      reserved for root) under /tmp/dic-bench-trace-<pid>/, a fresh private containerd and
#      dockerd with their data root on it, never the machine's own Docker; the cleaner started on
#      it, with a fake Kubernetes API that records its cordons; then the trace's pods
#      (examples/trace_bench `run`): each loads its image's tarball when the image is missing (a
#      pull; the bytes loaded count as re-pulled when the layers were on the node before), runs a
#      container for its lifetime and removes it; a load that fails is retried with the
#      kubelet's back-off (scaled), and the use is lost after ten scaled minutes. Everything is
#      torn down after each run, and on exit, also after a failure or Ctrl-C.
#   4. Prints the table per disk size and seed, and the means, and writes every run to $CSV.
#      Then the replay runs the same traces through its models of the three cleaners and prints
#      its error against the real runs, per policy (`replay --bench --real $CSV`).
#
# Env:     SEEDS        seeds, space-separated                                   (default "1 2")
#          DISKS        disk sizes, MiB, space-separated                         (default "1600 800")
#          POLICIES     which cleaners: ours docuum original                     (default all three)
#          IMAGES       images in a catalog                                      (default 40)
#          CATALOG_MIB  their unique bytes, MiB                                  (default 1600)
#          USES         uses per trace                                           (default 120)
#          GAP_MS       mean time between two uses, ms                           (default 2500)
#          ENGINE       host: Debian 12's dockerd 20.10; bed: dockerd 28.5 from the engines
#                       test bed (tests/engines/bed.sh, made when missing)       (default host)
#          OURS_ENV     more DOCKER_IMAGE_CLEANER_*=VALUE for ours, space-separated (default none)
#          OURS_LABEL   ours' name in the table and the CSV                      (default ours)
#          DOCUUM_THRESHOLD  docuum's --threshold                                (default 80%)
#          DOCUUM_VERSION, ORIGINAL_VERSION  the peers installed             (0.27.3, 1.0.0b3)
#          CSV          where the runs go          (default target/bench/trace-bench.csv; a new
#                       file each time, the old one kept as .old, unless APPEND=1)
#          TARS         where the layers' digests are kept         (default target/bench/trace-tars)
# Time:    a run lasts the trace ($USES x $GAP_MS ms, 5 minutes with the defaults) plus about a
#          minute (the last containers, starting and stopping the daemon); the defaults make 12
#          runs, about 75 minutes. The first time add the builds (docuum: minutes), and about
#          half a minute per seed for the digests. Disk: one loop filesystem of the run's size
#          at a time under /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

readonly TMP_PREFIX=/tmp/dic-bench-trace-
SEEDS=${SEEDS:-1 2}
DISKS=${DISKS:-1600 800}
POLICIES=${POLICIES:-ours docuum original}
IMAGES=${IMAGES:-40}
CATALOG_MIB=${CATALOG_MIB:-1600}
USES=${USES:-120}
GAP_MS=${GAP_MS:-2500}
ENGINE=${ENGINE:-host}
OURS_ENV=${OURS_ENV:-}
OURS_LABEL=${OURS_LABEL:-ours}
DOCUUM_THRESHOLD=${DOCUUM_THRESHOLD:-80%}
DOCUUM_VERSION=${DOCUUM_VERSION:-0.27.3}
ORIGINAL_VERSION=${ORIGINAL_VERSION:-1.0.0b3}
APPEND=${APPEND:-0}

die() {
    echo "bench-trace: $*" >&2
    exit 2
}
say() { echo "bench-trace: $*" >&2; }
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): it mounts loop filesystems and starts dockerd"
for v in IMAGES CATALOG_MIB USES GAP_MS; do
    case ${!v} in '' | *[!0-9]*) die "$v=${!v}: not a whole number" ;; esac
done
for v in $SEEDS $DISKS; do
    case $v in '' | *[!0-9]*) die "SEEDS and DISKS are whole numbers: $v" ;; esac
done
for p in $POLICIES; do
    case $p in ours | docuum | original) ;; *) die "POLICIES: unknown $p (ours, docuum, original)" ;; esac
done
case $ENGINE in host | bed) ;; *) die "ENGINE=$ENGINE: host or bed" ;; esac
# shellcheck source=packaging/testlib.sh
. packaging/testlib.sh
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_CONFIG DOCKER_TLS_VERIFY DOCKER_CERT_PATH KUBECONFIG RUST_LOG
while read -r var; do unset "$var"; done < <(compgen -e | grep '^DOCKER_IMAGE_CLEANER_' || true)
t_start=$SECONDS

# --- 1. tools, builds, the peers ------------------------------------------------------------
missing=()
{ [ -x "$DOCKERD" ] && [ -x "$DOCKER" ] && [ -x "$CONTAINERD" ]; } || missing+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v sha256sum >/dev/null 2>&1 || missing+=(coreutils)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
target=${CARGO_TARGET_DIR:-$repo/target}
tools=$target/bench/tools
TARS=${TARS:-$target/bench/trace-tars}
CSV=${CSV:-$target/bench/trace-bench.csv}
as_owner() {
    # Under sudo, build as the user who owns the checkout, so target/ does not become root's.
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && [ "$(stat -c %U "$repo")" = "$SUDO_USER" ]; then
        # shellcheck disable=SC2016 # $1 and $@ are expanded by the inner bash
        runuser -u "$SUDO_USER" -- bash -lc 'cd "$1" && shift && "$@"' _ "$repo" "$@"
    else
        "$@"
    fi
}
command -v cargo >/dev/null 2>&1 || [ -n "${SUDO_USER:-}" ] || die "cargo not found: install Rust (https://rustup.rs)"
t=$SECONDS
as_owner cargo build --release --locked --quiet --bin docker-image-cleaner --example replay --example trace_bench ||
    die "cargo build failed"
# Outputs are read whole before grep: with pipefail, `grep -q` closing the pipe early makes the
# writer die of SIGPIPE and the check fail, which reinstalled the venv on every run.
if [ ! -x "$tools/docuum/bin/docuum" ] ||
    ! grep -qF "$DOCUUM_VERSION" <<<"$("$tools/docuum/bin/docuum" --version 2>/dev/null || true)"; then
    say "installing docuum $DOCUUM_VERSION from crates.io into $tools/docuum"
    as_owner cargo install --quiet --locked docuum --version "$DOCUUM_VERSION" --root "$tools/docuum" ||
        die "cargo install docuum failed"
fi
venv=$tools/original-venv
if ! grep -qx "Version: $ORIGINAL_VERSION" <<<"$("$venv/bin/pip" show docker-image-cleaner 2>/dev/null || true)"; then
    say "installing docker-image-cleaner $ORIGINAL_VERSION from PyPI into $venv"
    rm -rf "$venv"
    as_owner python3 -m venv "$venv"
    as_owner "$venv/bin/pip" install --quiet "docker-image-cleaner==$ORIGINAL_VERSION" || die "pip install failed"
fi
build_secs=$((SECONDS - t))
bin=$target/release/docker-image-cleaner
replay=$target/release/examples/replay
driver=$target/release/examples/trace_bench
docuum=$tools/docuum/bin/docuum
original=$venv/bin/docker-image-cleaner
for b in "$bin" "$replay" "$driver" "$docuum" "$original"; do
    [ -x "$b" ] || die "$b missing after the builds"
done
say "builds and installs: $build_secs s (not counted below)"
if [ "$ENGINE" = bed ]; then
    bed_root=$(tests/engines/bed.sh ensure) || die "the engines test bed could not be made"
    cli=$bed_root/usr/bin/docker
    engine_label=docker-28-overlay2
else
    cli=$DOCKER
    engine_label=docker-$("$DOCKERD" --version | sed -n 's/^Docker version \([0-9]*\.[0-9]*\).*/\1/p')-overlay2
fi

# --- 2. traces and tarballs -----------------------------------------------------------------
work=$TMP_PREFIX$$
teardown() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    teardown_dir "$work"
    say "torn down $work; benchmark time $((SECONDS - t_start - build_secs)) s"
    exit "$rc"
}
trap teardown EXIT
trap 'echo; say interrupted; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
sweep_stale "$TMP_PREFIX"
mkdir -p "$work/bin" "$(dirname "$CSV")" "$TARS"
# The runs use copies: a build made meanwhile (cargo is shared) cannot change them midway.
cp "$bin" "$replay" "$driver" "$work/bin/"
bin=$work/bin/docker-image-cleaner
replay=$work/bin/replay
driver=$work/bin/trace_bench
traces=$target/bench/traces
seeds_csv=$(tr ' ' ',' <<<"$SEEDS")
disks_csv=$(tr ' ' ',' <<<"$DISKS")
bench_args=(--bench --bench-seeds "$seeds_csv" --bench-disks "$disks_csv" --bench-images "$IMAGES"
    --bench-catalog-mib "$CATALOG_MIB" --bench-uses "$USES" --bench-gap-ms "$GAP_MS")
as_owner "$replay" "${bench_args[@]}" --emit "$traces" >&2
first_disk=${DISKS%% *}
for seed in $SEEDS; do
    t=$SECONDS
    "$driver" prepare --trace "$traces/trace-s$seed-d$first_disk.json" --tars "$TARS/s$seed" --busybox /bin/busybox
    say "layer digests of seed $seed in $TARS/s$seed: $((SECONDS - t)) s"
done
if [ -f "$CSV" ] && [ "$APPEND" != 1 ]; then
    mv "$CSV" "$CSV.old"
fi

# --- 3. the runs ----------------------------------------------------------------------------
# start_engine DIR: a loop filesystem at DIR/fs (made by the caller) and a dockerd on it.
start_engine() {
    local dir=$1
    if [ "$ENGINE" = host ]; then
        start_dockerd "$dir" "$dir/fs/docker"
        return
    fi
    start_bed_dockerd "$dir" "$dir/fs/docker"
}

n=0
for disk in $DISKS; do
    for seed in $SEEDS; do
        for policy in $POLICIES; do
            n=$((n + 1))
            run=$work/run-$n
            mkdir -p "$run/fs" "$run/bin" "$run/home" "$run/state"
            truncate -s "${disk}M" "$run/fs.img"
            mkfs.ext4 -q -F -m 0 -b 4096 "$run/fs.img"
            mount -o loop "$run/fs.img" "$run/fs"
            start_engine "$run"
            host=unix://$run/docker.sock
            ln -s "$cli" "$run/bin/docker"
            data_root=$run/fs/docker
            common=(--env "DOCKER_HOST=$host")
            case $policy in
                ours)
                    label=$OURS_LABEL
                    env_args=("${common[@]}"
                        --env DOCKER_IMAGE_CLEANER_NODE_NAME=bench-node
                        --env "DOCKER_IMAGE_CLEANER_PATH_TO_CHECK=$data_root"
                        --env "DOCKER_IMAGE_CLEANER_STATE_DIR=$run/state"
                        --env DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS=12
                        --env DOCKER_IMAGE_CLEANER_MIN_AGE_SECONDS=5
                        --env DOCKER_IMAGE_CLEANER_CRITICAL_MIN_AGE_SECONDS=5
                        --env DOCKER_IMAGE_CLEANER_BUILD_CACHE_MIN_AGE_SECONDS=144
                        --env DOCKER_IMAGE_CLEANER_MAX_CORDON_SECONDS=72)
                    for kv in $OURS_ENV; do env_args+=(--env "$kv"); done
                    cmd=("$bin" run)
                    ;;
                docuum)
                    label="docuum $DOCUUM_THRESHOLD"
                    env_args=("${common[@]}" --env "HOME=$run/home" --env "PATH=$run/bin:/usr/bin:/bin"
                        --env LOG_LEVEL=info)
                    cmd=("$docuum" --threshold "$DOCUUM_THRESHOLD")
                    ;;
                original)
                    label="original $ORIGINAL_VERSION"
                    env_args=("${common[@]}"
                        --env DOCKER_IMAGE_CLEANER_NODE_NAME=bench-node
                        --env "DOCKER_IMAGE_CLEANER_PATH_TO_CHECK=$data_root"
                        --env DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS=12)
                    cmd=("$original")
                    ;;
            esac
            say "run $n: $label, disk $disk MiB, seed $seed ($engine_label; load average $(cut -d' ' -f1-3 /proc/loadavg))"
            # setpriv: the cleaner gets SIGTERM when the driver dies, even of a signal of its own.
            "$driver" run --trace "$traces/trace-s$seed-d$disk.json" --tars "$TARS/s$seed" \
                --docker-host "$host" --data-root "$data_root" --filler "$run/fs/other.bin" \
                --work "$run" --policy "$label" --engine "$engine_label" --csv "$CSV" \
                "${env_args[@]}" -- setpriv --pdeathsig TERM -- "${cmd[@]}" ||
                say "run $n failed (its log: kept below)"
            tail -n 3 "$run/cleaner.log" | sed 's/^/    cleaner: /' >&2 || true
            mkdir -p "$target/bench/trace-logs"
            cp "$run/cleaner.log" "$target/bench/trace-logs/run-$n-$policy-d$disk-s$seed.log" 2>/dev/null || true
            teardown_dir "$run"
        done
    done
done

# --- 4. the table and the replay's error ----------------------------------------------------
"$driver" table --csv "$CSV"
"$replay" "${bench_args[@]}" --real "$CSV" || true
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    chown -R "$SUDO_USER:" "$target/bench" 2>/dev/null || true
fi
say "wrote $CSV"
