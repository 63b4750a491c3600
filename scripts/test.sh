#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine: installs what the real-engine, kubectl and
# metrics tests need when it is missing (as root), makes the engines test bed's root
# (tests/engines/bed.sh), then runs every test layer through `cargo test`, the real-engine tests
# once per engine of the matrix, and prints which real-service tests ran on which engine, which
# did not apply, and which were skipped.
#
#   scripts/test.sh                 everything: unit tests, the integration tests, the matrix
#   scripts/test.sh --host-only     without the matrix (the host's Docker 20.10 and Podman 4.3)
#   scripts/test.sh [...] -- ARGS   ARGS go to every test binary (a name filter, --nocapture)
#
# The phases, in order (each one runs even when an earlier one failed, so a failing unit test
# cannot hide the integration suite; the verdict names each phase that failed):
#   unit         cargo test --lib --bins --examples, and the doc tests
#   integration  cargo test --test it, on the host's engines: Docker 20.10, Podman 4.3 and
#                containerd 1.6 with its CRI (Debian 12)
#   matrix       the tests that ran against a real dockerd or Podman in "integration", again on
#                Docker 28 (overlay2) with Podman 5.8, then on Docker 28 with the containerd image
#                store (DIC_TEST_DOCKER, DIC_TEST_PODMAN: tests/it/util/bed.rs); then the CRI
#                tests (those that ran or did not apply on containerd 1.6) on the bed's
#                containerd 2.1, with Docker 28 where a test has a Docker too (DIC_TEST_CRI:
#                tests/it/util/cri.rs)
#
# The real-engine tests start their own private dockerd, or rootful `podman system service`, on a
# loop-mounted ext4 filesystem; they never touch the machine's default daemon or Podman storage.
# Every real-service check appends a line to the ledger (tests/it/util/ledger.rs documents its
# format): `ran|skipped|na<TAB>service<TAB>engine<TAB>test<TAB>reason`, and every engine started
# a line `engine<TAB>service<TAB>engine<TAB>-<TAB>version`. This script empties it before the first
# phase and summarises it after the last, writing the matrix's table to
# target/engines-matrix.md (the README's "Engines and the versions tested" is copied from it).
#
# CI rule (the same as require.rs): CI set to a non-empty value other than "false" or "0". Under
# CI a missing service already fails its test; on top of that this script fails when an engine
# of the matrix ran no test, or when any real-service test was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${CI:-}" in
    "" | false | 0) ci=false ;;
    *) ci=true ;;
esac

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
# Rootful Podman needs no uidmap, slirp4netns or fuse-overlayfs (no user namespace, no network,
# kernel overlayfs); it brings conmon. The harness configures the CNI backend, so name its
# plugins (podman's container-network-stack could otherwise be netavark), and runc, the runtime
# both engines use (podman alone would pick crun).
command -v podman >/dev/null 2>&1 || missing+=(podman)
dpkg -s containernetworking-plugins >/dev/null 2>&1 || missing+=(containernetworking-plugins)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
# The CRI engine's tests run a private containerd 1.6 with its CRI plugin (and its ctr).
[ -x /usr/bin/containerd ] && [ -x /usr/bin/ctr ] || missing+=(containerd)
# The test images are FROM scratch around a static busybox.
# The build generates containerd's gRPC client with protoc.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
# The engines test bed: debootstrap makes its root; unshare and nsenter (util-linux) run it.
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
# The metrics tests: promtool (in Debian's prometheus) checks the format, and the node_exporter
# reads the textfile. The tests start their own exporter on a free loopback port.
services=()
command -v promtool >/dev/null 2>&1 || { missing+=(prometheus); services+=(prometheus.service); }
command -v prometheus-node-exporter >/dev/null 2>&1 || {
    missing+=(prometheus-node-exporter)
    services+=(prometheus-node-exporter.service)
}
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
        # Installed for their tools only: the services their packages start are not wanted here.
        if [ ${#services[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
            systemctl disable --now "${services[@]}" >/dev/null 2>&1 || true
        fi
    else
        echo "warning: missing ${missing[*]}; the real-engine tests will be skipped (run as root to install)" >&2
    fi
fi

host_only=false
cargo_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --host-only) host_only=true ;;
        --) shift; cargo_args=("$@"); break ;;
        *) echo "usage: scripts/test.sh [--host-only] [-- ARGS for the test binaries]" >&2; exit 2 ;;
    esac
    shift
