//! A real headless Chromium (Debian's `chromium`, which `cargo xtask
//! setup` installs) driven over the DevTools protocol, for the live web
//! view's tests ([`Browser`]).
//!
//! The protocol runs on a pipe (`--remote-debugging-pipe`: the browser
//! reads commands from its fd 3 and writes answers and events to its fd 4,
//! each message JSON ending in a NUL byte), so no port is opened, no
//! WebDriver server runs beside it, no crate downloads a browser build, and
//! the browser can live in a lab's network namespace (started through `ip
//! netns exec`, which keeps the two descriptors). What the tests need of
//! it is small: open a page, run JavaScript in it (the DOM is read live,
//! polled by [`Browser::wait_for`]) and take a screenshot.
//!
//! Every wait is bounded; the browser runs in its own process group, which
//! is killed on Drop with its profile directory removed.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{ChildGuard, Error, NetNs, Result, TempDir, interrupt, netns};

/// The browser Debian installs.
pub const CHROMIUM: &str = "chromium";
/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`Browser::wait_for`] evaluates its condition.
const POLL: Duration = Duration::from_millis(100);
/// Console lines and exceptions of the page kept for failure messages.
const CONSOLE_KEEP: usize = 40;
/// The descriptors the browser talks on (`--remote-debugging-pipe`).
const BROWSER_READS: RawFd = 3;
const BROWSER_WRITES: RawFd = 4;

/// A headless Chromium with one page open.
#[derive(Debug)]
pub struct Browser {
    /// Declared first: killed (with its process group) before the profile
    /// directory goes.
    process: Option<ChildGuard>,
    commands: File,
    messages: Receiver<Value>,
    next_id: u64,
    /// The page's session, to which page commands go.
    session: String,
    /// What the page printed or threw, newest last.
    console: VecDeque<String>,
    log: PathBuf,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium (inside `ns` if given) with a blank page of `width`
    /// x `height` css pixels; its output goes to `log`.
    pub fn start(ns: Option<&NetNs>, width: u32, height: u32, log: &Path) -> Result<Self> {
        let profile = TempDir::new("hb-chromium")?;
        let (browser_reads, commands) = pipe()?;
        let (messages_fd, browser_writes) = pipe()?;
        let mut command = match ns {
            Some(ns) => ns.command(CHROMIUM),
            None => Command::new(CHROMIUM),
        };
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--mute-audio",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log_file(log)?)
            .stderr(log_file(log)?)
            // Its own group, so that Drop kills its helpers too.
            .process_group(0);
        let (child_reads, child_writes) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        // SAFETY: between fork and exec only dup2 runs, which is
        // async-signal-safe; both descriptors are open in the child (they
        // are above the target numbers, see `pipe`, so neither dup2
        // clobbers the other), and dup2 clears close-on-exec on the copies.
        unsafe {
            command.pre_exec(move || {
                for (from, to) in [(child_reads, BROWSER_READS), (child_writes, BROWSER_WRITES)] {
                    if libc::dup2(from, to) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let process = ChildGuard::spawn("chromium", &mut command)?;
        // The browser's ends live on in it only: when it dies, reads end.
        drop((browser_reads, browser_writes));
        let (sender, messages) = mpsc::channel();
        let mut incoming = File::from(messages_fd);
        thread::spawn(move || {
            let mut buffer = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            while let Ok(n @ 1..) = incoming.read(&mut chunk) {
                buffer.extend_from_slice(&chunk[..n]);
                while let Some(end) = buffer.iter().position(|&b| b == 0) {
                    let message: Vec<u8> = buffer.drain(..=end).collect();
                    if let Ok(value) = serde_json::from_slice(&message[..end])
                        && sender.send(value).is_err()
                    {
                        return;
                    }
                }
            }
        });
        let mut browser = Self {
            process: Some(process),
            commands: File::from(commands),
            messages,
            next_id: 0,
            session: String::new(),
            console: VecDeque::new(),
            log: log.to_owned(),
            _profile: profile,
        };
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"].clone();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| protocol("Target.attachToTarget", "no sessionId"))?
            .to_owned();
        for domain in ["Page.enable", "Runtime.enable"] {
            browser.page(domain, json!({}))?;
        }
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        Ok(browser)
    }

    /// Opens `url` and waits (at most `within`) until the document has
    /// loaded.
    pub fn open(&mut self, url: &str, within: Duration) -> Result<()> {
        let navigated = self.page("Page.navigate", json!({ "url": url }))?;
        if let Some(error) = navigated["errorText"].as_str() {
            return Err(protocol("Page.navigate", &format!("{url}: {error}")));
        }
        self.wait_for(
            &format!("{url} to load"),
            "document.readyState === 'complete'",
            within,
        )
        .map(drop)
    }

    /// Evaluates `expression` in the page (awaiting it if it is a promise)
    /// and returns its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let answer = self.page(
            "Runtime.evaluate",
            json!({
                "expression": expression,
                "returnByValue": true,
                "awaitPromise": true,
            }),
        )?;
        if let Some(exception) = answer.get("exceptionDetails") {
            let text = exception["exception"]["description"]
                .as_str()
                .or_else(|| exception["text"].as_str())
                .unwrap_or("an exception");
            return Err(Error::Invalid {
                what: "page expression",
                value: expression.to_owned(),
                reason: format!("it threw: {text}"),
            });
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Evaluates `expression` until its value is truthy (at most
    /// `within`); returns that value. The error carries the last value and
    /// what the page printed.
    pub fn wait_for(&mut self, what: &str, expression: &str, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(expression)?;
            if truthy(&value) {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    after: within,
                    detail: format!(" (`{expression}` was {value}){}", self.console_detail()),
                });
            }
            interrupt::sleep(POLL)?;
        }
    }

    /// Writes a PNG of the page's viewport to `path` (creating its
    /// directory), down to the end of the body's content if that ends
    /// higher.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let size = self.eval(
            "[innerWidth, Math.min(innerHeight, Math.ceil(Math.max(0, ...[...document.body.children]\
             .map(e => e.getBoundingClientRect().bottom + 16))))]",
        )?;
        let (width, height) = (
            size[0].as_f64().unwrap_or(0.0),
            size[1].as_f64().unwrap_or(0.0),
        );
        let clip = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
        let shot = self.page(
            "Page.captureScreenshot",
            json!({ "format": "png", "clip": clip }),
        )?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| protocol("Page.captureScreenshot", "no data"))?;
        let png = base64_decode(data)
            .ok_or_else(|| protocol("Page.captureScreenshot", "data is not base64"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                op: "creating directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        std::fs::write(path, png).map_err(|source| Error::Io {
            op: "writing",
            path: path.to_owned(),
            source,
        })
    }

    /// What the page printed to its console and the exceptions it threw,
    /// newest last.
    pub fn console(&self) -> Vec<String> {
        self.console.iter().cloned().collect()
    }

    fn console_detail(&self) -> String {
        if self.console.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = self.console.iter().map(String::as_str).collect();
        format!("; the page's console:\n{}", lines.join("\n"))
    }

    /// A command to the page's session.
    fn page(&mut self, method: &str, params: Value) -> Result<Value> {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Sends one command and waits for its answer, keeping the console
    /// events that arrive meanwhile.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes =
            serde_json::to_vec(&message).map_err(|e| protocol(method, &e.to_string()))?;
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .map_err(|source| Error::Net {
                op: format!("sending {method} to chromium (see {})", self.log.display()),
                source,
            })?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::Timeout {
                        what: format!("chromium to answer {method}"),
                        after: COMMAND_TIMEOUT,
                        detail: self.console_detail(),
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(protocol(
                        method,
                        &format!("chromium exited; its output is in {}", self.log.display()),
                    ));
                }
            };
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    return Err(protocol(method, &error.to_string()));
                }
                return Ok(message["result"].clone());
            }
            self.keep_console(&message);
        }
    }

    fn keep_console(&mut self, message: &Value) {
        let params = &message["params"];
        let line = match message["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|arg| match &arg["value"] {
                        Value::String(text) => text.clone(),
                        Value::Null => arg["description"].as_str().unwrap_or("").to_owned(),
                        other => other.to_string(),
                    })
                    .collect();
                format!(
                    "console.{}: {}",
                    params["type"].as_str().unwrap_or("log"),
                    args.join(" ")
                )
            }
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                format!(
                    "uncaught: {}",
                    details["exception"]["description"]
                        .as_str()
                        .or_else(|| details["text"].as_str())
                        .unwrap_or("?")
                )
            }
            _ => return,
        };
        if self.console.len() == CONSOLE_KEEP {
            self.console.pop_front();
        }
        self.console.push_back(line);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            if let Ok(group) = libc::pid_t::try_from(process.pid()) {
                // SAFETY: kill has no memory-safety preconditions; the group
                // is the one the browser was started in (its pid, not yet
                // reaped: the guard below reaps it), holding its helpers.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
            drop(process);
        }
    }
}

