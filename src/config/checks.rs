//! Syntax checks of single values that go on to other systems: the Kubernetes node name (it
//! becomes part of a request path), the Docker endpoint (`DOCKER_HOST`) and a CRI runtime's
//! socket (`cri_endpoint`). Pure functions of the text; they neither resolve nor connect to
//! anything.

/// Longest Kubernetes object name that is a DNS subdomain (RFC 1123).
pub const MAX_NODE_NAME_LEN: usize = 253;

/// Longest label (the part between two dots) of a DNS subdomain.
pub const MAX_LABEL_LEN: usize = 63;

/// Docker's clients talk to this port when a `tcp://` endpoint names none.
pub const DEFAULT_DOCKER_TCP_PORT: u16 = 2375;

/// Checks that `name` is a valid Kubernetes node name: an RFC 1123 DNS subdomain, as the API
/// server requires (lower-case letters, digits, `-` and `.`; every label starts and ends with a
/// letter or a digit and has at most 63 characters; at most 253 in all). The caller decides
/// about surrounding whitespace and the empty name.
pub fn check_node_name(name: &str) -> Result<(), String> {
    let rule = "a Kubernetes node name is lower-case letters, digits, '-' and '.', \
                each dot-separated part starting and ending with a letter or a digit \
                (an RFC 1123 DNS subdomain)";
    if name.is_empty() {
        return Err(format!("is empty: {rule}"));
    }
    if name.len() > MAX_NODE_NAME_LEN {
        return Err(format!(
            "is {} characters long, more than {MAX_NODE_NAME_LEN}: {rule}",
            name.chars().count()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        let hint = if c.is_ascii_uppercase() {
            " (node names are lower case)"
        } else {
            ""
        };
        return Err(format!("contains {c:?}{hint}: {rule}"));
    }
    for label in name.split('.') {
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "has a part {label:?} longer than {MAX_LABEL_LEN} characters: {rule}"
            ));
        }
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !alnum(label.chars().next()) || !alnum(label.chars().last()) {
            return Err(if label.is_empty() {
                format!("has an empty part between two dots or at an end: {rule}")
            } else {
                format!(
                    "has a part {label:?} that does not start and end with a letter or a digit: {rule}"
                )
            });
        }
    }
    Ok(())
}

/// Checks a Docker endpoint as Docker's clients read `DOCKER_HOST` and returns it in the form
/// the program connects to:
/// - `unix:///absolute/path`: the path must be absolute and not empty;
/// - `tcp://host[:port]` or `http://host[:port]`: a host name, an IPv4 address or an IPv6 address
///   in brackets; a port in 1..=65535, [`DEFAULT_DOCKER_TCP_PORT`] when none is given (it is then
///   added, so that no client falls back to port 80); a single trailing `/` is dropped.
///
/// `https://` and `ssh://` are refused with a message saying that this build does not support
/// them (bollard is built without TLS and SSH), and so is any other scheme.
pub fn check_docker_host(host: &str) -> Result<String, String> {
    if let Some(c) = host.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "contains {c:?}: a Docker endpoint has no spaces or control characters"
        ));
    }
    let Some((scheme, rest)) = host.split_once("://") else {
        return Err(
            "must start with unix://, tcp:// or http:// (e.g. unix:///var/run/docker.sock)".into(),
        );
    };
    match scheme {
        "unix" => {
            if rest.is_empty() {
                Err("unix:// needs the socket's path, e.g. unix:///var/run/docker.sock".into())
            } else if !rest.starts_with('/') {
                Err(format!(
                    "the socket path {rest:?} must be absolute, e.g. unix:///var/run/docker.sock"
                ))
            } else {
                Ok(host.to_string())
            }
        }
        "tcp" | "http" => {
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            if authority.contains(['/', '?', '#']) {
                return Err(format!(
                    "{scheme}:// takes a host and a port only: no path, query or fragment"
                ));
            }
            let (name, port) = split_host_port(authority)?;
            Ok(format!("{scheme}://{name}:{port}"))
        }
        "https" | "ssh" => Err(format!(
            "{scheme}:// is not supported by this build (no TLS or SSH transport); \
             use unix://, or tcp:// or http:// through a local proxy or tunnel"
        )),
        "npipe" | "fd" => Err(format!(
            "{scheme}:// is not supported; use unix://, tcp:// or http://"
        )),
        _ => Err(format!(
            "unknown scheme {scheme:?}: use unix://, tcp:// or http://"
        )),
    }
}

