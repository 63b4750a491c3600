#!/usr/bin/env bash
# Benchmark the native tree walk (`usage::tree_usage`, through `examples/du.rs`) against
# `du -sxB1` on a warm page cache.
#
# What it does:
#   1. Builds, once, a tree resembling a Docker overlay2 store under $BENCH_DIR/tree: many layer
#      directories (`overlay2/<id>/{diff,work,link,lower}`), each `diff` holding a usr/lib-like
#      tree of small files of varied sizes, a few sparse files, hard links and symlinks, plus the
#      `overlay2/l/` directory of short symlinks. The tree is reused by later runs (a marker file
#      records the layout version); delete $BENCH_DIR to rebuild it.
#   2. Builds the `du` example in release mode.
#   3. Warms the cache, then runs `du -sxB1 TREE` and the example alternately for $ROUNDS rounds,
#      fails loudly if the two ever print different byte counts, and prints the median wall time
#      of each and the ratio.
#
# Usage:   scripts/bench-du.sh
# Env:     BENCH_DIR  where the tree is kept           (default /var/tmp/dic-bench)
#          ROUNDS     timed rounds of each command     (default 5)
#          LAYERS     overlay2 layer directories       (default 240, ~1,750 entries each)
# Needs:   bash, GNU coreutils, cargo. Run from anywhere; it finds the crate from its own path.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/var/tmp/dic-bench}
ROUNDS=${ROUNDS:-5}
LAYERS=${LAYERS:-240}
LAYOUT_VERSION="overlay2-like v1 layers=$LAYERS"
MIN_ENTRIES=400000

crate_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tree="$BENCH_DIR/tree"
marker="$BENCH_DIR/tree.complete"

die() {
    echo "bench-du: $*" >&2
    exit 1
}

# One layer: a usr/lib-like tree of small files with varied sizes, written with bash builtins
# only (no fork per file), then a few hard links and symlinks in one `ln` call each.
make_layer() {
    local diff=$1 layer=$2
    local pkg sub f size i
    local -a dirs=() links=() symlinks=()
    for ((pkg = 0; pkg < 30; pkg++)); do
        for sub in bin share/locale include; do
            dirs+=("$diff/usr/lib/pkg$pkg/$sub")
        done
        dirs+=("$diff/usr/share/doc/pkg$pkg")
    done
    dirs+=("$diff/etc/conf.d" "$diff/usr/bin")
    mkdir -p "${dirs[@]}"

    for ((pkg = 0; pkg < 30; pkg++)); do
        for sub in bin share/locale include; do
            for ((i = 0; i < 15; i++)); do
                f="$diff/usr/lib/pkg$pkg/$sub/f$i.so"
                # Mostly tiny and small files, some of a few tens of KiB, a few empty.
                case $((RANDOM % 10)) in
                    0) size=0 ;;
                    1 | 2 | 3) size=$((RANDOM % 200)) ;;
                    4 | 5 | 6 | 7) size=$((RANDOM % 6000)) ;;
                    8) size=$((RANDOM % 20000)) ;;
                    *) size=$((RANDOM % 70000)) ;;
                esac
                printf '%*s' "$size" '' >"$f"
            done
        done
        for ((i = 0; i < 5; i++)); do
            printf '%*s' $((RANDOM % 3000)) '' >"$diff/usr/share/doc/pkg$pkg/README$i"
        done
        # Unique base names, so one `ln` call can link them all into one directory.
        printf '%*s' $((RANDOM % 40000)) '' >"$diff/usr/lib/pkg$pkg/bin/tool$pkg"
        printf '%*s' $((RANDOM % 9000)) '' >"$diff/usr/lib/pkg$pkg/lib$pkg.so.1"
        links+=("$diff/usr/lib/pkg$pkg/bin/tool$pkg")
        symlinks+=("pkg$pkg/lib$pkg.so.1")
    done
    for ((i = 0; i < 40; i++)); do
        printf '%*s' $((RANDOM % 500)) '' >"$diff/etc/conf.d/c$i.conf"
    done
    # Hard links inside the layer (like busybox or perl binaries) and relative symlinks.
    ln "${links[@]}" "$diff/usr/bin/"
    (cd "$diff/usr/lib" && ln -s "${symlinks[@]}" .)
    # A sparse file: large apparent size, little allocated.
    if ((layer % 20 == 0)); then
        truncate -s 64M "$diff/usr/lib/sparse.img"
        printf 'header' >"$diff/usr/lib/sparse.img"
    fi
}

