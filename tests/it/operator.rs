//! An operator's first hour, as the built binary meets it: `systemctl start` (a `run` under a
//! fake notify socket) fails before `READY=1` when the service cannot work as configured and
//! starts (and waits) when what it needs is only not there yet; `reload` (the unit's
//! `ExecReload=`) fails and changes nothing on an invalid file; `check-config` checks the
//! kubeconfig and the files it names; the environment file is read by every command; a
//! kubeconfig where `ProtectHome=yes` hides it is a warning naming that setting; a kubeconfig with
//! its own CA, or an http:// server, needs no system CA store; errors reach stderr without a
//! terminal. No Docker is needed: the endpoint is a socket nobody listens on.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::kube_fake::FakeKube;
use crate::util::cleaner::{BIN, Cleaner};
use crate::util::daemon::Daemon;
use crate::util::wait_until;

const NODE: &str = "n1";
const SOON: Duration = Duration::from_secs(30);
const WATCHDOG: Duration = Duration::from_secs(2);
const EXIT_CONFIG: i32 = 78;

/// A cleaner against no Docker (a socket in `dir` nobody listens on), watching `dir`.
fn cleaner(dir: &Path, extra: &str) -> Cleaner {
    let socket = dir.join("no-docker.sock");
    Cleaner::for_host(
        &format!("unix://{}", socket.display()),
        dir,
        &format!("interval_seconds = 1\n{extra}"),
    )
}

/// The environment of a system without CA certificates (rustls-native-certs reads these first).
fn no_system_store(cmd: &mut Command) {
    cmd.env("SSL_CERT_FILE", "/nonexistent/dic-no-ca.pem")
        .env("SSL_CERT_DIR", "/nonexistent/dic-no-ca");
}

/// Whether the (exited) process sent `READY=1`: everything left on its notify socket is read.
fn sent_ready(d: &mut Daemon) -> bool {
    d.notify.collect_for(Duration::from_millis(300));
    d.notify.received().iter().any(|m| m.has("READY=1"))
}

/// Runs `cmd` to completion (bounded) and returns (exit code, stdout, stderr).
fn run(cmd: Command) -> (Option<i32>, String, String) {
    let out = Daemon::plain(cmd).output(SOON);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn start_fails_before_ready_on_a_kubeconfig_that_cannot_work() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let kubeconfig = tmp.path().join("kubeconfig");
    fs::write(&kubeconfig, "apiVersion: v1\nclusters: [not: a: list\n").expect("write");
    let c = cleaner(
        tmp.path(),
        &format!(
            "node_name = {NODE:?}\nkubeconfig = {:?}\n",
            kubeconfig.display().to_string()
        ),
    );
    let mut d = Daemon::service(c.command(&["run"]), Some(WATCHDOG));
    let status = d.wait_exit(SOON);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{}", d.context());
    assert!(
        !sent_ready(&mut d),
        "no READY=1 before the failure: systemctl start must fail:\n{}",
        d.context()
    );
    assert!(
        d.log().contains(&kubeconfig.display().to_string()),
        "the error names the kubeconfig:\n{}",
        d.log()
    );

    // check-config says the same, with the same exit code.
    let (code, _, err) = run(c.command(&["check-config"]));
    assert_eq!(code, Some(EXIT_CONFIG), "{err}");
    assert!(err.contains(&kubeconfig.display().to_string()), "{err}");
}

#[test]
fn start_fails_before_ready_when_a_watched_path_does_not_exist() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let missing = tmp.path().join("var-lib-dokcer");
    let socket = tmp.path().join("no-docker.sock");
    let c = Cleaner::for_host(&format!("unix://{}", socket.display()), &missing, "");
    let mut d = Daemon::service(c.command(&["run"]), Some(WATCHDOG));
    let status = d.wait_exit(SOON);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{}", d.context());
    assert!(!sent_ready(&mut d), "{}", d.context());
    assert!(d.log().contains("var-lib-dokcer"), "{}", d.log());
}