/// containerd's CRI socket, the kubelet's default `--container-runtime-endpoint`.
pub const DEFAULT_CRI_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// Checks a CRI runtime's endpoint as the kubelet's `--container-runtime-endpoint` names it:
/// `unix:///absolute/path` (containerd's `unix:///run/containerd/containerd.sock`, CRI-O's
/// `unix:///var/run/crio/crio.sock`). A bare absolute path, which crictl still accepts, is
/// refused with the `unix://` form to write instead; so is any other scheme (the runtimes
/// listen on unix sockets only).
pub fn check_cri_endpoint(endpoint: &str) -> Result<String, String> {
    if let Some(c) = endpoint
        .chars()
        .find(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "contains {c:?}: a CRI endpoint has no spaces or control characters"
        ));
    }
    if endpoint.starts_with('/') {
        return Err(format!(
            "write it as unix://{endpoint} (the form the kubelet's --container-runtime-endpoint takes)"
        ));
    }
    match endpoint.split_once("://") {
        Some(("unix", path)) if path.starts_with('/') && path.len() > 1 => Ok(endpoint.to_string()),
        Some(("unix", path)) => Err(format!(
            "the socket path {path:?} must be absolute, e.g. {DEFAULT_CRI_ENDPOINT}"
        )),
        Some((scheme, _)) => Err(format!(
            "{scheme}:// is not supported: a CRI runtime listens on a unix socket, e.g. {DEFAULT_CRI_ENDPOINT} (containerd) or unix:///var/run/crio/crio.sock (CRI-O)"
        )),
        None => Err(format!(
            "must be unix:///absolute/path, e.g. {DEFAULT_CRI_ENDPOINT} (containerd) or unix:///var/run/crio/crio.sock (CRI-O)"
        )),
    }
}

/// Splits `host[:port]` (IPv6 in brackets), checking both parts.
fn split_host_port(authority: &str) -> Result<(&str, u16), String> {
    let default = || format!("(without one, Docker's clients use {DEFAULT_DOCKER_TCP_PORT})");
    let (name, port) = if let Some(inner) = authority.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return Err(format!(
                "{authority:?}: an IPv6 address needs its closing ']'"
            ));
        };
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("{addr:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                format!("{authority:?}: expected ':port' after the IPv6 address")
            })?),
        };
        (&authority[..addr.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    if name.is_empty() {
        return Err("needs a host, e.g. tcp://127.0.0.1:2375".into());
    }
    if !name.starts_with('[')
        && !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!(
            "{name:?} is not a host name or an IP address (no user, path or query here)"
        ));
    }
    let port = match port {
        None => DEFAULT_DOCKER_TCP_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "port {p:?} must be a number from 1 to 65535 {}",
                    default()
                ));
            }
        },
    };
    Ok((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_subdomains() {
        let long_label = "a".repeat(63);
        let ok = [
            "n1",
            "node-1",
            "ip-10-0-0-1.ec2.internal",
            "1",
            "a.b.c",
            long_label.as_str(),
        ];
        for name in ok {
            assert_eq!(check_node_name(name), Ok(()), "{name:?}");
        }
        let max = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "a".repeat(61));
        assert_eq!(max.len(), 253);
        assert_eq!(check_node_name(&max), Ok(()));

        let too_long_label = "a".repeat(64);
        let too_long = format!("{max}a");
        let bad = [
            "",
            "../../api/v1/namespaces/kube-system/secrets/x",
            "node-1?dryRun=All",
            "node-1/status",
            "node 1",
            "node-1\n",
            "Node-1",
            "node_1",
            "-node",
            "node-",
            "a..b",
            ".a",
            "a.",
            "a.-b",
            "nœud",
            "%2e%2e",
            too_long_label.as_str(),
            too_long.as_str(),
        ];
        for name in bad {
            assert!(check_node_name(name).is_err(), "{name:?} accepted");
        }
        assert!(
            check_node_name("Node-1")
                .unwrap_err()
                .contains("lower case")
        );
    }

    #[test]
    fn docker_hosts_are_checked_and_get_docker_s_default_port() {
        let ok = [
            ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
            ("unix:///nonexistent.sock", "unix:///nonexistent.sock"),
            ("tcp://127.0.0.1:2375", "tcp://127.0.0.1:2375"),
            ("tcp://127.0.0.1", "tcp://127.0.0.1:2375"),
            ("tcp://docker.internal:1/", "tcp://docker.internal:1"),
            ("http://localhost:65535", "http://localhost:65535"),
            ("tcp://[::1]:2375", "tcp://[::1]:2375"),
            ("tcp://[::1]", "tcp://[::1]:2375"),
        ];
        for (given, normal) in ok {
            assert_eq!(check_docker_host(given).as_deref(), Ok(normal), "{given:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("tcp://127.0.0.1:99999", "99999"),
            ("tcp://127.0.0.1:0", "1 to 65535"),
            ("tcp://127.0.0.1:", "port"),
            ("tcp://127.0.0.1:-1", "port"),
            ("tcp://127.0.0.1:+80", "port"),
            ("tcp://", "needs a host"),
            ("tcp://:2375", "needs a host"),
            ("http://user@host:2375", "not a host name"),
            ("tcp://host:2375/v1.41", "no path"),
            ("tcp://[::1", "closing"),
            ("tcp://[zz]:1", "IPv6"),
            ("unix://", "path"),
            ("unix://var/run/docker.sock", "absolute"),
            ("https://docker.example:2376", "not supported by this build"),
            ("ssh://me@host", "not supported by this build"),
            ("npipe:////./pipe/docker_engine", "not supported"),
            ("ftp://host", "unknown scheme"),
            ("/var/run/docker.sock", "must start with"),
            ("tcp://host name", "spaces"),
            ("unix:///a\nb", "control"),
        ];
        for (given, wanted) in bad {
            match check_docker_host(given) {
                Ok(v) => panic!("{given:?} accepted as {v:?}"),
                Err(e) => assert!(e.contains(wanted), "{given:?}: {e}"),
            }
        }
    }
}