/// Whether a JavaScript value, as JSON, is truthy.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn protocol(method: &str, problem: &str) -> Error {
    Error::Net {
        op: format!("DevTools {method}"),
        source: io::Error::other(problem.to_owned()),
    }
}

fn log_file(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| Error::Io {
            op: "opening log file",
            path: path.to_owned(),
            source,
        })
}

/// A pipe (read end, write end), both close-on-exec and numbered above the
/// browser's 3 and 4, so that moving them there in the child is safe.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    let failed = |source| Error::Net {
        op: "creating a pipe for chromium".to_owned(),
        source,
    };
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    let high = |fd: RawFd| -> io::Result<OwnedFd> {
        // SAFETY: fd was just returned by pipe2 and is owned by nobody else.
        let original = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_DUPFD_CLOEXEC duplicates an open descriptor; the copy
        // is a new descriptor owned by the OwnedFd made from it.
        let copy = unsafe { libc::fcntl(original.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: copy is a fresh descriptor nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(copy) })
    };
    Ok((high(fds[0]).map_err(failed)?, high(fds[1]).map_err(failed)?))
}

/// Standard base64 (with padding), as DevTools sends screenshots.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut word = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            word |= value(c)? << (18 - 6 * i);
        }
        let bytes = word.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Whether Debian's `chromium` is installed.
pub fn available() -> bool {
    netns::run(Command::new(CHROMIUM).arg("--version")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("aGI=").unwrap(), b"hb");
        assert_eq!(base64_decode("aGJ2").unwrap(), b"hbv");
        assert_eq!(base64_decode("aGJ2aQ==").unwrap(), b"hbvi");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a*==").is_none());
        assert_eq!(
            base64_decode("iVBORw0KGgo=").unwrap(),
            [0x89, b'P', b'N', b'G', 13, 10, 26, 10]
        );
    }

    #[test]
    fn truthiness_follows_javascript() {
        for falsy in [json!(null), json!(false), json!(0), json!(""), json!(0.0)] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for value in [json!(true), json!(1), json!("x"), json!([]), json!({})] {
            assert!(truthy(&value), "{value}");
        }
    }
}
