#!/usr/bin/env bash
# Install test in a real systemd: the packages from dist/ (packaging/build.sh) installed, run,
# reloaded, stopped, upgraded and purged in a Debian 12 container whose PID 1 is systemd.
#
#   packaging/build.sh && packaging/test-install.sh
#   packaging/test-install.sh --rootfs-only    # only build the cached debootstrap tree
#
# Needs root, Debian's docker.io (dockerd and its 20.10 CLI), debootstrap (installed when
# missing), mkfs.ext4 and losetup. It never touches the machine's own Docker daemon: it starts
# two private ones, each with its own containerd, under /tmp/dic-inst-<pid>/ and removes
# everything it made on exit, also on failure or Ctrl-C (and the leftovers of an earlier run
# that was killed). The functions it shares with test-packer.sh are in testlib.sh.
# The two daemons:
#   dockerd "sys"  (a/, data root on /tmp) runs the systemd container;
#   dockerd "node" (b/, data root on a 256 MiB loop ext4) is the node's Docker as the cleaner
#                  sees it: its socket is bound into the container as /run/docker.sock and its
#                  data root, read-only, as /var/lib/docker.
# The debootstrap tree is cached as a tarball in $DIC_ROOTFS_CACHE (default
# /var/cache/dic-test-rootfs); delete the directory to rebuild it.
#
# Prints PASS or FAIL per check and a summary; exits 1 when any check failed, 2 when the test
# could not run at all.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly NAME=docker-image-cleaner
readonly UNIT=$NAME.service
readonly TMP_PREFIX=/tmp/dic-inst-
# Bounds, in seconds.
readonly BOOT_BOUND=120  # systemd in the container reaching running/degraded
readonly START_BOUND=60  # the service from `systemctl start` to active (READY=1)
readonly CMD_BOUND=180   # any single command

die() {
    echo "test-install.sh: $*" >&2
    exit 2
}
# Results (pass, fail, check, summary), the private dockerds, teardown, the debootstrap tree.
. packaging/testlib.sh

# --- preconditions --------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "must run as root (dockerd, mount, losetup)"
for tool in "$DOCKERD" "$DOCKER"; do
    [ -x "$tool" ] || die "$tool missing (apt-get install docker.io)"
