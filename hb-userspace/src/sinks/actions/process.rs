//! Running one action as a child process: started in its own process group
//! with the `HB_*` environment (or, for a batch, its events as JSON lines on
//! stdin), its output logged line by line, and the whole group killed when
//! it outlives its timeout.

use std::{
    borrow::Cow,
    io,
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};
use tracing::Instrument;

use super::{ActionConfig, ActionEvent, ActionRun};

/// Output lines longer than this are logged in pieces of this size.
const MAX_LINE_BYTES: usize = 4096;
/// Lines logged per output stream of one run; the rest is read and dropped.
const MAX_LOGGED_LINES: usize = 200;
/// How long output is still read after the action exited (a background
/// process that escaped the process group may keep the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How one run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
}

/// What one run is for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Input<'a> {
    /// One event, passed in the `HB_*` variables.
    Event(&'a ActionEvent),
    /// A batch action's events, in order, as JSON lines on stdin.
    Batch(&'a [Arc<ActionEvent>]),
}

/// Runs one action to completion (or its timeout) and logs the outcome.
pub(super) async fn run_action(action: &ActionConfig, input: Input<'_>) -> Outcome {
    match (&action.run, input) {
        (ActionRun::Webhook(hook), input) => super::webhook::run_webhook(action, hook, input).await,
        (ActionRun::Haproxy(haproxy), input) => super::haproxy::run(action, haproxy, input).await,
        (_, Input::Event(event)) => run_for_event(action, event).await,
        (_, Input::Batch(events)) => run_for_batch(action, events).await,
    }
}

/// Every log line, its output's included, carries the action, event and
/// node.
#[tracing::instrument(
    name = "action",
    skip_all,
    fields(action = %action.name, event = %event.event, node = %event.node_name, node_id = event.node_id)
)]
async fn run_for_event(action: &ActionConfig, event: &ActionEvent) -> Outcome {
    let Some((mut command, program)) = command_for(&action.run) else {
        return Outcome::Failed;
    };
    command.envs(event.environment());
    run(command, program, action.timeout, None).await
}

/// Every log line, its output's included, carries the action and the
/// number of events.
#[tracing::instrument(
    name = "action",
    skip_all,
    fields(action = %action.name, events = events.len())
)]
async fn run_for_batch(action: &ActionConfig, events: &[Arc<ActionEvent>]) -> Outcome {
    let Some((mut command, program)) = command_for(&action.run) else {
        return Outcome::Failed;
    };
    for name in ActionEvent::ENVIRONMENT {
        command.env_remove(name);
    }
    command.env("HB_EVENT_COUNT", events.len().to_string());
    let mut lines = Vec::with_capacity(events.len() * 160);
    for event in events {
        event.write_json_line(&mut lines);
    }
    run(command, program, action.timeout, Some(lines)).await
}

/// Starts `command` in its own process group, feeds it `stdin` (else
/// /dev/null), logs its output, waits for it or kills it at `timeout`.
async fn run(
    mut command: Command,
    program: &str,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
) -> Outcome {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills everything it started.
        .process_group(0);

    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::error!("cannot run {program}: {e}");
            return Outcome::Failed;
        }
    };
    let writer = stdin.and_then(|bytes| spawn_stdin_writer(&mut child, bytes));
    let readers = spawn_output_loggers(&mut child);
    let (status, timed_out) = wait_or_kill(&mut child, timeout).await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    // Whatever it has not read by now it never will (a descendant that
    // escaped the group must not keep the writer around).
    if let Some(writer) = writer {
        writer.abort();
    }
    finish_output_loggers(readers).await;
    log_outcome(program, timeout, status, timed_out, elapsed_ms)
}

/// Writes `bytes` to the child's stdin in the background and closes it, so
/// a large batch never blocks the wait for the child (which may exit
/// without reading: that is its choice, logged at debug level only).
fn spawn_stdin_writer(child: &mut Child, bytes: Vec<u8>) -> Option<JoinHandle<()>> {
    let mut stdin = child.stdin.take()?;
    let task = async move {
        if let Err(e) = stdin.write_all(&bytes).await {
            tracing::debug!("writing the batch to stdin: {e}");
        }
        // Dropping `stdin` closes it: the action sees the end of the batch.
    };
    Some(tokio::spawn(task.instrument(tracing::Span::current())))
}

/// The command an action runs, and the program's name for messages; `None`
/// (logged) if `command` is empty.
fn command_for(run: &ActionRun) -> Option<(Command, &str)> {
    match run {
        ActionRun::Command(argv) => {
            let Some((program, args)) = argv.split_first() else {
                tracing::error!("`command` is empty, nothing to run");
                return None;
            };
            let mut command = Command::new(program);
            command.args(args);
            Some((command, program.as_str()))
        }
        ActionRun::Shell(script) => {
            let mut command = Command::new("/bin/sh");
            command.arg("-c").arg(script);
            Some((command, "/bin/sh"))
        }
        // `run_action` sends these elsewhere.
        ActionRun::Webhook(_) => {
            tracing::error!("a webhook action runs no program");
            None
        }
        ActionRun::Haproxy(_) => {
            tracing::error!("a haproxy action runs no process");
            None
        }
    }
}