#[test]
fn a_node_image_without_a_kubeconfig_yet_starts_and_waits() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let later = tmp.path().join("etc/docker-image-cleaner/kubeconfig");
    let c = cleaner(
        tmp.path(),
        &format!(
            "node_name = {NODE:?}\nkubeconfig = {:?}\n",
            later.display().to_string()
        ),
    );
    let mut d = Daemon::service(c.command(&["run"]), Some(WATCHDOG));
    d.ready(SOON);
    d.wait_status("waiting for Docker", SOON);
    assert!(d.running(), "{}", d.context());
    // Docker not started yet is a warning, not a failure.
    assert!(d.log().contains("WARN"), "{}", d.log());
    d.terminate(SOON);
}

#[test]
fn a_kubeconfig_under_root_is_a_warning_naming_protect_home() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let c = cleaner(tmp.path(), &format!("node_name = {NODE:?}\n"));
    let mut cmd = c.command(&["run"]);
    cmd.env("KUBECONFIG", "/root/.kube/dic-test-never-there/config");
    let mut d = Daemon::service(cmd, Some(WATCHDOG));
    d.ready(SOON);
    d.wait_status("waiting for Docker", SOON);
    let log = d.log();
    let warning = log
        .lines()
        .find(|l| l.starts_with("WARN") && l.contains("ProtectHome=yes"));
    assert!(
        warning.is_some_and(|l| l.contains("/root/.kube/dic-test-never-there/config")),
        "a WARN line names the kubeconfig and the unit setting that hides it:\n{log}"
    );
    d.terminate(SOON);
}

#[test]
fn reload_refuses_an_invalid_file_and_changes_nothing_then_applies_a_valid_one() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let runtime = tmp.path().join("run");
    fs::create_dir(&runtime).expect("mkdir");
    let c = cleaner(tmp.path(), "");
    let original = fs::read_to_string(c.config_path()).expect("config");
    let mut cmd = c.command(&["run"]);
    cmd.env("RUNTIME_DIRECTORY", &runtime);
    let mut d = Daemon::service(cmd, Some(WATCHDOG));
    d.ready(SOON);
    let pid = d.pid().to_string();
    let reload = || {
        let mut cmd = c.command(&["reload", "--pid", &pid]);
        cmd.env("RUNTIME_DIRECTORY", &runtime);
        run(cmd)
    };

    // A typo: the reload fails, and the daemon is not even asked.
    fs::write(c.config_path(), format!("{original}interval_secnds = 5\n")).expect("write");
    let (code, _, err) = reload();
    assert_eq!(code, Some(EXIT_CONFIG), "{err}");
    assert!(err.contains("interval_secnds"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !d.log().contains("SIGHUP"),
        "the daemon was not signalled:\n{}",
        d.log()
    );
    assert!(d.running(), "{}", d.context());

    // A valid change: applied, and `reload` says so only after the daemon took it.
    fs::write(
        c.config_path(),
        format!("{original}log_level = \"debug\"\n"),
    )
    .expect("write");
    let (code, out, err) = reload();
    assert_eq!(code, Some(0), "{out}{err}\n{}", d.context());
    assert!(out.contains("configuration reloaded"), "{out}");
    d.wait_status("configuration reloaded", SOON);
    d.terminate(SOON);
}

