//! The binary's help and version. (Also makes `cargo test --workspace` build the
//! `corral` binary that the workspace tests in `tests/` drive.)

use std::process::Command;

#[test]
fn help_lists_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("run") && help.contains("inspect"), "{help}");
    assert!(
        !help.contains("compile-worker"),
        "the worker command is internal"
    );
}

#[test]
fn run_help_documents_the_exit_statuses_and_units() {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("4 stopped by a limit"), "{help}");
    assert!(help.contains("64MiB") && help.contains("500ms"), "{help}");
}
