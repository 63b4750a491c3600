#!/usr/bin/env bash
# The Packer recipe, tested locally: `packer fmt -check` and `packer validate` of the template,
# then a bake and a first boot for real, in Debian 12 containers whose PID 1 is systemd.
#
#   packaging/build.sh && packaging/test-packer.sh
#
# 1. validate: packaging/packer/docker-image-cleaner.pkr.hcl with the installed Packer (Debian
#    12's 1.6.6 here; the template is kept valid for it), for the deb and the rpm.
# 2. bake: a container booted from the install test's debootstrap tree gets what the template's
#    file provisioners upload (the .deb from dist/, the node-name script and unit, in /tmp) and
#    runs the template's own provisioning script, packaging/packer/provision.sh, with the
#    environment the template gives it. Checks: the unit is enabled, and it was not started
#    during the bake (systemd never took it out of "inactive" since the container booted, and
#    the bake's journal has no line of it). The container is stopped and `docker commit`ted: the
#    baked node image. Checks on the image: empty state directory, no node name, no uploads left.
# 3. first boot: a new container from that image, with a hostname in capitals. Checks: the
#    node-name unit ran before the cleaner and wrote the lower-cased hostname into
#    /etc/default/docker-image-cleaner; the cleaner was started by the boot (nobody ran
#    `systemctl start`) and is active; the running daemon has that node name in its environment,
#    check-config in a plain shell (which reads the same environment file) has it, and its
#    journal names the node.
#
# Needs root, Debian's docker.io, packer (installed from Debian when missing), and the cached
# debootstrap tree of packaging/test-install.sh (made when missing). Runs one private dockerd
# under /tmp/dic-pack-<pid>/ (functions shared with test-install.sh: testlib.sh) and removes
# everything on exit, also on failure or Ctrl-C, and what an earlier killed run left.
#
# Prints PASS or FAIL per check, a summary and the time taken; exits 1 when any check failed,
# 2 when the test could not run at all.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly NAME=docker-image-cleaner
readonly UNIT=$NAME.service
readonly NODE_NAME_UNIT=$NAME-node-name.service
readonly TMP_PREFIX=/tmp/dic-pack-
readonly PACKER_DIR=packaging/packer
readonly TEMPLATE=$PACKER_DIR/$NAME.pkr.hcl
# What the first boot's hostname is, and what the node-name script must make of it.
readonly BOOT_HOSTNAME=Node-7.Example.Internal
readonly NODE_NAME=node-7.example.internal
# Bounds, in seconds.
readonly BOOT_BOUND=120 # systemd in the container reaching running/degraded
readonly START_BOUND=60 # the service to active (READY=1)
readonly CMD_BOUND=180  # any single command

die() {
    echo "test-packer.sh: $*" >&2
    exit 2
}
# Results (pass, fail, check, summary), the private dockerd, teardown, the debootstrap tree.
. packaging/testlib.sh
t_start=$SECONDS

# --- preconditions --------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "must run as root (dockerd)"
for tool in "$DOCKERD" "$DOCKER" "$CONTAINERD"; do
    [ -x "$tool" ] || die "$tool missing (apt-get install docker.io)"
done
if ! command -v packer >/dev/null 2>&1; then
    echo "installing packer"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends packer >/dev/null