done
for tool in mkfs.ext4 losetup mount umount tar systemd-analyze; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool missing"
done
# --- teardown -----------------------------------------------------------------------------
# Everything this run starts lives under $work: processes are found by their command line
# naming it, mounts by their mount point under it, the loop device by its backing file.
work=$TMP_PREFIX$$
container=
cleanup() {
    local rc=$?
    set +e
    if [ -n "$container" ] && [ -S "$work/a/docker.sock" ]; then
        if [ "$failures" -gt 0 ] || [ "$rc" -ne 0 ]; then
            echo "== journal of $UNIT in the container (last 40 lines)"
            timeout 20 "$DOCKER" -H "unix://$work/a/docker.sock" exec "$container" \
                journalctl -u "$UNIT" --no-pager -n 40 2>&1
        fi
        timeout 60 "$DOCKER" -H "unix://$work/a/docker.sock" rm -f "$container" >/dev/null 2>&1
    fi
    teardown_dir "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Leftovers of runs that were killed before their trap ran.
sweep_stale "$TMP_PREFIX"
mkdir -p "$work"/a "$work"/b/fs "$work"/pkgs "$work"/cli

# --- rootfs -------------------------------------------------------------------------------
ensure_rootfs

if [ "${1:-}" = "--rootfs-only" ]; then
    exit 0
fi

# --- packages -----------------------------------------------------------------------------
arch=$(dpkg --print-architecture)
shopt -s nullglob
debs=(dist/"${NAME}"_*_"$arch".deb)
rpms=(dist/"$NAME"-*.rpm)
shopt -u nullglob
if [ ${#debs[@]} -ne 1 ] || [ ${#rpms[@]} -ne 1 ]; then
    die "expected one .deb and one .rpm in dist/ (run packaging/build.sh first); found: ${debs[*]} ${rpms[*]}"
fi
deb=${debs[0]}
rpm_file=${rpms[0]}
deb_version=$(dpkg-deb -f "$deb" Version)
bin=target/release/$NAME
[ -x "$bin" ] || die "$bin missing (run packaging/build.sh first)"
[ -f target/packaging/$NAME.1.gz ] || die "man page missing (run packaging/build.sh first)"

# --- host-side unit checks ----------------------------------------------------------------
echo "== systemd-analyze (host, systemd $(systemd-analyze --version | awk 'NR==1{print $2}'))"
# verify needs ExecStart's and ExecReload's binary to exist: a copy of the unit points at the
# built one.
mkdir -p "$work/unit"
sed -E "s|^(ExecStart\|ExecReload)=/usr/bin/$NAME|\1=$PWD/$bin|" systemd/$UNIT >"$work/unit/$UNIT"
check "systemd-analyze verify $UNIT" systemd-analyze verify --man=no "$work/unit/$UNIT"
security=$(systemd-analyze security --offline=yes "$work/unit/$UNIT" 2>&1 || true)
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$security")
echo "$security" | tail -n 1
# 3.0 and below is what systemd calls OK or better; --threshold counts in tenths.
check "systemd-analyze security exposure ${exposure:-?} <= 3.0" \
    systemd-analyze security --offline=yes --threshold=30 "$work/unit/$UNIT"

# --- two private dockerds -----------------------------------------------------------------
da() { timeout "$CMD_BOUND" "$DOCKER" --config "$work/cli" -H "unix://$work/a/docker.sock" "$@"; }
echo "== private dockerds"
start_dockerd "$work/a" "$work/a/data"
truncate -s 256M "$work/b/fs.img"
mkfs.ext4 -q -F "$work/b/fs.img"
mount -o loop "$work/b/fs.img" "$work/b/fs"
start_dockerd "$work/b" "$work/b/fs/docker"

echo "== docker import"
t=$SECONDS
image=dic-test-rootfs:$key
da import "$rootfs" "$image" >/dev/null
echo "import: $((SECONDS - t)) s"

cp "$deb" "$rpm_file" "$work/pkgs/"
# Upgrade packages: the same files at a higher version.
deb2_version=$deb_version+upgrade1
cargo deb --no-build --locked --quiet --deb-version "$deb2_version" --output "$work/pkgs/upgrade.deb" >/dev/null
cargo generate-rpm --set-metadata 'release = "2"' --output "$work/pkgs/upgrade.rpm" >/dev/null

echo "== boot systemd (cgroup $(stat -fc %T /sys/fs/cgroup): $(test -d /sys/fs/cgroup/unified && echo hybrid v1+v2 || echo see above))"
container=dic-inst-$$
da run -d --name "$container" --hostname dic-node "${SYSTEMD_RUN_ARGS[@]}" \
    -v "$work/b/docker.sock:/run/docker.sock" -v "$work/b/fs/docker:/var/lib/docker:ro" \
    -v "$work/pkgs:/pkgs:ro" \
    "$image" /lib/systemd/systemd >/dev/null
c() { timeout "$CMD_BOUND" "$DOCKER" --config "$work/cli" -H "unix://$work/a/docker.sock" exec "$container" "$@"; }
wait_systemd "$BOOT_BOUND" c
case $systemd_state in
running | degraded) pass "systemd boots in the container ($systemd_state)" ;;
*)
    fail "systemd boots in the container" "$systemd_state"
    da logs "$container" 2>&1 | tail -n 30
    summary
    exit 1
    ;;
esac

# --- helpers on the service ---------------------------------------------------------------
prop() { c systemctl show -p "$1" --value "$UNIT"; }
# expect_prop PROP VALUE: prints the actual value when it differs.
expect_prop() {
    local v
    v=$(prop "$1")
    [ "$v" = "$2" ] || {
        echo "$1=$v, expected $2"
        return 1
    }
}
# Waits until the unit leaves "activating"/"reloading"/"deactivating"; prints the state.
settle() {
    local s deadline=$((SECONDS + START_BOUND))
    while :; do
        s=$(prop ActiveState)
        case $s in activating | reloading | deactivating) ;; *) break ;; esac
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.2
    done
    echo "$s"
}
started_ok() {
    local s
    s=$(settle)
    [ "$s" = active ] || {
        echo "ActiveState=$s after ${START_BOUND} s, SubState=$(prop SubState), Result=$(prop Result) (Type=notify: no READY=1?)"
        return 1
    }
    expect_prop SubState running
}
status_text() {
    local s
    s=$(prop StatusText)
    echo "StatusText=$s"
    [ -n "$s" ]
}
file_exists() { c test -e "$1" || { echo "$1 missing"; return 1; }; }
file_absent() { ! c test -e "$1" || { echo "$1 still there"; return 1; }; }
mode_is() {
    local m
    m=$(c stat -c %a "$1" || true)
    [ "$m" = "$2" ] || { echo "$1 mode ${m:-?}, expected $2"; return 1; }
}
# minbase has no procps: look for a command line starting with the binary's path.
no_process() {
    local found
    found=$(c sh -c "grep -las '^/usr/bin/$NAME' /proc/[0-9]*/cmdline" || true)
    [ -z "$found" ] || { echo "still running: $found"; return 1; }
}
is_conffile() { c dpkg-query -W -f="\${Conffiles}" $NAME | grep -q " /etc/$NAME.toml "; }
stop_clean() {
    c systemctl stop "$UNIT" || return 1
    expect_prop ActiveState inactive && expect_prop Result success && expect_prop ExecMainStatus 0
}
# The operator's (or the node image's) environment file, read by the unit as EnvironmentFile.
# Dry run: whatever the thresholds say, the test cannot remove anything.
c sh -c "printf 'DOCKER_IMAGE_CLEANER_DRY_RUN=true\n' >/etc/default/$NAME"