#[test]
fn check_config_checks_the_kubeconfig_and_the_files_it_names() {
    let fake = FakeKube::start();
    let dir = fake.dir().to_path_buf();
    let kc = dir.join("checked.kubeconfig");
    let with = |kubeconfig: &Path| {
        cleaner(
            &dir,
            &format!(
                "node_name = {NODE:?}\nkubeconfig = {:?}\n",
                kubeconfig.display().to_string()
            ),
        )
    };

    // Its own CA, no system store: fine.
    fake.write_kubeconfig(&kc, "t0ken");
    let c = with(&kc);
    let mut cmd = c.command(&["check-config"]);
    no_system_store(&mut cmd);
    let (code, out, err) = run(cmd);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("usable"), "{out}");

    // A CA file that is not there: it cannot work.
    fake.write_kubeconfig_raw(
        &kc,
        &format!(
            "    certificate-authority: {}\n",
            dir.join("gone.crt").display()
        ),
        "    token: t0ken\n",
    );
    let c = with(&kc);
    let (code, _, err) = run(c.command(&["check-config"]));
    assert_eq!(code, Some(EXIT_CONFIG), "{err}");
    assert!(err.contains(&kc.display().to_string()), "{err}");

    // A token file not written yet: waited for, with a warning naming it.
    let token_file = dir.join("token-later");
    fake.write_kubeconfig_user(&kc, &format!("    tokenFile: {}\n", token_file.display()));
    let c = with(&kc);
    let (code, _, err) = run(c.command(&["check-config"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning") && err.contains(&token_file.display().to_string()),
        "{err}"
    );

    // No CA at all against https, on a system without CA certificates: refused, naming the way out.
    fake.write_kubeconfig_raw(&kc, "", "    token: t0ken\n");
    let c = with(&kc);
    let mut cmd = c.command(&["check-config"]);
    no_system_store(&mut cmd);
    let (code, _, err) = run(cmd);
    assert_eq!(code, Some(EXIT_CONFIG), "{err}");
    assert!(err.contains("ca-certificates"), "{err}");
}

#[test]
fn a_kubeconfig_with_its_own_ca_cordons_without_the_system_store() {
    let fake = FakeKube::start();
    fake.add_node(
        NODE,
        json!({
            "metadata": { "annotations": { docker_image_cleaner::node::ANNOTATION: "2026-11-27T23:00:00Z" } },
            "spec": { "unschedulable": true },
        }),
    );
    let dir = fake.dir().to_path_buf();
    let c = cleaner(
        &dir,
        &format!(
            "node_name = {NODE:?}\nkubeconfig = {:?}\n",
            fake.kubeconfig().display().to_string()
        ),
    );
    let mut cmd = c.command(&["run"]);
    no_system_store(&mut cmd);
    let mut d = Daemon::service(cmd, Some(WATCHDOG));
    d.ready(SOON);
    assert!(
        wait_until(SOON, || fake.node(NODE).pointer("/spec/unschedulable")
            != Some(&json!(true))),
        "the leftover cordon is lifted through the kubeconfig's own CA:\n{}",
        d.context()
    );
    d.terminate(SOON);
}

#[test]
fn an_http_server_needs_no_ca_at_all() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let kc = tmp.path().join("kubeconfig");
    fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: plain\n  cluster:\n    server: http://127.0.0.1:9\nusers:\n- name: u\n  user: {}\ncontexts:\n- name: c\n  context:\n    cluster: plain\n    user: u\ncurrent-context: c\n",
    )
    .expect("write");
    let c = cleaner(
        tmp.path(),
        &format!(
            "node_name = {NODE:?}\nkubeconfig = {:?}\n",
            kc.display().to_string()
        ),
    );
    let mut cmd = c.command(&["check-config"]);
    no_system_store(&mut cmd);
    let (code, out, err) = run(cmd);
    assert_eq!(code, Some(0), "{out}{err}");
    let mut cmd = c.command(&["run"]);
    no_system_store(&mut cmd);
    let mut d = Daemon::service(cmd, Some(WATCHDOG));
    d.ready(SOON);
    d.wait_status("waiting for Docker", SOON);
    assert!(!d.log().contains("No CA certificates"), "{}", d.context());
    d.terminate(SOON);
}

#[test]
fn every_command_reads_the_environment_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let env_file = tmp.path().join("default");
    fs::write(
        &env_file,
        "# written by the node image's boot unit\nDOCKER_IMAGE_CLEANER_NODE_NAME=nc-node\n",
    )
    .expect("write");
    let c = cleaner(tmp.path(), "");
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--config")
        .arg(c.config_path())
        .arg("--env-file")
        .arg(&env_file)
        .arg("check-config");
    let (code, out, err) = run(cmd);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!(
            "node_name = \"nc-node\"  # file {} (DOCKER_IMAGE_CLEANER_NODE_NAME)",
            env_file.display()
        )),
        "{out}"
    );
}

#[test]
fn without_a_terminal_errors_reach_stderr_and_json_lines_parse() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let c = cleaner(tmp.path(), "");
    // As from ssh or Ansible: no --log, no terminal, no journal.
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--config")
        .arg(c.config_path())
        .arg("--env-file")
        .arg("")
        .arg("once");
    let (code, _, err) = run(cmd);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("no-docker.sock"),
        "the error names the socket: {err:?}"
    );

    let mut cmd = c.command(&["--log-format", "json", "once"]);
    cmd.env_remove("JOURNAL_STREAM");
    let (_, _, err) = run(cmd);
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty(), "{err}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}