fi
arch=$(dpkg --print-architecture)
shopt -s nullglob
debs=(dist/"${NAME}"_*_"$arch".deb)
rpms=(dist/"$NAME"-*.rpm)
shopt -u nullglob
if [ ${#debs[@]} -ne 1 ] || [ ${#rpms[@]} -ne 1 ]; then
    die "expected one .deb and one .rpm in dist/ (run packaging/build.sh first); found: ${debs[*]} ${rpms[*]}"
fi
deb=${debs[0]}
version=$(dpkg-deb -f "$deb" Version)
version=${version%-1} # the template's version variable is the upstream version; the deb is <version>-1

# --- 1. the template ----------------------------------------------------------------------
packer_version=$(packer version | head -n 1)
echo "== template ($packer_version)"
check "packer fmt -check $PACKER_DIR" packer fmt -check -diff "$PACKER_DIR"
# The template file alone: Packer 1.6 reads no required_plugins, which plugins.pkr.hcl holds.
check "packer validate (deb, version $version)" packer validate -var "version=$version" "$TEMPLATE"
check "packer validate (rpm, version $version)" \
    packer validate -var "version=$version" -var package_format=rpm "$TEMPLATE"
rejects_bad_format() {
    local out
    if out=$(packer validate -var "version=$version" -var package_format=zip "$TEMPLATE" 2>&1); then
        echo "package_format=zip accepted"
        return 1
    fi
    grep -q 'package_format must be deb or rpm' <<<"$out" || { echo "$out"; return 1; }
}
check "packer validate rejects package_format=zip" rejects_bad_format
# The bake below runs what the template runs: its script, with its environment.
template_runs_script() {
    local line
    # shellcheck disable=SC2016 # the template's own ${...}, literally
    for line in 'script           = "${path.root}/provision.sh"' \
        'environment_vars = ["PACKAGE=/tmp/${local.package}", "FILES=/tmp"]'; do
        grep -qF "$line" "$TEMPLATE" || {
            echo "$TEMPLATE has no line $line: its shell provisioner no longer runs what this test runs"
            return 1
        }
    done
}
check "the template's shell provisioner runs provision.sh with PACKAGE=/tmp/<package> FILES=/tmp" \
    template_runs_script
echo "template checks: $((SECONDS - t_start)) s"

# --- teardown -----------------------------------------------------------------------------
work=$TMP_PREFIX$$
cleanup() {
    local rc=$?
    set +e
    if [ "$failures" -gt 0 ] || [ "$rc" -ne 0 ]; then
        for ctr in dic-bake-$$ dic-boot-$$; do
            [ -S "$work/a/docker.sock" ] || break
            [ "$(timeout 20 "$DOCKER" --config "$work/a/cli" -H "unix://$work/a/docker.sock" \
                container inspect -f '{{.State.Running}}' "$ctr" 2>/dev/null)" = true ] || continue
            echo "== journal of $ctr (last 30 lines)"
            timeout 20 "$DOCKER" --config "$work/a/cli" -H "unix://$work/a/docker.sock" exec "$ctr" \
                journalctl --no-pager -n 30 2>&1
        done
    fi
    teardown_dir "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
sweep_stale "$TMP_PREFIX"
mkdir -p "$work/a"

ensure_rootfs

# --- 2. the bake --------------------------------------------------------------------------
echo "== private dockerd"
start_dockerd "$work/a" "$work/a/data"
d() { timeout "$CMD_BOUND" "$DOCKER" --config "$work/a/cli" -H "unix://$work/a/docker.sock" "$@"; }
t=$SECONDS
base=dic-test-rootfs:$key
d import "$rootfs" "$base" >/dev/null
echo "import: $((SECONDS - t)) s"

echo "== bake: $(basename "$deb") with $PACKER_DIR/provision.sh"
bake=dic-bake-$$
d run -d --name "$bake" --hostname bake-host "${SYSTEMD_RUN_ARGS[@]}" "$base" /lib/systemd/systemd >/dev/null
b() { d exec "$bake" "$@"; }
wait_systemd "$BOOT_BOUND" b
case $systemd_state in
running | degraded) pass "bake: systemd boots ($systemd_state)" ;;
*)
    fail "bake: systemd boots" "$systemd_state"
    summary
    exit 1
    ;;
esac
# What the file provisioners upload, where they upload it; then the shell provisioner's run
# (Packer uploads the script under another name and runs it with the environment_vars).
d cp "$deb" "$bake:/tmp/$(basename "$deb")"
d cp "$PACKER_DIR/files/$NAME-node-name" "$bake:/tmp/$NAME-node-name"
d cp "$PACKER_DIR/files/$NODE_NAME_UNIT" "$bake:/tmp/$NODE_NAME_UNIT"
d cp "$PACKER_DIR/provision.sh" "$bake:/tmp/script_4242.sh"
# Packer's execute_command, without the sudo (root already), then its removal of the script.
provision() {
    b sh -c "chmod +x /tmp/script_4242.sh; env PACKAGE='/tmp/$(basename "$deb")' FILES='/tmp' /tmp/script_4242.sh"
    b rm -f /tmp/script_4242.sh
}
# The node image's Docker: the data root the cleaner watches (a real bake installs Docker, whose
# /var/lib/docker the cleaner needs at start; a missing one fails its start, as it should).
b mkdir -p /var/lib/docker
t=$SECONDS
if out=$(provision 2>&1); then
    pass "bake: provision.sh succeeds ($((SECONDS - t)) s)"
else
    fail "bake: provision.sh succeeds" "$(tail -n 4 <<<"$out" | tr '\n' ' ')"
    echo "$out" | tail -n 30
fi
bprop() { b systemctl show -p "$2" --value "$1"; }
expect_bprop() { # expect_bprop UNIT PROP VALUE
    local v
    v=$(bprop "$1" "$2")
    [ "$v" = "$3" ] || { echo "$1: $2=$v, expected $3"; return 1; }
}
check "bake: $UNIT is enabled" b systemctl is-enabled --quiet "$UNIT"
check "bake: $NODE_NAME_UNIT is enabled" b systemctl is-enabled --quiet "$NODE_NAME_UNIT"
check "bake: $UNIT is inactive" expect_bprop "$UNIT" ActiveState inactive
# InactiveExitTimestampMonotonic stays 0 until a unit first leaves "inactive" (starting counts)
# in this boot of systemd, which is the whole bake: the cleaner was never started, not even for
# a moment.
check "bake: $UNIT never started during the bake (InactiveExitTimestampMonotonic=0)" \
    expect_bprop "$UNIT" InactiveExitTimestampMonotonic 0
check "bake: $NODE_NAME_UNIT never started during the bake" \
    expect_bprop "$NODE_NAME_UNIT" InactiveExitTimestampMonotonic 0
no_journal() {
    local lines
    lines=$(b journalctl --no-pager -q -o cat -u "$UNIT" -u "$NODE_NAME_UNIT")
    [ -z "$lines" ] || { echo "journal: $lines"; return 1; }
}
check "bake: the journal has no line of either unit" no_journal
check "bake: no $NAME process" \
    b sh -c "! grep -las '^/usr/bin/$NAME' /proc/[0-9]*/cmdline"

# The instance is shut down before its disk becomes the image, as Packer's builders do.
t=$SECONDS
d stop -t 60 "$bake" >/dev/null
image=dic-baked:$$
d commit "$bake" "$image" >/dev/null
echo "stop and commit: $((SECONDS - t)) s"
in_image() { d run --rm --network none --entrypoint /bin/sh "$image" -c "$1"; }
check "image: /var/lib/$NAME exists, mode 0700, empty" \
    in_image "[ \"\$(stat -c %a /var/lib/$NAME)\" = 700 ] && [ -z \"\$(ls -A /var/lib/$NAME)\" ]"
check "image: no /etc/default/$NAME (no node name baked in)" in_image "! [ -e /etc/default/$NAME ]"
check "image: provision.sh removed what the file provisioners uploaded to /tmp" \
    in_image "left=\$(ls -d /tmp/*.deb /tmp/$NAME-node-name* 2>/dev/null); [ -z \"\$left\" ] || { echo \$left; exit 1; }"
check "image: /usr/local/sbin/$NAME-node-name installed, executable" in_image "[ -x /usr/local/sbin/$NAME-node-name ]"

# --- 3. the first boot --------------------------------------------------------------------
echo "== first boot of the baked image (hostname $BOOT_HOSTNAME)"
node=dic-boot-$$
d run -d --name "$node" --hostname "$BOOT_HOSTNAME" "${SYSTEMD_RUN_ARGS[@]}" "$image" /lib/systemd/systemd >/dev/null
n() { d exec "$node" "$@"; }
t=$SECONDS
wait_systemd "$BOOT_BOUND" n
case $systemd_state in
running | degraded) pass "first boot: systemd boots ($systemd_state, $((SECONDS - t)) s)" ;;
*) fail "first boot: systemd boots" "$systemd_state" ;;
esac
nprop() { n systemctl show -p "$2" --value "$1"; }
# The cleaner is Type=notify: "active" once READY=1 came.
cleaner_active() {
    local s deadline=$((SECONDS + START_BOUND))
    while :; do
        s=$(nprop "$UNIT" ActiveState)
        [ "$s" = activating ] || break
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.2
    done
    if [ "$s" != active ] || [ "$(nprop "$UNIT" SubState)" != running ]; then
        echo "ActiveState=$s SubState=$(nprop "$UNIT" SubState) Result=$(nprop "$UNIT" Result)"
        return 1
    fi
}
check "first boot: $UNIT started by the boot, active/running (READY=1)" cleaner_active
node_name_ran() {
    local state result
    state=$(nprop "$NODE_NAME_UNIT" ActiveState)
    result=$(nprop "$NODE_NAME_UNIT" Result)
    if [ "$state" != active ] || [ "$result" != success ]; then
        echo "ActiveState=$state Result=$result"
        return 1
    fi
}
check "first boot: $NODE_NAME_UNIT ran (active, Result=success)" node_name_ran
ran_before() {
    local done_at started_at
    done_at=$(nprop "$NODE_NAME_UNIT" ExecMainExitTimestampMonotonic)
    started_at=$(nprop "$UNIT" ExecMainStartTimestampMonotonic)
    if [ "$done_at" -eq 0 ] || [ "$started_at" -lt "$done_at" ]; then
        echo "node-name exited at $done_at us, the cleaner started at $started_at us"
        return 1
    fi
}
check "first boot: the node name was written before the cleaner started" ran_before
check "first boot: /etc/default/$NAME says DOCKER_IMAGE_CLEANER_NODE_NAME=$NODE_NAME" \
    n grep -qx "DOCKER_IMAGE_CLEANER_NODE_NAME=$NODE_NAME" /etc/default/$NAME
