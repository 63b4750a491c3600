#!/usr/bin/env bash
# The trace replay (examples/replay/): the library's own plan and stopping rules drive a simulated
# node through generated traces (three shapes, several seeds), side by side with the original
# tool, the kubelet's image GC, docuum and Belady's offline optimum. Prints the tables, writes
# target/replay/results.csv and target/replay/usage-<shape>.png, and exits non-zero when a sanity
# rule fails (the optimum re-pulls no more than any policy, on every trace).
#
# Usage:   scripts/replay.sh            the full replay: 5 seeds x 20,000 uses, the policies and
#                                       the sweep of watermarks and min ages (release build; the
#                                       run takes 3.5 minutes of CPU, about 2 minutes on 2 idle
#                                       cores, 6 on a machine shared with other builds)
#          scripts/replay.sh --short    the CI form: the replay's unit tests, then 1 seed x 2,000
#                                       uses, no sweep, in the dev profile that `cargo test` has
#                                       already built (a few seconds)
#          Any other arguments go to the program (`--seeds N`, `--uses N`, `--no-sweep`, `--out DIR`,
#          `--font FILE`); `scripts/replay.sh --help` lists them.
# Needs:   cargo; the DejaVu Sans font for the plots (Debian's fonts-dejavu-core, installed here when
#          missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
if [ ! -f "$font" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing: fonts-dejavu-core"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends fonts-dejavu-core
    else
        echo "replay: no font at $font: install fonts-dejavu-core, or pass --font FILE" >&2
    fi
fi

short=false
for arg in "$@"; do
    [ "$arg" = "--short" ] && short=true
done

if $short; then
    cargo test --locked --example replay
    cargo run --locked --example replay -- "$@"
else
    cargo run --locked --release --example replay -- "$@"
fi
