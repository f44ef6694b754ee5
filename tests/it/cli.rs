//! Start-up errors: one clear line naming the problem, and a non-zero exit. No broker needed.

use std::process::Command;

use crate::common::BIN;

fn run(args: &[&str], config: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command.current_dir(dir.path()).args(args);
    if let Some(text) = config {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        command.arg("--config").arg(path);
    }
    let output = command.output().expect("run hello-streams");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_line_error(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "must fail: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "names {needle}: {stderr}");
}

#[test]
fn a_bad_flag_is_one_line() {
    let (code, stderr) = run(&["run", "--bootstrap-serverz", "x"], None);
    assert_one_line_error(code, &stderr, "--bootstrap-serverz");
}

#[test]
fn an_unknown_config_field_is_named() {
    let (code, stderr) = run(
        &["check-config"],
        Some("[kafka]\nbootstrap_server = \"x:1\"\n"),
    );
    assert_one_line_error(code, &stderr, "kafka.bootstrap_server");
}

#[test]
fn a_malformed_config_file_is_named_with_its_line() {
    let (code, stderr) = run(&["check-config"], Some("[app]\ncommit_interval_ms = = 3\n"));
    assert_one_line_error(code, &stderr, "line 2");
}

#[test]
fn a_bad_value_names_the_field_and_the_fix() {
    let (code, stderr) = run(
        &["check-config", "--set", "query.http_addr=localhost"],
        None,
    );
    assert_one_line_error(code, &stderr, "query.http_addr");
    assert!(stderr.contains("fix:"), "{stderr}");
}

#[test]
fn a_bad_or_missing_tls_file_names_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let cert = format!("query.tls.cert_file={}", junk.display());
    let key = format!("query.tls.key_file={}", junk.display());
    let (code, stderr) = run(&["check-config", "--set", &cert, "--set", &key], None);
    assert_one_line_error(code, &stderr, "query.tls.cert_file");
    assert!(
        stderr.contains("fix:") && stderr.contains("junk.pem"),
        "{stderr}"
    );
    let (code, stderr) = run(&["check-config", "--set", &cert], None);
    assert_one_line_error(code, &stderr, "query.tls.key_file");
    let missing = "query.tls.cert_file=/nonexistent/cert.pem";
    let (code, stderr) = run(&["check-config", "--set", missing, "--set", &key], None);
    assert_one_line_error(code, &stderr, "query.tls.cert_file");
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}

#[test]
fn an_unwritable_state_dir_fails_fast_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let state = file.join("state");
    let (code, stderr) = run(
        &[
            "run",
            "--state-dir",
            state.to_str().unwrap(),
            "--bootstrap-servers",
            "127.0.0.1:1",
        ],
        None,
    );
    assert_one_line_error(code, &stderr, state.to_str().unwrap());
}

#[test]
fn check_config_accepts_the_shipped_defaults() {
    let output = Command::new(BIN)
        .current_dir(crate::common::repo_root())
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("config ok"));
}