daemon_env() {
    local pid
    pid=$(nprop "$UNIT" MainPID)
    [ "$pid" -gt 0 ] || { echo "MainPID=$pid"; return 1; }
    n sh -c "tr '\\0' '\\n' </proc/$pid/environ | grep '^DOCKER_IMAGE_CLEANER_'"
}
env_has_name() {
    daemon_env | grep -qx "DOCKER_IMAGE_CLEANER_NODE_NAME=$NODE_NAME" ||
        { echo "the daemon's environment: $(daemon_env | tr '\n' ' ')"; return 1; }
}
check "first boot: the running daemon's environment has DOCKER_IMAGE_CLEANER_NODE_NAME=$NODE_NAME" env_has_name
# check-config in a plain shell reads the environment file the unit reads: it prints the
# configuration the daemon runs with, crediting the node name to that file.
config_has_name() {
    local out
    out=$(n $NAME check-config 2>&1)
    grep -qxF "node_name = \"$NODE_NAME\"  # file /etc/default/$NAME (DOCKER_IMAGE_CLEANER_NODE_NAME)" <<<"$out" ||
        { grep node_name <<<"$out"; return 1; }
}
check "first boot: check-config in a shell: node_name = \"$NODE_NAME\" from /etc/default/$NAME" \
    config_has_name
journal_names_node() {
    local deadline=$((SECONDS + 10))
    until n journalctl --no-pager -q -o cat -u "$UNIT" | grep -qF "node $NODE_NAME"; do
        [ "$SECONDS" -lt "$deadline" ] || { n journalctl --no-pager -q -o cat -u "$UNIT" | tail -n 5; return 1; }
        sleep 0.2
    done
}
check "first boot: the daemon's journal names node $NODE_NAME" journal_names_node
n journalctl --no-pager -q -o cat -u "$UNIT" | grep -F "node $NODE_NAME" | head -n 1 | sed 's/^/  journal: /'

summary
echo "test-packer.sh: $((SECONDS - t_start)) s"
[ "$failures" -eq 0 ]
