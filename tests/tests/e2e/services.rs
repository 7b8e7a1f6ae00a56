//! The systemd units in `dist/systemd` are valid for systemd itself (`systemd-analyze
//! verify`), pointed at the binaries of this build.

use std::path::Path;
use std::process::Command;

const SERVER_BIN: &str = env!("CARGO_BIN_EXE_peerdex-server-under-test");
const AGENT_BIN: &str = env!("CARGO_BIN_EXE_peerdex-under-test");

/// What `systemd-analyze verify` says of `unit` (after `install_path` in its `ExecStart` is
/// replaced by `binary`, whose existence it checks): its complaints about the unit, if any.
fn complaints(unit_text: &str, name: &str, install_path: &str, binary: &str, user: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    assert!(
        unit_text.contains(install_path),
        "{name} starts {install_path}"
    );
    let unit = dir.path().join(name);
    std::fs::write(&unit, unit_text.replace(install_path, binary)).unwrap();
    let mut command = Command::new("systemd-analyze");
    if user {
        command.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
    }
    let out = command
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Only what concerns our unit: the host's own units may draw warnings of their own.
    let ours: Vec<&str> = said.lines().filter(|l| l.contains(name)).collect();
    if !out.status.success() || !ours.is_empty() {
        return format!("exit {:?}: {said}", out.status.code());
    }
    String::new()
}

fn unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist/systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn the_server_unit_passes_systemd_analyze_verify() {
    let text = unit("peerdex-server.service");
    let said = complaints(
        &text,
        "peerdex-server.service",
        "/usr/local/bin/peerdex-server",
        SERVER_BIN,
        false,
    );
    assert!(said.is_empty(), "{said}");
    // The sandbox the README promises.
    for option in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "StateDirectory=peerdex",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(text.contains(option), "{option:?} missing");
    }
}

#[test]
fn the_agent_user_unit_passes_systemd_analyze_verify() {
    let text = unit("peerdex-agent.service");
    let said = complaints(
        &text,
        "peerdex-agent.service",
        "%h/.local/bin/peerdex",
        AGENT_BIN,
        true,
    );
    assert!(said.is_empty(), "{said}");
    assert!(text.contains("WantedBy=default.target"), "a user unit");
}

#[test]
fn the_check_sees_a_broken_unit() {
    let broken = "[Service]\nExecStart=/usr/local/bin/peerdex-server\nProtectSystem=maybe\n";
    let said = complaints(
        broken,
        "broken.service",
        "/usr/local/bin/peerdex-server",
        SERVER_BIN,
        false,
    );
    assert!(
        said.contains("ProtectSystem") || said.contains("protect"),
        "{said}"
    );
}