# --- deb ----------------------------------------------------------------------------------
echo "== deb: dpkg -i $(basename "$deb")"
# The tree is minbase: what the package needs at run time must come from its own Depends, and
# dpkg -i fetches nothing. These are absent, so a package relying on them would fail here.
check "minimal tree: no procps, no ca-certificates" \
    c sh -c "! dpkg -s procps >/dev/null 2>&1 && ! dpkg -s ca-certificates >/dev/null 2>&1"
check "dpkg -i $(basename "$deb")" c dpkg -i "/pkgs/$(basename "$deb")"
summary_is_one_line() {
    local want got
    want=$(sed -n 's/^description = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
    got=$(c dpkg-query -W -f='${Description}' $NAME | head -n 1)
    [ -n "$want" ] && [ "$got" = "$want" ] || { echo "dpkg -l shows \"$got\", Cargo.toml says \"$want\""; return 1; }
}
check "package summary is the whole description, one line (dpkg -l)" summary_is_one_line
for f in /usr/bin/$NAME /etc/$NAME.toml /usr/lib/systemd/system/$UNIT \
    /usr/share/man/man1/$NAME.1.gz /usr/share/doc/$NAME/README.md /usr/share/doc/$NAME/copyright \
    /usr/share/doc/$NAME/changelog.Debian.gz; do
    check "deb installs $f" file_exists "$f"
done
check "state directory /var/lib/$NAME is 0700" mode_is /var/lib/$NAME 700
check "/etc/$NAME.toml is a conffile" is_conffile
check "installed config passes check-config" c $NAME --config /etc/$NAME.toml check-config
check "unit is enabled after install" c systemctl is-enabled --quiet "$UNIT"
check "install does not start the unit (ActiveState=inactive)" expect_prop ActiveState inactive
check "man page renders" c sh -c "zcat /usr/share/man/man1/$NAME.1.gz | grep -q '^.SH FILES'"
# --man=no: minbase has no man to look up Documentation=man:…
check "systemd-analyze verify (container, installed unit)" c systemd-analyze verify --man=no "$UNIT"
live=$(c systemd-analyze security "$UNIT" 2>&1 | tail -n 1 || true)
echo "$live"

echo "== deb: start"
c systemctl start --no-block "$UNIT"
check "start: ActiveState=active SubState=running (READY=1)" started_ok
check "start: STATUS= text set" status_text
check "start: watchdog configured (WatchdogUSec=2min)" expect_prop WatchdogUSec 2min
pid1=$(prop MainPID)
check "EnvironmentFile /etc/default/$NAME read" \
    c sh -c "tr '\\0' '\\n' </proc/$pid1/environ | grep -qx DOCKER_IMAGE_CLEANER_DRY_RUN=true"
check "cleaner reaches the node's Docker (status)" c $NAME status

# The shipped 2 min would make this check wait a minute per ping: a runtime drop-in shortens it.
# The daemon pings at half the interval (WATCHDOG_USEC), so the timestamp must move within 3 s
# and the service must still run after twice the interval.
echo "== deb: watchdog pings (WatchdogSec=4s drop-in)"
c sh -c "mkdir -p /run/systemd/system/$UNIT.d && printf '[Service]\nWatchdogSec=4s\n' >/run/systemd/system/$UNIT.d/watchdog-test.conf"
c systemctl daemon-reload
c systemctl restart --no-block "$UNIT"
watchdog_pings() {
    started_ok || return 1
    local t0 t1
    t0=$(prop WatchdogTimestampMonotonic)
    sleep 3
    t1=$(prop WatchdogTimestampMonotonic)
    if [ "$t0" = 0 ] || [ "$t1" -le "$t0" ]; then
        echo "WatchdogTimestampMonotonic $t0 -> $t1: no WATCHDOG=1"
        return 1
    fi
    sleep 6
    expect_prop ActiveState active && expect_prop NRestarts 0 && expect_prop Result success
}
check "watchdog: WATCHDOG=1 pings keep the service alive past WatchdogSec" watchdog_pings
c rm -rf "/run/systemd/system/$UNIT.d"
c systemctl daemon-reload
c systemctl restart --no-block "$UNIT"
started_ok >/dev/null || true

echo "== deb: reload"
reload_clean() {
    local before after
    before=$(prop MainPID)
    c systemctl reload "$UNIT" || return 1
    sleep 2
    [ "$(settle)" = active ] || { echo "ActiveState=$(prop ActiveState) Result=$(prop Result)"; return 1; }
    after=$(prop MainPID)
    [ "$before" = "$after" ] || { echo "MainPID $before -> $after: the reload restarted the daemon"; return 1; }
    expect_prop NRestarts 0 && expect_prop Result success
}
check "reload (SIGHUP): same MainPID, still active, Result=success" reload_clean

# --- an operator's first hour: start and reload tell the truth -----------------------------
echo "== deb: first hour"
# Kubeconfigs made on the host, read in the container from /pkgs. A CA of its own, an https://
# server nobody answers on (the container has no network: the start must not need one).
openssl req -x509 -newkey rsa:2048 -nodes -keyout /dev/null -subj /CN=dic-test-ca -days 2 \
    -out "$work/pkgs/ca.pem" >/dev/null 2>&1 || die "openssl could not make a CA"
ca_data=$(base64 -w0 "$work/pkgs/ca.pem")
kubeconfig() { # kubeconfig FILE SERVER CLUSTER-LINES
    printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: %s\n%susers:\n- name: u\n  user:\n    token: t0ken\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n' \
        "$2" "$3" >"$work/pkgs/$1"
}
kubeconfig own-ca.kubeconfig https://127.0.0.1:6443 "    certificate-authority-data: $ca_data
"
kubeconfig http.kubeconfig http://127.0.0.1:8080 ""
kubeconfig no-ca.kubeconfig https://127.0.0.1:6443 ""
printf 'apiVersion: v1\nclusters: [not: a: list\n' >"$work/pkgs/broken.kubeconfig"
env_file() { c sh -c "printf '$1' >/etc/default/$NAME"; }
# record CMD: shows a command run in the container and what it printed, for the record.
record() {
    echo "  # $1"
    c sh -c "$1" 2>&1 | sed 's/^/  | /' || true
}
use_kubeconfig() { c sh -c "mkdir -p /etc/$NAME && cp /pkgs/$1 /etc/$NAME/kubeconfig"; }
# restart_is RESULT: `systemctl restart` (waiting for READY=1 or the failure) succeeds or fails.
restart_ok() {
    c systemctl reset-failed "$UNIT" 2>/dev/null || true
    c timeout 120 systemctl restart "$UNIT" || { echo "systemctl restart failed: $(prop Result) $(prop ExecMainStatus)"; return 1; }
    started_ok
}
restart_fails_78() {
    c systemctl reset-failed "$UNIT" 2>/dev/null || true
    if c timeout 120 systemctl restart "$UNIT"; then
        echo "systemctl restart returned 0; ActiveState=$(prop ActiveState)"
        return 1
    fi
    expect_prop ActiveState failed && expect_prop ExecMainStatus 78
}

env_file 'DOCKER_IMAGE_CLEANER_DRY_RUN=true\nDOCKER_IMAGE_CLEANER_NODE_NAME=dic-node\n'
check "status in a shell reads the node name from /etc/default/$NAME" \
    c sh -c "$NAME status | grep -q '^cordon: *node dic-node'"
check "check-config credits node_name to /etc/default/$NAME" \
    c sh -c "$NAME check-config | grep -q 'node_name = \"dic-node\"  # file /etc/default/$NAME (DOCKER_IMAGE_CLEANER_NODE_NAME)'"
record "$NAME status | grep '^cordon'; $NAME check-config 2>&1 | grep -E 'node_name|threshold_low|^#   ok'"
c rm -f /etc/$NAME/kubeconfig
check "no kubeconfig yet (a baked image): start waits, active" restart_ok
use_kubeconfig broken.kubeconfig
check "unusable kubeconfig: systemctl restart fails, exit 78" restart_fails_78
check "unusable kubeconfig: the journal names it" \
    c sh -c "journalctl -u $UNIT --no-pager -o cat -n 20 | grep -q '/etc/$NAME/kubeconfig'"
check "unusable kubeconfig: check-config exits 78" \
    c sh -c "$NAME check-config >/dev/null 2>&1; [ \$? -eq 78 ]"
record "systemctl restart $UNIT; echo exit \$?; systemctl show -p ExecMainStatus $UNIT; journalctl -u $UNIT -o cat -p err --no-pager | grep 'cannot work' | tail -n 1"
use_kubeconfig own-ca.kubeconfig
check "kubeconfig with its own CA, no ca-certificates: start active" restart_ok
check "kubeconfig with its own CA: no CA error in the journal" \
    c sh -c "! journalctl -u $UNIT --no-pager -o cat -n 30 | grep -qi 'CA certificates'"
use_kubeconfig http.kubeconfig
check "kubeconfig with an http:// server, no ca-certificates: start active" restart_ok
use_kubeconfig no-ca.kubeconfig
check "kubeconfig without a CA on a system without ca-certificates: start fails, 78" restart_fails_78
check "kubeconfig without a CA: the journal names ca-certificates" \
    c sh -c "journalctl -u $UNIT --no-pager -o cat -n 20 | grep -q 'install ca-certificates'"
record "journalctl -u $UNIT -o cat -p err --no-pager | grep ca-certificates | tail -n 1"
c rm -f /etc/$NAME/kubeconfig
c sh -c "mkdir -p /root/.kube && cp /pkgs/own-ca.kubeconfig /root/.kube/config"
env_file 'DOCKER_IMAGE_CLEANER_DRY_RUN=true\nDOCKER_IMAGE_CLEANER_NODE_NAME=dic-node\nKUBECONFIG=/root/.kube/config\n'
check "kubeconfig under /root: start active (waits)" restart_ok
check "kubeconfig under /root: journalctl -p warning names ProtectHome=yes" \
    c sh -c "journalctl -u $UNIT --no-pager -o cat -p warning -n 20 | grep -q 'ProtectHome=yes'"
check "kubeconfig under /root: status in a shell warns too" \
    c sh -c "$NAME status 2>&1 >/dev/null | grep -q 'ProtectHome=yes'"
record "journalctl -u $UNIT -p warning -o cat --no-pager | grep ProtectHome | tail -n 1; $NAME status 2>&1 >/dev/null | grep ProtectHome"
c rm -rf /root/.kube
env_file 'DOCKER_IMAGE_CLEANER_DRY_RUN=true\n'
restart_ok >/dev/null || true

reload_refused() {
    local before
    before=$(prop MainPID)
    c cp /etc/$NAME.toml /tmp/good.toml
    c sh -c "printf 'interval_secnds = 5\n' >>/etc/$NAME.toml"
    if c systemctl reload "$UNIT"; then
        echo "systemctl reload returned 0 for an invalid file"
        c cp /tmp/good.toml /etc/$NAME.toml
        return 1
    fi
    c cp /tmp/good.toml /etc/$NAME.toml
    [ "$(settle)" = active ] || { echo "ActiveState=$(prop ActiveState)"; return 1; }
    [ "$(prop MainPID)" = "$before" ] || { echo "MainPID changed"; return 1; }
    # The daemon was not asked: it logged no SIGHUP.
    ! c sh -c "journalctl -u $UNIT --no-pager -o cat -n 30 | grep -q 'SIGHUP'" || { echo "the daemon was signalled"; return 1; }
    # And a valid file reloads, waiting for the daemon's answer.
    c sh -c "printf 'interval_seconds = \"2m\"\n' >>/etc/$NAME.toml"
    c systemctl reload "$UNIT" || { echo "valid reload failed"; return 1; }
    c sh -c "journalctl -u $UNIT --no-pager -o cat -n 30 | grep -q 'every 120s'" || { echo "no 'every 120s' after the reload"; return 1; }
    c cp /tmp/good.toml /etc/$NAME.toml
    c systemctl reload "$UNIT"
}
check "reload into an invalid file fails, the daemon is not signalled, a valid one applies" reload_refused
c cp /etc/$NAME.toml /tmp/good.toml
c sh -c "printf 'interval_secnds = 5\n' >>/etc/$NAME.toml"
record "systemctl reload $UNIT; echo exit \$?; journalctl -u $UNIT -o cat --no-pager | grep -E 'invalid configuration|not reloading' | tail -n 1"
c cp /tmp/good.toml /etc/$NAME.toml

echo "== deb: stop"
check "stop: inactive, Result=success, exit status 0" stop_clean
check "stop: no process left" no_process

echo "== deb: upgrade to $deb2_version"
c sh -c "printf '\n# edited by test-install.sh\n' >>/etc/$NAME.toml"
c systemctl start --no-block "$UNIT"
started_ok >/dev/null || true
pid_before=$(prop MainPID)
check "dpkg -i upgrade.deb (non-interactive)" c sh -c "dpkg -i /pkgs/upgrade.deb </dev/null"
check "upgrade: package version is $deb2_version" \
    c sh -c "[ \"\$(dpkg-query -W -f='\${Version}' $NAME)\" = '$deb2_version' ]"
check "upgrade: edited conffile kept" c grep -qx '# edited by test-install.sh' /etc/$NAME.toml
check "upgrade: no .dpkg-new/.dpkg-dist left" c sh -c "! ls /etc/$NAME.toml.dpkg-* 2>/dev/null | grep -q ."
check "upgrade: unit still enabled" c systemctl is-enabled --quiet "$UNIT"
upgraded_restarted() {
    started_ok || return 1
    local pid
    pid=$(prop MainPID)
    [ "$pid" != "$pid_before" ] || { echo "MainPID unchanged ($pid): not restarted"; return 1; }
}
check "upgrade: running service restarted" upgraded_restarted

echo "== deb: remove and purge"
check "dpkg -r" c dpkg -r $NAME
check "remove: service stopped" no_process
check "remove: binary gone" file_absent /usr/bin/$NAME
check "remove: unit gone" file_absent /usr/lib/systemd/system/$UNIT
check "remove: conffile kept until purge" file_exists /etc/$NAME.toml
check "dpkg --purge" c dpkg --purge $NAME
check "purge: /etc/$NAME.toml gone" file_absent /etc/$NAME.toml
check "purge: /var/lib/$NAME gone" file_absent /var/lib/$NAME
check "purge: enablement symlink gone" file_absent /etc/systemd/system/multi-user.target.wants/$UNIT
check "purge: deb-systemd-helper state gone" \
    c sh -c "! ls /var/lib/systemd/deb-systemd-helper-enabled/ 2>/dev/null | grep -q $NAME && ! find /var/lib/systemd/deb-systemd-helper-enabled -name '$UNIT*' 2>/dev/null | grep -q ."
check "purge: package unknown to dpkg" c sh -c "! dpkg-query -W $NAME >/dev/null 2>&1"
check "purge: /etc/default/$NAME (not the package's) left alone" file_exists /etc/default/$NAME
check "purge: systemd forgot the unit" \
    c sh -c "systemctl daemon-reload && [ \"\$(systemctl show -p LoadState --value $UNIT)\" = not-found ]"

# --- rpm (Debian's rpm: the scriptlets' branch without systemd-update-helper) --------------
echo "== rpm: rpm -i $(basename "$rpm_file")"
rpm_() { c rpm --force-debian --nodeps "$@"; }
check "rpm -i $(basename "$rpm_file")" rpm_ -i "/pkgs/$(basename "$rpm_file")"
for f in /usr/bin/$NAME /etc/$NAME.toml /usr/lib/systemd/system/$UNIT \
    /usr/lib/systemd/system-preset/50-$NAME.preset /usr/share/man/man1/$NAME.1.gz; do
    check "rpm installs $f" file_exists "$f"
done
check "rpm: state directory /var/lib/$NAME is 0700" mode_is /var/lib/$NAME 700
check "rpm: /etc/$NAME.toml is %config(noreplace)" \
    c sh -c "rpm -q --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' $NAME | grep -qx '/etc/$NAME.toml cn'"
check "rpm: unit enabled (preset)" c systemctl is-enabled --quiet "$UNIT"
check "rpm: install does not start the unit" expect_prop ActiveState inactive
c sh -c "printf '\n# edited by test-install.sh\n' >>/etc/$NAME.toml"
c systemctl start --no-block "$UNIT"
check "rpm: start: active/running" started_ok
pid_before=$(prop MainPID)
check "rpm -U (release 2)" rpm_ -U "/pkgs/upgrade.rpm"
check "rpm upgrade: edited config kept" c grep -qx '# edited by test-install.sh' /etc/$NAME.toml
check "rpm upgrade: running service restarted" upgraded_restarted
check "rpm -e" rpm_ -e $NAME
check "rpm -e: service stopped" no_process
check "rpm -e: unit disabled" \
    file_absent /etc/systemd/system/multi-user.target.wants/$UNIT
check "rpm -e: binary gone" file_absent /usr/bin/$NAME
check "rpm -e: unit gone" file_absent /usr/lib/systemd/system/$UNIT
check "rpm -e: edited config saved as .rpmsave" file_exists /etc/$NAME.toml.rpmsave

summary
[ "$failures" -eq 0 ]