done

target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
DIC_TEST_LEDGER="$(cd "$target_dir" && pwd)/real-services.ledger"
export DIC_TEST_LEDGER
: >"$DIC_TEST_LEDGER"
matrix_table="$(cd "$target_dir" && pwd)/engines-matrix.md"

failed=()
phase() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo
    echo "== $name: $*"
    "$@" || rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

# The engines test bed's root, before any test needs it.
if [ "$host_only" = false ]; then
    if [ "$(id -u)" -eq 0 ]; then
        phase "bed" tests/engines/bed.sh ensure
    elif [ "$ci" = true ]; then
        echo "error: CI is set and the engines test bed needs root (tests/engines/bed.sh ensure)" >&2
        failed+=("bed")
    else
        echo "warning: not root: the engines matrix (Docker 28, Podman 5.8) is left out" >&2
        host_only=true
    fi
fi

export DIC_TEST_DOCKER=host DIC_TEST_PODMAN=host
phase "unit" cargo test --locked --lib --bins --examples -- "${cargo_args[@]}"
phase "doc" cargo test --locked --doc -- "${cargo_args[@]}"
phase "integration" cargo test --locked --test it -- "${cargo_args[@]}"

# The matrix: every test that ran against an engine on the host's, on the newer engines.
if [ "$host_only" = false ]; then
    mapfile -t engine_tests < <(awk -F'\t' '$1 == "ran" && ($2 == "dockerd" || $2 == "podman") { print $4 }' \
        "$DIC_TEST_LEDGER" | sort -u)
    mapfile -t docker_tests < <(awk -F'\t' '$1 == "ran" && $2 == "dockerd" { print $4 }' "$DIC_TEST_LEDGER" | sort -u)
    if [ ${#engine_tests[@]} -eq 0 ]; then
        echo "no test ran against an engine on the host: nothing for the matrix" >&2
        failed+=("matrix")
    else
        DIC_TEST_DOCKER=bed DIC_TEST_PODMAN=bed \
            phase "matrix: Docker 28 overlay2, Podman 5.8 (${#engine_tests[@]} tests)" \
            cargo test --locked --test it -- --exact "${engine_tests[@]}" "${cargo_args[@]}"
        DIC_TEST_DOCKER=bed-containerd \
            phase "matrix: Docker 28 containerd store (${#docker_tests[@]} tests)" \
            cargo test --locked --test it -- --exact "${docker_tests[@]}" "${cargo_args[@]}"
    fi
    # The CRI tests on containerd 2.1, those that did not apply to 1.6 included.
    mapfile -t cri_tests < <(awk -F'\t' '($1 == "ran" || $1 == "na") && $2 == "cri" { print $4 }' \
        "$DIC_TEST_LEDGER" | sort -u)
    if [ ${#cri_tests[@]} -eq 0 ]; then
        echo "no CRI test ran on the host's containerd: nothing for the matrix" >&2
        failed+=("matrix: CRI")
    else
        DIC_TEST_CRI=bed DIC_TEST_DOCKER=bed \
            phase "matrix: containerd 2.1 CRI (${#cri_tests[@]} tests)" \
            cargo test --locked --test it -- --exact "${cri_tests[@]}" "${cargo_args[@]}"
    fi
fi

# The summary: per service and engine, how many distinct tests ran, did not apply and were
# skipped; each test that did not apply or was skipped, with the reason; the matrix's table.
echo
echo "== real-service tests (ledger: $DIC_TEST_LEDGER)"
summary="$(awk -F'\t' -v table="$matrix_table" '
    function key(e) { return $2 ($3 == "-" ? "" : " on " $3) }
    $1 == "engine" { if (!(($3) in version)) { version[$3] = $5; order[++engines] = $3 }; next }
    $1 != "ran" && $1 != "skipped" && $1 != "na" { bad++; next }
    !seen[$1 FS $2 FS $3 FS $4]++ {
        k = key()
        if (!(k in known)) { known[k] = 1; names[++n] = k }
        count[$1, k]++
        if ($3 != "-") per_engine[$1, $3]++
        if ($1 == "skipped") { skips[++skipped_total] = sprintf("%-28s %s: %s", k, $4, $5) }
        if ($1 == "na") { nas[++na_total] = sprintf("%-28s %s: %s", k, $4, $5) }
        if ($1 == "ran") ran_total++
    }
    END {
        for (i = 2; i <= n; i++) { v = names[i]; for (j = i - 1; j > 0 && names[j] > v; j--) names[j + 1] = names[j]; names[j + 1] = v }
        for (i = 1; i <= n; i++) {
            k = names[i]
            printf "  %-34s ran %3d   n/a %3d   skipped %3d\n", k, count["ran", k] + 0, count["na", k] + 0, count["skipped", k] + 0
        }
        if (na_total > 0) { print "did not apply (the engine lacks what the test needs):"; for (i = 1; i <= na_total; i++) print "  " nas[i] }
        if (skipped_total > 0) { print "skipped:"; for (i = 1; i <= skipped_total; i++) print "  " skips[i] }
        if (bad > 0) print "ledger: " bad " malformed line(s)"
        print "| flavour | engine, API, image store | tests ran | did not apply |" > table
        print "|---|---|---|---|" > table
        silent = ""
        for (i = 1; i <= engines; i++) {
            e = order[i]
            printf "| `%s` | %s | %d | %d |\n", e, version[e], per_engine["ran", e] + 0, per_engine["na", e] + 0 > table
            if (per_engine["ran", e] + 0 == 0) silent = silent " " e
        }
        printf "real-service tests: %d ran, %d did not apply, %d skipped; engines: %d\n", ran_total, na_total, skipped_total, engines
        printf "ENGINES=%d SILENT=\"%s\" DOCKERD_RAN=%d PODMAN_RAN=%d CRI_RAN=%d SKIPPED=%d BAD=%d\n", engines, silent, per_engine["ran", "docker-host"] + 0, per_engine["ran", "podman-host"] + 0, per_engine["ran", "cri-host"] + 0, skipped_total + 0, bad + 0
    }' "$DIC_TEST_LEDGER")"
# The last line is for this script, not for people.
counts="${summary##*$'\n'}"
printf '%s\n' "${summary%$'\n'*}"
eval "$counts"
echo
echo "== the matrix ($matrix_table)"
cat "$matrix_table"

problems=()
[ "$DOCKERD_RAN" -gt 0 ] || problems+=("no test ran against a real dockerd")
[ "$PODMAN_RAN" -gt 0 ] || problems+=("no test ran against a real Podman")
[ "$CRI_RAN" -gt 0 ] || problems+=("no test ran against a real containerd's CRI")
if [ "$host_only" = false ]; then
    [ "$ENGINES" -ge 7 ] || problems+=("only $ENGINES of the 7 engines of the matrix answered")
fi
[ -z "$SILENT" ] || problems+=("engines that ran no test:$SILENT")
[ "$SKIPPED" -eq 0 ] || problems+=("$SKIPPED real-service test(s) were skipped")
[ "$BAD" -eq 0 ] || problems+=("the ledger has $BAD malformed line(s)")

echo
status=0
if [ ${#failed[@]} -gt 0 ]; then
    status=1
fi
if [ ${#problems[@]} -gt 0 ]; then
    if [ "$ci" = true ]; then
        status=1
        failed+=("ledger: $(IFS=';'; echo "${problems[*]}")")
    else
        printf 'warning: %s (with CI set this fails)\n' "${problems[@]}" >&2
    fi
fi
if [ "$status" -eq 0 ]; then
    echo "test.sh: PASS (unit, doc, integration$([ "$host_only" = false ] && echo ", matrix of $ENGINES engines"))"
else
    echo "test.sh: FAIL: $(IFS=','; echo "${failed[*]}")"
fi
exit "$status"
