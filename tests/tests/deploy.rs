//! What `deploy/` gives operators works: the Prometheus alerting rules are
//! valid and fire when they should (`promtool`, from Debian's `prometheus`
//! package, which `cargo xtask setup` installs).

use std::{path::PathBuf, process::Command};

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// Runs `promtool ARGS` in `deploy/prometheus`; panics with its output
/// unless it succeeds.
fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(deploy_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!("running promtool: {e} (run `cargo xtask setup`, which installs it)")
        });
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_alerting_rules_are_valid() {
    promtool(&["check", "rules", "hb-alerts.yml"]);
}

#[test]
fn the_alerts_fire_when_they_should_and_not_before() {
    promtool(&["test", "rules", "hb-alerts.test.yml"]);
}