/// Starts logging the child's stdout and stderr in the current span (the
/// action's).
fn spawn_output_loggers(child: &mut Child) -> Vec<JoinHandle<()>> {
    let span = tracing::Span::current();
    [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(log_output(out, "stdout").instrument(span.clone()))),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(log_output(err, "stderr").instrument(span.clone()))),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Waits for the child for at most `timeout`; past it, kills the child's
/// whole process group and reaps the child. Returns the exit status and
/// whether it timed out.
async fn wait_or_kill(child: &mut Child, timeout: Duration) -> (io::Result<ExitStatus>, bool) {
    // The process group id equals the child's pid (`process_group(0)`).
    let pgid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (status, false),
        Err(_elapsed) => {
            // The child has not been reaped yet (wait did not complete), so
            // its pid, and with it the process group id, cannot be reused.
            match pgid {
                Some(pgid) => kill_process_group(pgid),
                None => {
                    let _ = child.start_kill();
                }
            }
            (child.wait().await, true)
        }
    }
}

/// Lets the output loggers read what is left for up to [`OUTPUT_GRACE`]
/// each, then stops them.
async fn finish_output_loggers(readers: Vec<JoinHandle<()>>) {
    for mut reader in readers {
        if tokio::time::timeout(OUTPUT_GRACE, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

/// Logs how the run ended and classifies it.
fn log_outcome(
    program: &str,
    timeout: Duration,
    status: io::Result<ExitStatus>,
    timed_out: bool,
    elapsed_ms: u64,
) -> Outcome {
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            tracing::error!("cannot wait for {program}: {e}");
            return if timed_out {
                Outcome::TimedOut
            } else {
                Outcome::Failed
            };
        }
    };
    let succeeded = status.success();
    let status = describe(status);
    if timed_out {
        tracing::warn!(
            elapsed_ms,
            "timed out after {}: killed its process group ({status})",
            humantime::format_duration(timeout),
        );
        Outcome::TimedOut
    } else if succeeded {
        tracing::info!(elapsed_ms, "{status}");
        Outcome::Succeeded
    } else {
        tracing::warn!(elapsed_ms, "failed: {status}");
        Outcome::Failed
    }
}
/// "exited with status N" or "killed by signal N".
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// Sends SIGKILL to every process in the group `pgid`.
fn kill_process_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 0 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
    // names the process group we created for this action.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        tracing::debug!("kill(-{pgid}, SIGKILL): {e}");
    }
}

/// Logs each line of an action's output stream at info level (inside the
/// action's span, which names the action and the node).
async fn log_output<R: AsyncRead + Unpin>(stream: R, name: &'static str) {
    let dropped = for_each_line(stream, MAX_LINE_BYTES, MAX_LOGGED_LINES, |line| {
        tracing::info!("{name}: {line}");
    })
    .await;
    if dropped > 0 {
        tracing::info!("{dropped} more {name} lines not logged");
    }
}

/// Calls `on_line` for the first `max_lines` lines of `stream` (without the
/// line ending; lines longer than `max_line` bytes come in pieces), then
/// reads the rest to the end so the writer never blocks. Returns the number
/// of lines not passed to `on_line`.
async fn for_each_line<R: AsyncRead + Unpin>(
    stream: R,
    max_line: usize,
    max_lines: usize,
    mut on_line: impl FnMut(Cow<'_, str>),
) -> u64 {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    let mut seen: u64 = 0;
    let limit = u64::try_from(max_line).unwrap_or(u64::MAX);
    loop {
        line.clear();
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("reading action output: {e}");
                break;
            }
        }
        seen += 1;
        if seen <= max_lines as u64 {
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            on_line(String::from_utf8_lossy(text));
        }
    }
    seen.saturating_sub(max_lines as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_lines_are_split_and_bounded() {
        let input = b"one\r\ntwo\n\nabcdefghijklm\nlast";
        let mut lines = Vec::new();
        let dropped = for_each_line(&input[..], 6, 100, |l| lines.push(l.into_owned())).await;
        assert_eq!(dropped, 0);
        assert_eq!(lines, ["one", "two", "", "abcdef", "ghijkl", "m", "last"]);

        let mut lines = Vec::new();
        let dropped = for_each_line(&b"a\nb\nc\nd\n"[..], 64, 2, |l| {
            lines.push(l.into_owned());
        })
        .await;
        assert_eq!(lines, ["a", "b"]);
        assert_eq!(dropped, 2);
    }

    #[test]
    fn exit_statuses_are_described() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe(ExitStatus::from_raw(0)), "exited with status 0");
        assert_eq!(
            describe(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by signal 9");
    }
}
