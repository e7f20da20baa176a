//! The harness's error type: every failure names the command, file or wait
//! that failed and carries what is needed to understand it.

use std::{io, path::PathBuf, process::ExitStatus, time::Duration};

/// Result alias of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building a lab or driving `hb`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network namespaces and XDP need root.
    #[error("{what} needs root (run as root, e.g. with sudo)")]
    NotRoot { what: &'static str },
    /// A command could not be started at all.
    #[error("could not start `{cmd}`: {source}")]
    Spawn { cmd: String, source: io::Error },
    /// A command ran and exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}{stdout}")]
    Command {
        cmd: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A socket or namespace operation of the harness itself failed
    /// (entering a namespace, binding, sending).
    #[error("{op}: {source}")]
    Net { op: String, source: io::Error },
    /// A command printed something that is not the JSON it should print.
    #[error("`{cmd}` printed invalid JSON ({source}): {output}")]
    Json {
        cmd: String,
        output: String,
        source: serde_json::Error,
    },
    /// A bounded wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}{detail}")]
    Timeout {
        what: String,
        after: Duration,
        detail: String,
    },
    /// A process that should still be running has exited.
    #[error("{name} exited unexpectedly ({status}); its output:\n{log}")]
    Exited {
        name: String,
        status: ExitStatus,
        log: String,
    },
    /// Sending a signal to a child failed.
    #[error("could not send {signal} to {name} (pid {pid}): {source}")]
    Signal {
        name: String,
        pid: u32,
        signal: &'static str,
        source: io::Error,
    },
    /// A name or parameter is unusable (too long interface name, ...).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// Ctrl-C (SIGINT) or SIGTERM arrived while waiting.
    #[error("interrupted")]
    Interrupted,
}
