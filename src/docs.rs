//! The reference of the configuration keys and the exit codes, written once: the README's
//! configuration and exit-code tables and the man page's CONFIGURATION and EXIT STATUS
//! sections are generated from here (`docker-image-cleaner docs markdown|man`), and a test
//! checks that the README holds exactly what this module generates and that every key of the
//! configuration is here. Pure text; reads nothing.

/// One configuration key as the reference documents it. Cells are Markdown (code in
/// backticks, `\|` for a literal bar, links to README sections).
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The key in the file.
    pub key: &'static str,
    /// The key as the table shows it (`` `node_name` ``, `` `[[engine]]` ``).
    pub shown: &'static str,
    /// Its environment variable, or why it has none.
    pub env: &'static str,
    /// Its default, or how it is derived.
    pub default: &'static str,
    /// What it does, its range.
    pub meaning: &'static str,
}

/// Every key, in the order of the file (`check-config` prints them in this order too).
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: "node_name",
        shown: r#"`node_name`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_NODE_NAME`"#,
        default: r#"(none)"#,
        meaning: r#"Kubernetes node to cordon; unset or empty: cordoning is off. A Kubernetes node name (RFC 1123 DNS subdomain: lower-case letters, digits, `-`, `.`; parts start and end with a letter or digit, at most 63 characters each, 253 in all); spaces around it are dropped"#,
    },
    KeyDoc {
        key: "path_to_check",
        shown: r#"`path_to_check`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_PATH_TO_CHECK`"#,
        default: r#"`/var/lib/docker`"#,
        meaning: r#"paths to measure; a list (env: comma-separated). Relative mode triggers on the fullest filesystem, absolute mode adds the trees up. Add `/var/lib/containerd` for Docker 29+ with the containerd image store"#,
    },
    KeyDoc {
        key: "interval_seconds",
        shown: r#"`interval_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS`"#,
        default: r#"`300`"#,
        meaning: r#"time between two checks; at least 1"#,
    },
    KeyDoc {
        key: "delay_seconds",
        shown: r#"`delay_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_DELAY_SECONDS`"#,
        default: r#"`"adaptive"`"#,
        meaning: r#"pause between two image removals: seconds, 0 or more (the original's setting, `1` there); or `"adaptive"`: no pause after a removal Docker answered within 250 ms, after a slower one a pause as long as it took (at most 10 s); see the pass-cost benchmark under [Development](#development)"#,
    },
    KeyDoc {
        key: "threshold_type",
        shown: r#"`threshold_type`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_THRESHOLD_TYPE`"#,
        default: r#"`relative`"#,
        meaning: r#"`relative` (percent of the filesystem) or `absolute` (bytes of the trees)"#,
    },
    KeyDoc {
        key: "threshold_high",
        shown: r#"`threshold_high`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH`"#,
        default: r#"`"auto"`: 82, lowered so the next pull fits (the original's: 80)"#,
        meaning: r#"start cleaning at or above this: `"auto"` (relative mode: 82, lowered by a pass when the pulls the node has seen lately would not fit above it, never above 84; see [Choosing the defaults](#choosing-the-defaults)), or percent (above 0, at most 100), or in absolute mode a whole number of bytes or a size such as `"50GiB"` (at least 1 GiB; required in absolute mode); in relative mode a size is refused, naming `threshold_type = "absolute"`"#,
    },
    KeyDoc {
        key: "threshold_low",
        shown: r#"`threshold_low`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_THRESHOLD_LOW`"#,
        default: r#"`"auto"`, derived: at most 4 points below high (relative; half of high when high ≤ 8), 80 % of high (absolute)"#,
        meaning: r#"clean until usage is below this (at least 0, below high); `"auto"` (relative mode): 4 points below high, lowered by a pass so that room for the pulls seen lately (twice the largest of the last 12 intervals, or the most that arrived within one) is free after it, never above 84 nor below 50; `status` shows the room and what it was sized from. A number keeps the original's meaning"#,
    },
    KeyDoc {
        key: "timeout_seconds",
        shown: r#"`timeout_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_TIMEOUT_SECONDS`"#,
        default: r#"`300`"#,
        meaning: r#"timeout of every Docker request; at least 1 (Docker's client counts whole seconds)"#,
    },
    KeyDoc {
        key: "strategy",
        shown: r#"`strategy`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_STRATEGY`"#,
        default: r#"`lru2`"#,
        meaning: r#"the order of the unused images: `lru` (least recently used first), `lru2` (by the second-latest container start; an image started only once goes first), `lfu` (fewest container starts first, each counting half as much 6 h later), `gdsf` (`lfu` weighed by (size + 1 GiB) / size: big rarely used images first); or `prune` (the original's behaviour). Every protection applies to all of them"#,
    },
    KeyDoc {
        key: "min_age_seconds",
        shown: r#"`min_age_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_MIN_AGE_SECONDS`"#,
        default: r#"`120`"#,
        meaning: r#"an image first seen or last used more recently is kept; 0 or more. Raise it on a builder that pushes large images for minutes after building them"#,
    },
    KeyDoc {
        key: "container_min_age_seconds",
        shown: r#"`container_min_age_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_CONTAINER_MIN_AGE_SECONDS`"#,
        default: r#"`0`"#,
        meaning: r#"a stopped container that finished more recently is kept, and so is its image; 0 or more"#,
    },
    KeyDoc {
        key: "keep",
        shown: r#"`keep`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_KEEP`"#,
        default: r#"`[]`"#,
        meaning: r#"regular expressions searched in each `repository:tag` (anchor with `^…$`); a match keeps the image. Env: comma-separated"#,
    },
    KeyDoc {
        key: "dry_run",
        shown: r#"`dry_run`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_DRY_RUN`"#,
        default: r#"`false`"#,
        meaning: r#"remove nothing; log (or print, with `once`) the plan"#,
    },
    KeyDoc {
        key: "state_dir",
        shown: r#"`state_dir`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_STATE_DIR`"#,
        default: r#"`/var/lib/docker-image-cleaner`"#,
        meaning: r#"where the last-use table is kept"#,
    },
    KeyDoc {
        key: "docker_host",
        shown: r#"`docker_host`"#,
        env: r#"`DOCKER_HOST`"#,
        default: r#"local socket"#,
        meaning: r#"Docker endpoint as Docker's clients read it: `unix:///absolute/path`, `tcp://host:port` or `http://host:port` (port 1–65535; none given: 2375, as Docker's clients). `https://` and `ssh://` are not supported by this build"#,
    },
    KeyDoc {
        key: "kubeconfig",
        shown: r#"`kubeconfig`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_KUBECONFIG`"#,
        default: r#"(chain)"#,
        meaning: r#"kubeconfig to cordon with; unset: `$KUBECONFIG`, else `/etc/docker-image-cleaner/kubeconfig`, else `/etc/kubernetes/kubelet.conf`. The service cannot see `/root`, `/home` or `/run/user` (the unit's `ProtectHome=yes`): a kubeconfig there is a warning naming that setting"#,
    },
    KeyDoc {
        key: "cordon_mode",
        shown: r#"`cordon_mode`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_CORDON_MODE`"#,
        default: r#"`cordon`"#,
        meaning: r#"`cordon`, `taint` or `none`"#,
    },
    KeyDoc {
        key: "max_cordon_seconds",
        shown: r#"`max_cordon_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_MAX_CORDON_SECONDS`"#,
        default: r#"`1800`"#,
        meaning: r#"a pass cordoned for longer uncordons and goes on uncordoned; more than 0"#,
    },
    KeyDoc {
        key: "on_cordon_failure",
        shown: r#"`on_cordon_failure`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_ON_CORDON_FAILURE`"#,
        default: r#"`clean`"#,
        meaning: r#"`clean` anyway (with a warning) or `skip` to the next tick"#,
    },
    KeyDoc {
        key: "log_level",
        shown: r#"`log_level`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_LOG_LEVEL`"#,
        default: r#"`info`"#,
        meaning: r#"`error`, `warn`, `info`, `debug`, `trace` (`RUST_LOG` overrides)"#,
    },
    KeyDoc {
        key: "floor",
        shown: r#"`floor`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_FLOOR`"#,
        default: r#"`0` (none)"#,
        meaning: r#"what pressure from outside never removes from the engine configured without tables: a percentage of its filesystem (`15`, `"15%"`) or a size (`"20GiB"`); its most recently used images stay (see [Shared disks](#shared-disks))"#,
    },
    KeyDoc {
        key: "threshold_critical",
        shown: r#"`threshold_critical`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_THRESHOLD_CRITICAL`"#,
        default: r#"derived: `95` (or `threshold_high` when higher)"#,
        meaning: r#"at or above this percentage of a filesystem, floors are ignored and the min age is `critical_min_age_seconds` for the pass; at least `threshold_high` in relative mode"#,
    },
    KeyDoc {
        key: "critical_min_age_seconds",
        shown: r#"`critical_min_age_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_CRITICAL_MIN_AGE_SECONDS`"#,
        default: r#"`120`"#,
        meaning: r#"the min age at or above `threshold_critical` (the kubelet's own minimum)"#,
    },
    KeyDoc {
        key: "engine",
        shown: r#"`[[engine]]`"#,
        env: r#"(file only: `DOCKER_IMAGE_CLEANER_ENGINE` is not read, and a warning says so)"#,
        default: r#"one engine, `default`"#,
        meaning: r#"several engines on one node, one table each: `name` (lower-case letters, digits, `-`, `_`, `.`; unique), `kind` (`"docker"`, the default: the Docker Engine API, Docker or Podman; `"cri"`: the kubelet's runtime, see [The kubelet's image store](#the-kubelets-image-store-cri)), `docker_host` (kind `docker`, as above; empty: the local socket), `cri_endpoint` (kind `cri`: the runtime's socket, `unix:///absolute/path`; default `unix:///run/containerd/containerd.sock`, CRI-O's is `unix:///var/run/crio/crio.sock`), `paths` (its data, at least one absolute path), `floor` (as above). With tables, the top-level `docker_host`, `path_to_check` and `floor` must stay at their defaults"#,
    },
    KeyDoc {
        key: "metrics_textfile",
        shown: r#"`metrics_textfile`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_METRICS_TEXTFILE`"#,
        default: r#"(none)"#,
        meaning: r#"node_exporter textfile to write the [metrics](#metrics) to, atomically, at start and after every pass: an absolute path ending in `.prom` in the collector's directory. Empty: none"#,
    },
    KeyDoc {
        key: "metrics_listen",
        shown: r#"`metrics_listen`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_METRICS_LISTEN`"#,
        default: r#"(none)"#,
        meaning: r#"serve the [metrics](#metrics) on `http://ADDRESS/metrics`: an IP address and a port, e.g. `127.0.0.1:9717` (`[::1]:9717` for IPv6). Empty: no endpoint. Changes only with a restart"#,
    },
    KeyDoc {
        key: "build_cache_min_age_seconds",
        shown: r#"`build_cache_min_age_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_BUILD_CACHE_MIN_AGE_SECONDS`"#,
        default: r#"`3600`"#,
        meaning: r#"build-cache records used more recently stay when a pass under pressure prunes the build cache (at the critical watermark at most `critical_min_age_seconds`); 0 or more"#,
    },
    KeyDoc {
        key: "max_unused_age_seconds",
        shown: r#"`max_unused_age_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_MAX_UNUSED_AGE_SECONDS`"#,
        default: r#"`0` (off)"#,
        meaning: r#"images unused for longer are removed at every pass, even below high, every protection applying, once the last-use table has covered the engine that long; 0, or at least `min_age_seconds`; not with strategy `prune`"#,
    },
    KeyDoc {
        key: "max_unused_age_cordon",
        shown: r#"`max_unused_age_cordon`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_MAX_UNUSED_AGE_CORDON`"#,
        default: r#"`false`"#,
        meaning: r#"cordon the node for a pass below high that only removes images for `max_unused_age_seconds` (by default such a pass runs uncordoned)"#,
    },
    KeyDoc {
        key: "keep_labels",
        shown: r#"`keep_labels`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_KEEP_LABELS`"#,
        default: r#"`[]`"#,
        meaning: r#"image labels that keep an image, like a `keep` pattern: `key` (any value) or `key=value` (exact; split at the first `=`). Env: comma-separated"#,
    },
    KeyDoc {
        key: "fleet_max_cordoned",
        shown: r#"`fleet_max_cordoned`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_FLEET_MAX_CORDONED`"#,
        default: r#"`0`"#,
        meaning: r#"at most this many nodes cordoned for cleaning at once, through Lease slots (see [Fleets](#fleets)); 0: no coordination. At most 100"#,
    },
    KeyDoc {
        key: "fleet_namespace",
        shown: r#"`fleet_namespace`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_FLEET_NAMESPACE`"#,
        default: r#"`kube-system`"#,
        meaning: r#"namespace of the slot Leases"#,
    },
    KeyDoc {
        key: "fleet_lease_seconds",
        shown: r#"`fleet_lease_seconds`"#,
        env: r#"`DOCKER_IMAGE_CLEANER_FLEET_LEASE_SECONDS`"#,
        default: r#"`60`"#,
        meaning: r#"a slot not renewed for this long (plus a clock-skew margin) is free; renewed every third of it. Whole seconds, 3 to 3600"#,
    },
];

