use super::*;
use secrecy::ExposeSecret;

const V1: &str = "client.authentication.k8s.io/v1";

#[test]
fn reads_a_token_with_its_expiry() {
    let out = br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t0k","expirationTimestamp":"2099-01-01T00:00:00Z"}}"#;
    let issued = parse(out, V1).map_err(|e| e.to_string()).expect("parses");
    assert_eq!(
        issued.token.as_ref().map(|t| t.expose_secret()),
        Some("t0k")
    );
    assert_eq!(
        issued.expires.map(|t| t.to_string()),
        Some("2099-01-01T00:00:00Z".into())
    );
}

#[test]
fn errors_never_contain_the_output() {
    let secret = "s3cr3t-t0ken-value";
    for out in [
        format!("token={secret}"),
        format!(r#"{{"kind":"Other","apiVersion":"{V1}","status":{{"token":"{secret}"}}}}"#),
        format!(r#"{{"kind":"ExecCredential","apiVersion":"v0","status":{{"token":"{secret}"}}}}"#),
        format!(
            r#"{{"kind":"ExecCredential","apiVersion":"{V1}","status":{{"clientKeyData":"{secret}"}}}}"#
        ),
        format!(
            r#"{{"kind":"ExecCredential","apiVersion":"{V1}","status":{{"token":"{secret}","expirationTimestamp":"soon"}}}}"#
        ),
        format!(r#"{{"kind":"ExecCredential","apiVersion":"{V1}"}}"#),
    ] {
        let Err(why) = parse(out.as_bytes(), V1) else {
            panic!("accepted {out}");
        };
        assert!(!why.contains(secret), "{why}");
    }
}

/// A failed plugin's stderr never shows what it printed on stdout, however it looks.
#[test]
fn stderr_is_scrubbed_of_every_word_printed_on_stdout() {
    let stdout = br#"{"status":{"token":"plainletters"}} and k3y-abc"#;
    let stderr = b"refresh failed for plainletters (k3y-abc); try again";
    let shown = scrubbed(stderr, stdout);
    assert!(
        !shown.contains("plainletters") && !shown.contains("k3y-abc"),
        "{shown}"
    );
    assert!(shown.contains("refresh failed for [REDACTED]"), "{shown}");
    let long = vec![b'e'; 10_000];
    assert!(scrubbed(&long, b"").chars().count() <= STDERR_SHOWN_CHARS + 1);
}

#[test]
fn settings_a_daemon_cannot_honour_are_named() {
    let exec = |api: Option<&str>, mode| ExecConfig {
        api_version: api.map(String::from),
        command: Some("/bin/true".into()),
        interactive_mode: mode,
        ..ExecConfig::default()
    };
    assert_eq!(
        refusal(&exec(Some(V1), Some(ExecInteractiveMode::Never))),
        None
    );
    assert_eq!(refusal(&exec(Some(V1), None)), None);
    assert!(refusal(&exec(Some(V1), Some(ExecInteractiveMode::Always))).is_some());
    assert!(refusal(&exec(Some("client.authentication.k8s.io/v1alpha1"), None)).is_some());
    assert!(refusal(&exec(None, None)).is_some());
}
