//! Files and streams that are hostile or unlucky, on the Kubernetes side, in process against the
//! fake API server: a kubeconfig, certificate authority, token file, client certificate or key
//! that is a FIFO (once hung forever), `/dev/zero` (once grew the process until the kernel
//! killed it), a directory or far too large; an exec plugin that prints without end. Each must
//! end at once in an error that names the file and says what it is, never touching the node.
//!
//! Every wait is wrapped in [`no_hang`]: a read that hangs fails the test after a minute instead
//! of hanging the suite (a hang detector, not a time limit on the code).

use std::path::{Path, PathBuf};
use std::time::Duration;

use docker_image_cleaner::config::Config;
use docker_image_cleaner::node::{Cordoner, chain};
use serde_json::json;

use crate::kube_fake::{FakeKube, exec_user, quick_timing};
use crate::util::host;

const NODE: &str = "n1";

/// The result of `f`, or a panic after a minute: it hung.
async fn no_hang<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after a minute (it hangs)"))
}

fn cordoner(fake: &FakeKube, kubeconfig: &Path) -> Cordoner {
    let config = Config {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        ..fake.config(NODE)
    };
    Cordoner::new(&config).with_timing(quick_timing())
}

/// A FIFO nobody writes to, at `path`.
fn fifo(path: &Path) -> PathBuf {
    host::run_ok(
        "mkfifo",
        &[path.to_str().expect("utf-8 temp path")],
        Duration::from_secs(20),
    );
    path.to_path_buf()
}

/// The bad files of every kind: (path, what the error says it is).
fn bad_files(fake: &FakeKube) -> Vec<(PathBuf, &'static str)> {
    let big = fake.dir().join("huge");
    std::fs::write(&big, vec![b'#'; 5 << 20]).expect("write a huge file");
    vec![
        (
            fifo(&fake.dir().join("fifo")),
            "is a FIFO, not a regular file",
        ),
        (PathBuf::from("/dev/zero"), "is a character device"),
        (fake.dir().to_path_buf(), "is a directory"),
        (big, "is larger than"),
    ]
}

/// Recovers with the kubeconfig at `kubeconfig`: the error, which must name `bad` and say `is`.
async fn refused(fake: &FakeKube, kubeconfig: &Path, bad: &Path, is: &str) -> (bool, String) {
    let mut c = cordoner(fake, kubeconfig);
    let err = no_hang(&bad.display().to_string(), c.recover())
        .await
        .expect_err("refused");
    let text = chain(&err);
    assert!(
        text.contains(&bad.display().to_string()) && text.contains(is),
        "names {} and says it {is}: {text}",
        bad.display()
    );
    assert!(fake.requests().is_empty(), "{text}");
    (err.is_config(), text)
}

#[tokio::test]
async fn a_kubeconfig_that_is_not_a_small_regular_file_is_refused_naming_it() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    for (bad, is) in bad_files(&fake) {
        let (config, text) = refused(&fake, &bad, &bad, is).await;
        assert!(config, "a configuration error (exit 78 at start): {text}");
    }
}

#[tokio::test]
async fn a_certificate_authority_that_is_not_a_small_regular_file_is_refused_naming_it() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    for (i, (bad, is)) in bad_files(&fake).into_iter().enumerate() {
        let kubeconfig = fake.dir().join(format!("ca-{i}.kubeconfig"));
        fake.write_kubeconfig_raw(
            &kubeconfig,
            &format!("    certificate-authority: {}\n", bad.display()),
            &format!("    token: {}\n", fake.token()),
        );
        let (config, text) = refused(&fake, &kubeconfig, &bad, is).await;
        assert!(config, "a configuration error (exit 78 at start): {text}");
        assert!(text.contains("certificate authority"), "{text}");
    }
}