/// Every exit code of the binary and what it means.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (0, "done; for `run`, a clean stop after SIGTERM or SIGINT"),
    (
        1,
        "a runtime failure: Docker or a watched path cannot be reached (`once`, `status`), `metrics_listen` cannot be bound (`run`: in use, or not an address of this host), or the daemon did not answer a `reload`; a state file or a metrics textfile that cannot be read or written is only a warning",
    ),
    (
        75,
        "another instance holds the lock on the state directory (`run` and `once` take it; a dry run and `status` do not)",
    ),
    (
        78,
        "invalid configuration, or one that cannot work on this node (`run` before it reports ready, `check-config`, `reload`): a bad key or value, a kubeconfig that exists but cannot be used, a watched path that does not exist, a state directory other users could tamper with. The unit's `RestartPreventExitStatus=78` stops a restart loop",
    ),
];

/// The README's configuration table.
pub fn markdown_keys() -> String {
    let mut out = String::from("| key | environment | default | meaning |\n|---|---|---|---|\n");
    for k in KEYS {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            k.shown, k.env, k.default, k.meaning
        ));
    }
    out
}

/// The README's exit-code table.
pub fn markdown_exit_codes() -> String {
    let mut out = String::from("| exit | meaning |\n|---|---|\n");
    for (code, meaning) in EXIT_CODES {
        out.push_str(&format!("| {code} | {meaning} |\n"));
    }
    out
}