build_tree() {
    local tmp="$BENCH_DIR/tree.tmp" layer id short
    rm -rf "$tmp"
    mkdir -p "$tmp/overlay2/l" "$tmp/image/overlay2/layerdb"
    echo "bench-du: building $LAYERS layers in $tmp (once; takes a minute or two)" >&2
    RANDOM=42
    for ((layer = 0; layer < LAYERS; layer++)); do
        id=$(printf '%064x' "$layer")
        short=$(printf 'L%025d' "$layer")
        mkdir -p "$tmp/overlay2/$id/diff" "$tmp/overlay2/$id/work"
        printf '%s' "$short" >"$tmp/overlay2/$id/link"
        if ((layer > 0)); then
            printf 'l/%s' "$(printf 'L%025d' $((layer - 1)))" >"$tmp/overlay2/$id/lower"
        fi
        ln -s "../$id/diff" "$tmp/overlay2/l/$short"
        make_layer "$tmp/overlay2/$id/diff" "$layer"
        if ((layer % 40 == 39)); then
            echo "bench-du:   $((layer + 1))/$LAYERS layers" >&2
        fi
    done
    rm -rf "$tree"
    mv "$tmp" "$tree"
    echo "$LAYOUT_VERSION" >"$marker"
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

now_ns() { date +%s%N; }

mkdir -p "$BENCH_DIR"
if [[ ! -f $marker || $(cat "$marker") != "$LAYOUT_VERSION" || ! -d $tree ]]; then
    build_tree
fi
entries=$(find "$tree" -xdev | wc -l)
((entries >= MIN_ENTRIES)) || die "tree has $entries entries, fewer than $MIN_ENTRIES: raise LAYERS"

echo "bench-du: building the example (cargo build --release --example du)" >&2
ours=$(cd "$crate_dir" &&
    cargo build --release --example du --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*\/examples\/du\)".*/\1/p' | tail -n 1)
[[ -x $ours ]] || die "could not find the built example binary"

# Warm the cache: dentries and inodes of the whole tree.
du -sxB1 "$tree" >/dev/null
"$ours" "$tree" >/dev/null 2>&1

# CPU ticks used by everything on the machine, and by this script's finished children, so that
# the CPU taken by other processes during the rounds can be reported.
cpu_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
children_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }

declare -a t_du=() t_ours=()
busy_start=$(cpu_busy_ticks)
children_start=$(children_ticks)
wall_start=$(now_ns)
for ((round = 1; round <= ROUNDS; round++)); do
    start=$(now_ns)
    du_out=$(du -sxB1 "$tree")
    t_du+=($(($(now_ns) - start)))

    start=$(now_ns)
    ours_out=$("$ours" "$tree" 2>/dev/null)
    t_ours+=($(($(now_ns) - start)))

    du_bytes=${du_out%%$'\t'*}
    ours_bytes=${ours_out%%$'\t'*}
    if [[ $du_bytes != "$ours_bytes" ]]; then
        die "MISMATCH in round $round: du -sxB1 says $du_bytes bytes, ours says $ours_bytes"
    fi
done

wall_ticks=$((($(now_ns) - wall_start) * $(getconf CLK_TCK) / 1000000000))
others_ticks=$(($(cpu_busy_ticks) - busy_start - ($(children_ticks) - children_start)))
others_cpus=$(awk -v o="$others_ticks" -v w="$wall_ticks" 'BEGIN { printf "%.1f", (w > 0 && o > 0) ? o / w : 0 }')

med_du=$(printf '%s\n' "${t_du[@]}" | median)
med_ours=$(printf '%s\n' "${t_ours[@]}" | median)
min_du=$(printf '%s\n' "${t_du[@]}" | sort -n | head -n 1)
min_ours=$(printf '%s\n' "${t_ours[@]}" | sort -n | head -n 1)
ms() { awk -v ns="$1" 'BEGIN { printf "%.1f ms", ns / 1e6 }'; }

echo
echo "tree:    $tree ($entries entries, $du_bytes bytes allocated)"
echo "cpus:    $(nproc), of which other processes kept $others_cpus busy; rounds: $ROUNDS, warm cache, alternating"
printf '%-22s %14s %14s\n' "command" "median wall" "best wall"
printf '%-22s %14s %14s\n' "du -sxB1" "$(ms "$med_du")" "$(ms "$min_du")"
printf '%-22s %14s %14s\n' "examples/du (ours)" "$(ms "$med_ours")" "$(ms "$min_ours")"
awk -v a="$med_du" -v b="$med_ours" 'BEGIN {
    r = a / b
    if (r >= 1) printf "ours is %.2fx faster than du -sxB1\n", r
    else printf "ours is %.2fx SLOWER than du -sxB1\n", b / a
}'
if awk -v o="$others_cpus" 'BEGIN { exit !(o >= 0.5) }'; then
    echo "note: other processes used $others_cpus of $(nproc) CPUs meanwhile: the walk's threads" \
        "had fewer idle CPUs than on an idle machine, so the ratio is understated"
fi
