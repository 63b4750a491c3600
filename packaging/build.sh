#!/usr/bin/env bash
# Builds the .deb and the .rpm into dist/ from a clean checkout, then lints both.
#
#   packaging/build.sh
#
# Steps: install what is missing (as root: help2man, lintian, rpmlint, rpm from apt; cargo-deb
# and cargo-generate-rpm at the versions whose keys Cargo.toml uses, with `cargo install
# --locked`), build the release binary, make the man page from its --help, run cargo-deb and
# cargo-generate-rpm, and lint: lintian must report no error and no warning, rpmlint no error.
# Overrides live in packaging/debian/lintian-overrides and packaging/rpm/*.rpmlintrc, each with
# its reason.
#
# Environment:
#   DEB_VERSION   package version for the .deb instead of <Cargo version>-1 (the install test
#                 builds a second, higher version to test an upgrade); the linted release build
#                 must not set it, since the Debian changelog has to name the version.
#   NO_LINT=1     skip the linters (only the install test uses it, for its second build).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly CARGO_DEB_VERSION=3.8.0
readonly CARGO_GENERATE_RPM_VERSION=0.21.1
readonly NAME=docker-image-cleaner
readonly DIST=dist
# Not under $CARGO_TARGET_DIR: Cargo.toml names this path literally.
readonly MAN_DIR=target/packaging

step_start=$SECONDS
step() {
    if [ -n "${step_name:-}" ]; then
        echo "== ${step_name}: $((SECONDS - step_start)) s"
    fi
    step_name=$1
    step_start=$SECONDS
    echo "== $1"
}
die() {
    echo "build.sh: $*" >&2
    exit 1
}

step "tools"
missing=()
# The build generates containerd's gRPC client with protoc.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v help2man >/dev/null 2>&1 || missing+=(help2man)
if [ -z "${NO_LINT:-}" ]; then
    command -v lintian >/dev/null 2>&1 || missing+=(lintian)
    command -v rpmlint >/dev/null 2>&1 || missing+=(rpmlint)
    command -v rpm >/dev/null 2>&1 || missing+=(rpm)
fi
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# `cargo deb --version` prints "cargo-deb 3.8.0"; `cargo generate-rpm --version` prints
# "cargo-generate-rpm 0.21.1". Another version is replaced: the metadata keys were checked
# against these.
for tool in "cargo-deb:deb:$CARGO_DEB_VERSION" "cargo-generate-rpm:generate-rpm:$CARGO_GENERATE_RPM_VERSION"; do
    IFS=: read -r crate sub version <<<"$tool"
    have=$(cargo "$sub" --version 2>/dev/null | awk '{print $2}' || true)
    if [ "$have" != "$version" ]; then
        echo "installing $crate $version (found: ${have:-none})"
        cargo install --locked --quiet "$crate@$version"
    fi
done

# The Debian changelog must name the version being released (lintian checks it), so a version
# bump in Cargo.toml without a changelog entry fails here rather than in lintian.
pkgid=$(cargo pkgid --locked)  # path+file:///…#docker-image-cleaner@0.1.0 (or …#0.1.0)
cargo_version=${pkgid##*[#@]}
deb_version=${DEB_VERSION:-$cargo_version-1}
changelog_version=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' packaging/debian/changelog)
if [ -z "${DEB_VERSION:-}" ] && [ "$changelog_version" != "$deb_version" ]; then
    die "packaging/debian/changelog names $changelog_version, the package is $deb_version: add an entry"
fi

step "cargo build --release"
cargo build --release --locked
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
bin=$target_dir/release/$NAME
[ -x "$bin" ] || die "$bin was not built"

step "man page"
mkdir -p "$MAN_DIR"
# help2man's date is the last commit's, so two builds of one commit give the same page.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH
h2m=$MAN_DIR/$NAME.h2m
{
    cat packaging/$NAME.h2m
    # Every key and exit code, from the same source as the README's tables (src/docs.rs).
    "$bin" docs man
    # One subsection per subcommand, from the binary itself, so the page cannot drift from the CLI.
    echo "[COMMANDS]"
    for sub in run once status check-config reload; do
        echo ".SS \"$sub\""
        echo ".nf"
        "$bin" help "$sub" | sed -e 's/\\/\\e/g' -e 's/^\([.'"'"']\)/\\\&\1/'
        echo ".fi"
    done
} >"$h2m"
help2man --no-info --help-option=-h --section=1 --manual="User Commands" \
    --name="remove unused Docker images when /var/lib/docker runs low" \
    --include="$h2m" --output="$MAN_DIR/$NAME.1" "$bin"
# Fail on anything groff complains about (lintian's groff-message would).
warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$MAN_DIR/$NAME.1" 2>&1 >/dev/null || true)
[ -z "$warnings" ] || die "man page warnings: $warnings"
gzip -9 -n -c "$MAN_DIR/$NAME.1" >"$MAN_DIR/$NAME.1.gz"

step "cargo deb"
mkdir -p "$DIST"
rm -f "$DIST/${NAME}_"*.deb "$DIST/$NAME-"*.rpm
cargo deb --no-build --locked --deb-version "$deb_version" --output "$DIST/"
deb="$DIST/${NAME}_${deb_version}_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || die "cargo deb did not write $deb"

step "cargo generate-rpm"
cargo generate-rpm --output "$DIST/"
rpm_file=$(ls "$DIST/$NAME-"*.rpm)

if [ -z "${NO_LINT:-}" ]; then
    step "lintian"
    # --fail-on error,warning: a warning fails the build like an error. Info tags are shown.
    lintian --display-info --fail-on error,warning "$deb"
    echo "lintian: no errors, no warnings"

    step "rpmlint"
    # rpmlint exits 64 when it finds an error; warnings are printed and allowed.
    rpmlint -r packaging/rpm/$NAME.rpmlintrc "$rpm_file"
fi

step "done"
ls -l "$deb" "$rpm_file"
sha256sum "$deb" "$rpm_file"