/// The man page's CONFIGURATION and EXIT STATUS sections, as help2man `--include` text.
pub fn man_sections() -> String {
    let mut out = String::from("[CONFIGURATION]\n");
    out.push_str(
        "Built-in defaults, then /etc/docker-image-cleaner.toml (or the file named by \\-\\-config), then\n\
         /etc/default/docker-image-cleaner, then the environment, then command-line flags.\n\
         .B check\\-config\n\
         prints each value with where it came from.\n\
         Durations are seconds, or text with units (2m, 1h30m, 250ms); sizes take units (50GiB).\n",
    );
    for k in KEYS {
        out.push_str(&format!(".TP\n.B {}\n", roff(k.shown.trim_matches('`'))));
        out.push_str(&format!(
            "Environment: {}. Default: {}.\n.br\n{}\n",
            inline(k.env),
            inline(k.default),
            inline(k.meaning)
        ));
    }
    out.push_str("\n[EXIT STATUS]\n");
    for (code, meaning) in EXIT_CODES {
        out.push_str(&format!(".TP\n.B {code}\n{}\n", inline(meaning)));
    }
    out
}

/// Escapes text for roff: backslashes, and a line that would start with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

/// One Markdown cell as roff: code in bold, links as their text, `\|` as a bar.
fn inline(md: &str) -> String {
    let md = md.replace("\\|", "|");
    let mut out = String::new();
    let mut rest = md.as_str();
    while let Some(i) = rest.find(['`', '[']) {
        out.push_str(&roff_text(&rest[..i]));
        let tail = &rest[i..];
        if let Some(code) = tail.strip_prefix('`')
            && let Some(end) = code.find('`')
        {
            out.push_str(&format!("\\fB{}\\fR", roff_text(&code[..end])));
            rest = &code[end + 1..];
        } else if let Some(link) = tail.strip_prefix('[')
            && let Some(close) = link.find("](")
            && let Some(end) = link[close..].find(')')
        {
            out.push_str(&roff_text(&link[..close]));
            rest = &link[close + end + 1..];
        } else {
            out.push_str(&roff_text(&tail[..1]));
            rest = &tail[1..];
        }
    }
    out.push_str(&roff_text(rest));
    // A line of the page must not start with a control character.
    match out.chars().next() {
        Some('.' | '\'') => format!("\\&{out}"),
        _ => out,
    }
}

