//! `[[engine]]` tables of kind `cri`: the endpoint, its default and its checks, and the keys
//! that belong to one kind only, each refused with the table and the field named.

use super::*;

#[test]
fn a_cri_table_takes_its_endpoint_or_containerd_s_default() {
    let c = load_text(
        r#"
[[engine]]
name = "docker"
paths = ["/var/lib/docker"]

[[engine]]
name = "kubelet"
kind = "cri"
cri_endpoint = "unix:///var/run/crio/crio.sock"
paths = ["/var/lib/containers"]
floor = "5GiB"

[[engine]]
name = "containerd"
kind = "cri"
paths = ["/var/lib/containerd"]
"#,
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(c.engines.len(), 3);
    assert_eq!(c.engines[0].kind(), EngineKind::Docker);
    assert_eq!(c.engines[0].endpoint(), "unix:///var/run/docker.sock");
    assert_eq!(c.engines[1].kind(), EngineKind::Cri);
    assert_eq!(
        c.engines[1].cri_endpoint.as_deref(),
        Some("unix:///var/run/crio/crio.sock")
    );
    assert_eq!(c.engines[1].docker_host, None);
    assert_eq!(c.engines[1].floor, Floor::Bytes(5 << 30));
    assert_eq!(c.engines[2].endpoint(), DEFAULT_CRI_ENDPOINT);
    // The trigger measures every engine's paths.
    assert!(
        c.paths
            .contains(&std::path::PathBuf::from("/var/lib/containerd"))
    );

    // check-config shows the kind and the endpoint, and what it prints loads again.
    let loaded = load_text(
        "[[engine]]\nname = \"k\"\nkind = \"cri\"\npaths = [\"/var/lib/containerd\"]\n",
        &[],
    )
    .unwrap();
    let text = loaded.render();
    assert!(
        text.contains(&format!(
            "kind = \"cri\", cri_endpoint = \"{DEFAULT_CRI_ENDPOINT}\""
        )),
        "{text}"
    );
    // The default engine stays a Docker engine.
    let c = load_text("", &[]).unwrap().config;
    assert_eq!(c.engines[0].kind(), EngineKind::Docker);
}

#[test]
fn bad_cri_tables_name_the_table_the_field_and_the_value() {
    let table = |lines: &str| format!("[[engine]]\nname = \"k\"\npaths = [\"/a\"]\n{lines}");
    let cases = [
        (
            table("kind = \"containerd\"\n"),
            "[[engine]] number 1 (\"k\"), kind: must be \"docker\"",
        ),
        (table("kind = \"containerd\"\n"), "\"containerd\""),
        (
            table("kind = \"cri\"\ndocker_host = \"unix:///run/d.sock\"\n"),
            "docker_host: is for kind = \"docker\"",
        ),
        (
            table("cri_endpoint = \"unix:///run/containerd/containerd.sock\"\n"),
            "cri_endpoint: needs kind = \"cri\"",
        ),
        (
            table("kind = \"cri\"\ncri_endpoint = \"/run/containerd/containerd.sock\"\n"),
            "write it as unix:///run/containerd/containerd.sock",
        ),
        (
            table("kind = \"cri\"\ncri_endpoint = \"tcp://10.0.0.1:1234\"\n"),
            "tcp:// is not supported",
        ),
        (
            table("kind = \"cri\"\ncri_endpoint = \"unix://run/crio.sock\"\n"),
            "must be absolute",
        ),
        (
            table("kind = \"cri\"\ncri_endpoint = \"unix:///run/a b.sock\"\n"),
            "no spaces",
        ),
        (
            "[[engine]]\nname = \"k\"\nkind = \"cri\"\n".to_string(),
            "paths = [\"/var/lib/containerd\"]",
        ),
        (table("kind = 1\n"), "invalid type"),
    ];
    for (text, want) in cases {
        let e = error_text(&text, &[]);
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn cri_endpoints_are_unix_sockets_with_absolute_paths() {
    for ok in [
        "unix:///run/containerd/containerd.sock",
        "unix:///var/run/crio/crio.sock",
    ] {
        assert_eq!(check_cri_endpoint(ok).as_deref(), Ok(ok));
    }
    for bad in [
        "",
        "unix://",
        "unix:///",
        "npipe:////./pipe/containerd",
        "crio",
    ] {
        assert!(check_cri_endpoint(bad).is_err(), "{bad:?}");
    }
}
