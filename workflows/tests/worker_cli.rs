//! `taskflow-worker` refuses to start without what it needs, saying what is missing.

use std::process::Command;

fn worker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskflow-worker"));
    for var in [
        "TEMPORAL_ADDRESS",
        "TASKFLOW_GRPC_URL",
        "TASKFLOW_INTERNAL_TOKEN",
    ] {
        command.env_remove(var);
    }
    command
}

#[test]
fn without_temporal_or_the_server_it_names_what_is_missing() {
    let out = worker().output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--temporal-address") && said.contains("--server-grpc"),
        "{said}"
    );
}

#[test]
fn an_unreachable_temporal_is_an_error_not_a_hang() {
    // Nothing listens on port 1.
    let out = worker()
        .args(["--temporal-address", "127.0.0.1:1"])
        .args(["--server-grpc", "http://127.0.0.1:1"])
        .args(["--internal-token", "a token of at least thirty-two bytes!"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("connecting to Temporal at 127.0.0.1:1"),
        "{said}"
    );
}