/// Text within a line: backslashes and hyphens escaped.
fn roff_text(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn every_key_is_documented_in_the_order_of_the_file() {
        let documented: Vec<&str> = KEYS.iter().map(|k| k.key).collect();
        assert_eq!(documented, config::KEYS);
        for k in KEYS.iter().filter(|k| k.key != "engine") {
            let var = config::env_var(k.key);
            assert_eq!(k.env, format!("`{var}`"), "{}", k.key);
        }
    }

    #[test]
    fn the_readme_holds_the_generated_tables() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
        )
        .unwrap_or_default();
        assert!(
            readme.contains(&markdown_keys()),
            "README.md's configuration table differs from src/docs.rs: paste the output of `docker-image-cleaner docs markdown`"
        );
        assert!(
            readme.contains(&markdown_exit_codes()),
            "README.md's exit-code table differs from src/docs.rs: paste the output of `docker-image-cleaner docs markdown`"
        );
    }

    #[test]
    fn the_man_sections_name_every_key_and_exit_code_in_plain_roff() {
        let man = man_sections();
        for k in KEYS {
            let shown = roff(k.shown.trim_matches('`'));
            assert!(man.contains(&format!(".B {shown}\n")), "{}", k.key);
        }
        for code in ["0", "1", "75", "78"] {
            assert!(man.contains(&format!(".B {code}\n")), "{code}");
        }
        assert!(!man.contains('`'), "{man}");
        for line in man.lines() {
            assert!(
                !line.starts_with('\'')
                    && (!line.starts_with('.')
                        || line.starts_with(".TP")
                        || line.starts_with(".B ")
                        || line.starts_with(".br")),
                "{line}"
            );
        }
        assert_eq!(
            inline("`a-b` [Fleets](#fleets) x \\| y"),
            "\\fBa\\-b\\fR Fleets x | y"
        );
    }
}
