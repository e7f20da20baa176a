//! Where things live (workspace, target dir, tool cache, hb binary) and a
//! helper to run commands with a readable failure message.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use hb_tests::netns::describe;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the current
/// directory, like cargo) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                env::current_dir().map(|cwd| cwd.join(&dir)).unwrap_or(dir)
            }
        }
        _ => workspace().join("target"),
    }
}

/// The project's tool cache, `<target-dir>/toolchain` (hb-userspace's
/// build.rs looks for bpf-linker in its `bin`).
pub fn tools_dir() -> PathBuf {
    target_dir().join("toolchain")
}

/// The release hb binary.
pub fn hb_binary() -> PathBuf {
    target_dir().join("release").join("hb")
}

/// The release hb-tools binary (load generator, in-process benches).
pub fn hb_tools_binary() -> PathBuf {
    target_dir().join("release").join("hb-tools")
}

/// `PATH` with the tool cache's `bin` first.
pub fn path_with_tools() -> Result<OsString> {
    let mut dirs = vec![tools_dir().join("bin")];
    dirs.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    env::join_paths(dirs).context("PATH contains an unusable directory")
}

/// The cargo that runs us (set by `cargo run`), else `cargo` from PATH.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace());
    cmd
}

/// Run `cmd` with inherited stdio; fail with `what` if it does not succeed.
pub fn run_inherited(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("{what}: `{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Run `program args...`, returning its trimmed stdout if it succeeds.
pub fn stdout_of(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Whether `name` is an executable file in a directory of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| {
            path.metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}
