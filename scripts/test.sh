#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine: installs what the real-engine, kubectl and
# metrics tests need when it is missing (as root), then runs every test layer through `cargo test` and
# prints which real-service tests ran and which were skipped.
#
# The real-engine tests start their own private dockerd, or rootful `podman system service`, on a
# loop-mounted ext4 filesystem; they never touch the machine's default daemon or Podman storage. Every real-service check appends a line to the ledger
# (tests/it/util/require.rs documents its format): `ran|skipped<TAB>service<TAB>test<TAB>reason`.
# This script empties it before `cargo test` and summarises it after.
#
# CI rule (the same as require.rs): CI set to a non-empty value other than "false" or "0". Under
# CI a missing service already fails its test; on top of that this script fails when no test ran
# against a real dockerd or a real Podman, or when any real-service test was skipped.
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
# The test images are FROM scratch around a static busybox.
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
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

target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
DIC_TEST_LEDGER="$(cd "$target_dir" && pwd)/real-services.ledger"
export DIC_TEST_LEDGER
: >"$DIC_TEST_LEDGER"

status=0
cargo test --locked "$@" || status=$?

# The summary: per service, how many distinct tests ran and were skipped; then each skip.
echo
echo "== real-service tests (ledger: $DIC_TEST_LEDGER)"
summary="$(awk -F'\t' '
    $1 != "ran" && $1 != "skipped" { bad++; next }
    !seen[$1 FS $2 FS $3]++ {
        services[$2] = 1
        if ($1 == "ran") { ran[$2]++; ran_total++ }
        else { skipped[$2]++; skipped_total++; skips[skipped_total] = sprintf("%-14s %s: %s", $2, $3, $4) }
    }
    END {
        n = 0
        for (s in services) names[++n] = s
        # Sort the service names (insertion sort: a handful of them).
        for (i = 2; i <= n; i++) { v = names[i]; for (j = i - 1; j > 0 && names[j] > v; j--) names[j + 1] = names[j]; names[j + 1] = v }
        per = ""
        for (i = 1; i <= n; i++) {
            s = names[i]
            printf "  %-14s ran %3d   skipped %3d\n", s, ran[s] + 0, skipped[s] + 0
            per = per (per == "" ? "" : ", ") s " " ran[s] + 0
        }
        if (skipped_total > 0) {
            print "skipped:"
            for (i = 1; i <= skipped_total; i++) print "  " skips[i]
        }
        if (bad > 0) print "ledger: " bad " malformed line(s)"
        printf "real-service tests: %d ran (%s), %d skipped\n", ran_total, (per == "" ? "none" : per), skipped_total
        printf "DOCKERD_RAN=%d PODMAN_RAN=%d SKIPPED=%d BAD=%d\n", ran["dockerd"] + 0, ran["podman"] + 0, skipped_total + 0, bad + 0
    }' "$DIC_TEST_LEDGER")"
# The last line is for this script, not for people.
counts="${summary##*$'\n'}"
printf '%s\n' "${summary%$'\n'*}"
eval "$counts"

if [ "$ci" != true ] && [ "$DOCKERD_RAN" -eq 0 ]; then
    echo "warning: no test ran against a real dockerd (with CI set this fails)" >&2
fi
if [ "$ci" != true ] && [ "$PODMAN_RAN" -eq 0 ]; then
    echo "warning: no test ran against a real Podman (with CI set this fails)" >&2
fi
if [ "$ci" = true ]; then
    if [ "$DOCKERD_RAN" -eq 0 ]; then
        echo "error: CI is set and no test ran against a real dockerd" >&2
        [ "$status" -ne 0 ] || status=1
    fi
    if [ "$PODMAN_RAN" -eq 0 ]; then
        echo "error: CI is set and no test ran against a real Podman" >&2
        [ "$status" -ne 0 ] || status=1
    fi
    if [ "$SKIPPED" -gt 0 ]; then
        echo "error: CI is set and $SKIPPED real-service test(s) were skipped" >&2
        [ "$status" -ne 0 ] || status=1
    fi
    if [ "$BAD" -gt 0 ]; then
        echo "error: CI is set and the ledger has $BAD malformed line(s)" >&2
        [ "$status" -ne 0 ] || status=1
    fi
fi
exit "$status"