/// A token file, client certificate or key that cannot be read is a credential that cannot be
/// had now (tried again at the next call, not a configuration error).
#[tokio::test]
async fn a_token_file_or_client_certificate_or_key_that_is_not_a_small_regular_file_is_named() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let pem = fake.dir().join("client.pem");
    std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").expect("write pem");
    for (i, (bad, is)) in bad_files(&fake).into_iter().enumerate() {
        let users = [
            ("token file", format!("    tokenFile: {}\n", bad.display())),
            (
                "client certificate",
                format!(
                    "    client-certificate: {}\n    client-key: {}\n",
                    bad.display(),
                    pem.display()
                ),
            ),
            (
                "client key",
                format!(
                    "    client-certificate: {}\n    client-key: {}\n",
                    pem.display(),
                    bad.display()
                ),
            ),
        ];
        for (what, user) in users {
            let kubeconfig = fake
                .dir()
                .join(format!("user-{i}-{}.kubeconfig", what.len()));
            fake.write_kubeconfig_user(&kubeconfig, &user);
            let (config, text) = refused(&fake, &kubeconfig, &bad, is).await;
            assert!(
                !config,
                "{what}: retried later, not a configuration error: {text}"
            );
            assert!(text.contains(what), "{text}");
        }
    }
}

/// A plugin that prints without end on stdout is killed as soon as it passed the limit (it once
/// reached 11 GB before its time limit); one that floods its stderr and then prints its
/// credential works, only the head of its stderr kept.
#[tokio::test]
async fn an_exec_plugin_printing_without_end_is_stopped() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let endless = fake.write_script("endless.sh", "exec cat /dev/zero\n");
    let kubeconfig = fake.dir().join("endless.kubeconfig");
    fake.write_kubeconfig_user(&kubeconfig, &exec_user(&endless));
    let mut c = cordoner(&fake, &kubeconfig);
    let err = no_hang("an endless plugin", c.recover())
        .await
        .expect_err("refused");
    let text = chain(&err);
    assert!(
        text.contains("endless.sh") && text.contains("printed more than 1048576 bytes on stdout"),
        "{text}"
    );
    assert!(!err.is_config(), "{text}");

    let runs = fake.dir().join("runs");
    let plugin = fake.exec_plugin(&runs, None);
    let noisy = fake.write_script(
        "noisy.sh",
        &format!(
            "head -c 50000000 /dev/zero >&2\nexec {}\n",
            fake.dir().join("plugin.sh").display()
        ),
    );
    assert!(plugin.contains("plugin.sh"), "{plugin}");
    let kubeconfig = fake.dir().join("noisy.kubeconfig");
    fake.write_kubeconfig_user(&kubeconfig, &exec_user(&noisy));
    let mut c = cordoner(&fake, &kubeconfig);
    no_hang("a plugin flooding its stderr", c.recover())
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
}

/// An API server that answers every request with a body that never ends: the call fails at the
/// bound, saying so; and one nobody listens on: the error names it.
#[tokio::test]
async fn an_endless_answer_of_the_api_server_is_cut_and_an_unreachable_one_named() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let fake = FakeKube::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    std::thread::spawn(move || {
        let Ok((conn, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
        }
        let mut out = conn;
        let _ = out.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4294967296\r\n\r\n{",
        );
        let block = vec![b' '; 64 * 1024];
        while counter.load(Ordering::Relaxed) < 1 << 30 {
            if out.write_all(&block).is_err() {
                break;
            }
            counter.fetch_add(block.len() as u64, Ordering::Relaxed);
        }
    });
    for (server, says) in [
        (format!("http://127.0.0.1:{port}"), "larger than 16 MiB"),
        (
            "http://127.0.0.1:1".to_string(),
            "API server http://127.0.0.1:1",
        ),
    ] {
        let kubeconfig = fake.dir().join(format!("{}.kubeconfig", server.len()));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
            ),
        )
        .expect("kubeconfig");
        let mut c = cordoner(&fake, &kubeconfig);
        let err = no_hang(&server, c.recover()).await.expect_err("fails");
        let text = chain(&err);
        assert!(text.contains(says), "{server}: {text}");
    }
    assert!(
        sent.load(Ordering::Relaxed) < 64 << 20,
        "read {} MiB of one answer",
        sent.load(Ordering::Relaxed) >> 20
    );
}

mod docker;
