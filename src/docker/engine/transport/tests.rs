use super::*;
use std::path::Path;

#[test]
fn endpoints_parse_as_configured() {
    let unix = Endpoint::parse("unix:///run/docker.sock").unwrap();
    assert_eq!(socket_path(&unix), Some(Path::new("/run/docker.sock")));
    assert_eq!(unix.shown, "unix:///run/docker.sock");
    for host in [
        "tcp://127.0.0.1:2375",
        "http://docker:2375/",
        "tcp://[::1]:2375",
    ] {
        let e = Endpoint::parse(host).unwrap();
        assert!(socket_path(&e).is_none(), "{host}");
    }
    for bad in [
        "unix://run/docker.sock",
        "tcp://host",
        "https://h:1",
        "ssh://h",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
}

/// An answer past the budget fails the read with an error that says so, whatever the writer.
#[tokio::test]
async fn an_answer_past_its_budget_fails_the_read() {
    use tokio::io::AsyncReadExt;
    let data = vec![b'x'; 10_000];
    let mut within = Budget::new(&data[..], Some(20_000));
    let mut out = Vec::new();
    within.read_to_end(&mut out).await.unwrap();
    assert_eq!(out.len(), 10_000);

    let mut past = Budget::new(&data[..], Some(4_096));
    let e = past.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert!(e.to_string().contains("larger than 0 MiB"), "{e}");
    let endless = tokio::io::repeat(b'x');
    let mut bounded = Budget::new(endless, Some(1 << 20));
    let e = bounded.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
}

/// A socket nobody listens on: the error names it and says what is likely wrong.
#[tokio::test]
async fn a_failed_connection_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    let e = Endpoint::parse(&format!("unix://{}", path.display()))
        .unwrap()
        .connect()
        .await
        .err()
        .expect("nothing there");
    let text = e.to_string();
    assert!(
        text.contains(&format!("cannot connect to unix://{}", path.display()))
            && text.contains("does not exist"),
        "{text}"
    );
    // Bound, then nobody accepting: refused.
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(listener);
    let e = Endpoint::parse(&format!("unix://{}", path.display()))
        .unwrap()
        .connect()
        .await
        .err()
        .expect("nobody listens");
    assert!(e.to_string().contains("nothing listens"), "{e}");
}
