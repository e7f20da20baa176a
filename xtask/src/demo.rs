//! `cargo xtask demo`: the project's main job end to end, in a throw-away
//! lab of network namespaces: three nodes send heartbeats, one crashes and
//! comes back, one leaves gracefully, and the agent's action announces
//! each change. Everything is removed at the end, also on error or Ctrl-C
//! (the lab, the processes and the files are guards).
//!
//! The agent's live view (`GET /` of its HTTP API, on 127.0.0.1:7980 in the
//! monitor's namespace) is forwarded to the same address on this machine
//! while the demo runs ([`LiveView`]), so a browser here (or one at the
//! end of `ssh -L 7980:127.0.0.1:7980 HOST`) watches the crash as it
//! happens; `--keep` keeps the lab up at the end until Ctrl-C.

use std::{
    io,
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hb_tests::{
    ChildGuard, HEARTBEAT_PORT, Hb, Lab, Signal, TempDir,
    config::{humantime, shell_quote, toml_string},
    events::read_lines,
    interrupt, netns,
};
use serde_json::Value;

use crate::build;

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// At the end, keep the lab running (the agent, two nodes sending, the
    /// live view) until Ctrl-C, then remove it.
    #[arg(long)]
    keep: bool,
}

/// Name prefix of everything the demo creates.
const PREFIX: &str = "hbdemo";
const NODES: u8 = 3;
const INTERVAL: Duration = Duration::from_millis(500);
const MULTIPLIER: u32 = 3;
const SWEEP: Duration = Duration::from_millis(50);
/// The embedded configuration (placeholders in double braces).
const CONFIG: &str = include_str!("demo.toml");
/// Slack for process start-up and scheduling.
const MARGIN: Duration = Duration::from_secs(3);
/// Where the agent's HTTP API listens in the monitor's namespace (the
/// default `[http] listen`), and where the demo forwards it on this machine
/// if that port is free here.
const API_PORT: u16 = 7980;

fn node_name(index: u8) -> String {
    format!("web-{index}")
}

fn step(n: u32, text: &str) {
    println!("\nStep {n}: {text}");
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Run the demo.
pub fn run(options: &Options) -> Result<()> {
    if !hb_tests::is_root() {
        bail!("not root: the demo creates network namespaces and loads XDP programs; run as root");
    }
    interrupt::install();
    let start = Instant::now();
    println!(
        "hb demo: a heartbeat monitor watching three nodes, all simulated on this machine \
         (Ctrl-C stops it and cleans up)."
    );
    step(1, "build hb (the agent, its XDP program, the sender).");
    let hb = Hb::new(build::run()?.hb);

    let dir = TempDir::at(std::env::temp_dir().join(PREFIX))?;
    let outcome = scenario(&hb, &dir, options);
    let interrupted = outcome.as_ref().is_err_and(|err| {
        matches!(
            err.downcast_ref::<hb_tests::Error>(),
            Some(hb_tests::Error::Interrupted)
        )
    });
    if outcome.is_err() && !interrupted {
        let log = dir.join("agent.log");
        if let Ok(text) = std::fs::read_to_string(&log) {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "last lines of the agent's output ({}):\n{}",
                log.display(),
                indent(&lines[lines.len().saturating_sub(30)..].join("\n"))
            );
        }
    }
    if outcome.is_err() {
        eprintln!(
            "cleaned up: stopped the processes, removed the {PREFIX}-* namespaces and {}",
            dir.path().display()
        );
    }
    outcome?;
    drop(dir);
    println!(
        "\nDemo finished in {:.1} s; nothing is left behind.",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The action log: what the configured action printed, read as it grows.
struct ActionLog {
    path: PathBuf,
    shown: usize,
}

impl ActionLog {
    /// Wait until a line not yet shown matches `predicate`; print every
    /// new line up to it. Returns the line and when it was first seen.
    fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        predicate: impl FnMut(&str) -> bool,
    ) -> Result<(String, Instant)> {
        let (index, line, seen) = hb_tests::wait_for_line(
            &self.path,
            self.shown,
            predicate,
            Instant::now() + within,
            what,
        )?;
        self.show_until(index + 1)?;
        Ok((line, seen))
    }

    /// Print the lines not shown yet (up to `end`, if given); returns them.
    fn show_until(&mut self, end: usize) -> Result<Vec<String>> {
        let lines = read_lines(&self.path)?;
        let end = end.min(lines.len());
        let new = lines[self.shown.min(end)..end].to_vec();
        for line in &new {
            println!("    {line}");
        }
        self.shown = self.shown.max(end);
        Ok(new)
    }

    fn show_new(&mut self) -> Result<Vec<String>> {
        self.show_until(usize::MAX)
    }
}

/// The files of a run, in the demo's scratch directory.
struct Files {
    /// The agent's status socket.
    socket: PathBuf,
    /// What the configured action prints.
    actions: PathBuf,
    config: PathBuf,
    /// The key that signs the heartbeats.
    key: PathBuf,
}

impl Files {
    fn in_dir(dir: &TempDir) -> Self {
        Self {
            socket: dir.join("hb.sock"),
            actions: dir.join("actions.log"),
            config: dir.join("hb.toml"),
            key: dir.join("hb.key"),
        }
    }
}

/// The timeout the agent is configured with.
fn timeout() -> Duration {
    INTERVAL * MULTIPLIER
}

/// The demo's acts, steps 2 to 10. On error, what was started is dropped in
/// reverse: the live view's forwarding, the senders, the agent, then the
/// lab.
fn scenario(hb: &Hb, dir: &TempDir, options: &Options) -> Result<()> {
    let lab = build_lab()?;
    let files = Files::in_dir(dir);
    let agent = start_agent(hb, dir, &lab, &files)?;
    let live_view = LiveView::start(&lab)?;
    let mut log = ActionLog {
        path: files.actions.clone(),
        shown: 0,
    };
    let mut senders = start_senders(hb, &lab, dir, &files.key, &mut log)?;

    step(5, "what `hb status` shows now:");
    println!("{}", indent(&hb.status_text(&files.socket)?));

    crash(hb, &lab, dir, &files, &mut senders, &mut log)?;
    recover(hb, &lab, dir, &files.key, &mut senders, &mut log)?;
    leave(&mut senders[2], &mut log)?;

    step(9, "the final `hb status`: web-1 and web-2 up, web-3 left.");
    println!("{}", indent(&hb.status_text(&files.socket)?));

    if options.keep {
        return keep_until_interrupted(&live_view, agent, senders, lab);
    }
    drop(live_view);
    clean_up(hb, agent, senders, lab, &mut log)
}

/// `--keep`: the lab stays up until Ctrl-C, then the guards remove it (the
/// agent and senders killed, the XDP program detached with the instance's
/// pins, the namespaces deleted).
fn keep_until_interrupted(
    live_view: &LiveView,
    agent: ChildGuard,
    senders: Vec<ChildGuard>,
    lab: Lab,
) -> Result<()> {
    step(
        10,
        &format!(
            "the lab stays up (--keep): web-1 and web-2 keep sending, web-3 has left.\n        \
             {}\n        \
             From inside the lab: ip netns exec {PREFIX}-mon curl -s 127.0.0.1:{API_PORT}/api/v1/status\n        \
             Ctrl-C stops everything and removes the lab.",
            live_view.describe()
        ),
    );
    loop {
        match interrupt::sleep(Duration::from_secs(1)) {
            Ok(()) => {}
            Err(hb_tests::Error::Interrupted) => break,
            Err(err) => return Err(err.into()),
        }
    }
    drop(senders);
    drop(agent);
    drop(lab);
    println!(
        "\n    stopped the agent and the senders, detached XDP, removed the {PREFIX}-* namespaces"
    );
    Ok(())
}

/// The agent's HTTP API (and its live view) forwarded from this machine's
/// loopback into the monitor's namespace: each connection accepted here is
/// joined to one made from a thread that entered the namespace. Stops
/// accepting on Drop; open connections end with the lab.
struct LiveView {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl LiveView {
    /// Listens on 127.0.0.1:7980 here, or on another port if that one is
    /// taken (an agent of this machine), and prints where.
    fn start(lab: &Lab) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, API_PORT))
            .or_else(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .context("listening on this machine's loopback for the live view")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (netns, stopping) = (lab.monitor.path(), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let netns = netns.clone();
                        thread::spawn(move || {
                            // A broken connection only loses itself.
                            let _ = forward(client, &netns);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        let view = Self {
            address,
            stop,
            thread: Some(thread),
        };
        println!("    {}", view.describe());
        Ok(view)
    }

    fn describe(&self) -> String {
        format!(
            "live view: http://{}/ on this machine (forwarded into {PREFIX}-mon, where the agent \
             listens on 127.0.0.1:{API_PORT});\n        from another machine: ssh -L {port}:127.0.0.1:{port} \
             THIS-HOST, then the same address",
            self.address,
            port = self.address.port(),
        )
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Joins `client` to the agent's API in the namespace `netns` (this thread
/// enters it), until either side closes.
fn forward(client: TcpStream, netns: &Path) -> Result<()> {
    client.set_nonblocking(false)?;
    netns::enter(netns)?;
    let agent = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, API_PORT)),
        Duration::from_secs(2),
    )?;
    let (mut client_reads, mut agent_writes) = (client.try_clone()?, agent.try_clone()?);
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut client_reads, &mut agent_writes);
        let _ = agent_writes.shutdown(Shutdown::Write);
    });
    let (mut agent_reads, mut client_writes) = (agent, client);
    let _ = io::copy(&mut agent_reads, &mut client_writes);
    let _ = client_writes.shutdown(Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}

/// Step 2: the namespaces and veth pairs (after removing any an
/// interrupted demo left).
fn build_lab() -> Result<Lab> {
    step(
        2,
        &format!(
            "build the lab: network namespace {PREFIX}-mon is the monitor, {PREFIX}-n1..3 are \
             the nodes\n        web-1..3; node i reaches the monitor over its own virtual \
             cable (veth pair)\n        on 198.18.i.0/24 (node 198.18.i.2, monitor 198.18.i.1)."
        ),
    );
    // The pins of an interrupted demo's agent (the lab removes its own).
    hb_tests::pins::remove(PREFIX)?;
    let leftovers = netns::list_with_prefix(&format!("{PREFIX}-"))?;
    for name in &leftovers {
        netns::remove(name)?;
    }
    if !leftovers.is_empty() {
        println!(
            "    removed {} namespaces left by an interrupted demo: {}",
            leftovers.len(),
            leftovers.join(", ")
        );
    }
    let lab = Lab::build(PREFIX, NODES)?;
    for node in &lab.nodes {
        println!(
            "    {} ({}, {}) <-> monitor {} ({})",
            node_name(node.index),
            node.ns.name(),
            node.address,
            node.monitor_interface,
            node.monitor_address
        );
    }
    Ok(lab)
}

/// Step 3: a key, the configuration, and the agent in the monitor's
/// namespace, ready.
fn start_agent(hb: &Hb, dir: &TempDir, lab: &Lab, files: &Files) -> Result<ChildGuard> {
    step(
        3,
        &format!(
            "start the agent in {PREFIX}-mon. It attaches an XDP program to {}\n        \
             that checks every heartbeat's tag and records it in the kernel. First a key \
             for the\n        tags (the monitor and the senders share it), then the \
             configuration:",
            lab.monitor_interfaces().join(", ")
        ),
    );
    let keygen = hb.output([
        "keygen".as_ref(),
        "--id".as_ref(),
        "1".as_ref(),
        files.key.as_os_str(),
    ])?;
    println!(
        "    hb keygen --id 1 {}: {}",
        files.key.display(),
        String::from_utf8_lossy(&keygen.stdout)
            .lines()
            .next()
            .unwrap_or_default()
    );
    let config = render_config(lab, dir, &files.actions, &files.key)?;
    std::fs::write(&files.config, &config)
        .with_context(|| format!("writing {}", files.config.display()))?;
    println!("{}", indent(&config));
    let mut agent = hb.spawn_in(
        &lab.monitor,
        "the agent",
        [
            "agent".as_ref(),
            "--config".as_ref(),
            files.config.as_os_str(),
            "--status-socket".as_ref(),
            files.socket.as_os_str(),
        ],
        &dir.join("agent.log"),
    )?;
    let status = hb.wait_until_ready(&files.socket, &mut agent, Duration::from_secs(15))?;
    println!(
        "    agent running (pid {}); {}",
        agent.pid(),
        describe_interfaces(&status)
    );
    Ok(agent)
}

/// Step 4: a sender per node, until the action has reported each one UP.
fn start_senders(
    hb: &Hb,
    lab: &Lab,
    dir: &TempDir,
    key: &Path,
    log: &mut ActionLog,
) -> Result<Vec<ChildGuard>> {
    step(
        4,
        &format!(
            "start one heartbeat sender per node (`hb send`, every {}). As each node's first \
             heartbeat\n        arrives, the agent runs the action:",
            humantime(INTERVAL)
        ),
    );
    let mut senders: Vec<ChildGuard> = Vec::new();
    for index in 1..=NODES {
        senders.push(start_sender(hb, lab, dir, index, key)?);
    }
    let mut up = Vec::new();
    while up.len() < usize::from(NODES) {
        let (line, _) = log.wait_for("every node UP", Duration::from_secs(5) + MARGIN, |line| {
            line.contains(" is UP ") && !up.iter().any(|id| line.contains(&format!("(id {id})")))
        })?;
        let id = (1..=NODES)
            .find(|id| line.contains(&format!("(id {id})")))
            .context("UP line without a known node id")?;
        up.push(id);
    }
    Ok(senders)
}

/// Step 6: web-2 crashes while an impostor sends with its id; the agent
/// declares it DOWN in time, and its program refused the impostor.
fn crash(
    hb: &Hb,
    lab: &Lab,
    dir: &TempDir,
    files: &Files,
    senders: &mut [ChildGuard],
    log: &mut ActionLog,
) -> Result<()> {
    let timeout = timeout();
    step(
        6,
        &format!(
            "node web-2 crashes (its sender is killed with SIGKILL, so it cannot say goodbye).\n        \
             The monitor should notice once web-2 has been silent for {MULTIPLIER} x {} = {} \
             (checked every {}).",
            humantime(INTERVAL),
            humantime(timeout),
            humantime(SWEEP)
        ),
    );
    let node2 = &mut senders[1];
    node2.signal(Signal::Kill)?;
    let crashed = Instant::now();
    node2.wait_timeout(Duration::from_secs(5))?;
    println!(
        "    meanwhile, web-1's host pretends to be web-2: it sends heartbeats with web-2's id, \
         signed\n    (it holds the key, but web-2 is pinned to 198.18.2.2) and unsigned:"
    );
    let impostors = [
        start_impostor(hb, lab, dir, Some(&files.key))?,
        start_impostor(hb, lab, dir, None)?,
    ];
    let (_, seen) = log.wait_for("web-2 DOWN", timeout + SWEEP + MARGIN, |line| {
        line.contains("(id 2) is DOWN")
    })?;
    drop(impostors);
    let counters = hb.status_json(&files.socket)?["counters"].clone();
    println!(
        "    -> web-2 went DOWN anyway; the XDP program refused the impostor's heartbeats: \
         wrong_source={}, unauthenticated={}",
        counters["wrong_source"], counters["unauthenticated"]
    );
    let detected = seen - crashed;
    println!(
        "    -> detected {:.2} s after the crash (measured by this demo). Its last heartbeat \
         left up to\n       {} before the crash, so expect between about {:.2} s and {:.2} s.",
        detected.as_secs_f64(),
        humantime(INTERVAL),
        (timeout - INTERVAL).as_secs_f64(),
        (timeout + SWEEP).as_secs_f64()
    );
    Ok(())
}

/// Step 7: web-2 comes back with a new sender.
fn recover(
    hb: &Hb,
    lab: &Lab,
    dir: &TempDir,
    key: &Path,
    senders: &mut [ChildGuard],
    log: &mut ActionLog,
) -> Result<()> {
    step(
        7,
        "web-2 comes back (a new sender process, as after a reboot): it is UP again.",
    );
    senders[1] = start_sender(hb, lab, dir, 2, key)?;
    log.wait_for("web-2 UP again", Duration::from_secs(5), |line| {
        line.contains("(id 2) is UP (was down")
    })?;
    Ok(())
}

/// Step 8: web-3 leaves gracefully: LEFT, and no DOWN after twice the
/// timeout.
fn leave(node3: &mut ChildGuard, log: &mut ActionLog) -> Result<()> {
    let timeout = timeout();
    let quiet = timeout * 2;
    step(
        8,
        &format!(
            "web-3 leaves on purpose (SIGTERM: its sender sends a last heartbeat with the LEAVE \
             flag).\n        The monitor marks it LEFT, which is not a failure: there must be \
             no DOWN (no failover),\n        even after {:.1} s of silence (twice the timeout).",
            quiet.as_secs_f64()
        ),
    );
    let exit = node3.stop(Signal::Term, Duration::from_secs(5))?;
    println!("    web-3's sender exited ({exit})");
    log.wait_for("web-3 LEFT", timeout + SWEEP + MARGIN, |line| {
        line.contains("(id 3) is LEFT")
    })?;
    interrupt::sleep(quiet)?;
    let later = log.show_new()?;
    if let Some(down) = later.iter().find(|line| line.contains("(id 3) is DOWN")) {
        bail!("web-3 left gracefully but was then declared DOWN: {down}");
    }
    println!(
        "    -> no DOWN for web-3 in {:.1} s: a graceful leave triggers no failover.",
        quiet.as_secs_f64()
    );
    Ok(())
}

/// Step 10: the agent stopped (its XDP program stays attached, as it does
/// across restarts), `hb detach` (the program must be gone), then the
/// senders and the lab removed.
fn clean_up(
    hb: &Hb,
    mut agent: ChildGuard,
    senders: Vec<ChildGuard>,
    lab: Lab,
    log: &mut ActionLog,
) -> Result<()> {
    step(
        10,
        "stop everything: the agent (SIGTERM: its XDP program stays attached and \
         recording,\n        so that a restart or an upgrade misses no heartbeat), then \
         `hb detach`, which\n        removes the program and its pins, then the senders \
         and the lab.",
    );
    let exit = agent.stop(Signal::Term, Duration::from_secs(5))?;
    println!("    agent exited ({exit})");
    let attached_on = |lab: &Lab| -> Vec<String> {
        lab.monitor_interfaces()
            .into_iter()
            .filter(|name| {
                lab.monitor_xdp(name)
                    .map(|xdp| xdp.is_some())
                    .unwrap_or(true)
            })
            .collect()
    };
    let kept = attached_on(&lab);
    println!(
        "    XDP still attached to {} after the agent exited",
        if kept.is_empty() {
            "nothing".to_owned()
        } else {
            kept.join(", ")
        }
    );
    println!("    $ hb detach --instance {}", lab.instance());
    println!("{}", indent(&hb.detach(lab.instance())?));
    let attached = attached_on(&lab);
    log.show_new()?;
    drop(agent);
    drop(senders);
    drop(lab);
    println!("    removed the {PREFIX}-* namespaces and their veth pairs");
    if !exit.success() {
        bail!("the agent did not exit cleanly ({exit})");
    }
    if kept.len() != NODES as usize {
        bail!("the agent's exit detached XDP (attached to: {kept:?}); it must stay attached");
    }
    if !attached.is_empty() {
        bail!(
            "XDP was still attached to {} after hb detach",
            attached.join(", ")
        );
    }
    Ok(())
}

/// The embedded configuration for `lab`, with the paths of this run.
fn render_config(lab: &Lab, dir: &TempDir, actions: &Path, key: &Path) -> Result<String> {
    let interfaces: Vec<String> = lab
        .monitor_interfaces()
        .iter()
        .map(|name| toml_string(name))
        .collect();
    let path = |p: &Path| toml_string(&p.to_string_lossy());
    let actions = actions.to_string_lossy();
    if lab.instance() != PREFIX {
        bail!(
            "demo.toml names instance {PREFIX}, the lab's is {}",
            lab.instance()
        );
    }
    if actions.contains("'''") {
        bail!("unusable log path {actions}");
    }
    Ok(CONFIG
        .replace("{{INTERFACES}}", &format!("[{}]", interfaces.join(", ")))
        .replace("{{SOCKET}}", &path(&dir.join("hb.sock")))
        .replace("{{STATE}}", &path(&dir.join("state")))
        .replace("{{KEY}}", &path(key))
        .replace("{{LOG}}", &shell_quote(&actions)))
}

fn start_sender(hb: &Hb, lab: &Lab, dir: &TempDir, index: u8, key: &Path) -> Result<ChildGuard> {
    let node = lab.node(index);
    let to = format!("{}:{HEARTBEAT_PORT}", node.monitor_address);
    let id = index.to_string();
    let interval = humantime(INTERVAL);
    let key = key.to_string_lossy();
    let args = [
        "send",
        "--node-id",
        &id,
        "--to",
        &to,
        "--interval",
        &interval,
        "--key-file",
        &key,
    ];
    let sender = hb.spawn_in(
        &node.ns,
        &format!("{}'s sender", node_name(index)),
        args,
        &dir.join(&format!("sender-{index}.log")),
    )?;
    println!(
        "    {}: hb {} (pid {})",
        node_name(index),
        args.join(" "),
        sender.pid()
    );
    Ok(sender)
}

/// A sender on web-1's host claiming to be web-2, signed with `key` or not.
fn start_impostor(hb: &Hb, lab: &Lab, dir: &TempDir, key: Option<&Path>) -> Result<ChildGuard> {
    let node = lab.node(1);
    let to = format!("{}:{HEARTBEAT_PORT}", node.monitor_address);
    let interval = humantime(INTERVAL / 5);
    let mut args = vec![
        "send".to_owned(),
        "--node-id".to_owned(),
        "2".to_owned(),
        "--to".to_owned(),
        to,
        "--interval".to_owned(),
        interval,
    ];
    if let Some(key) = key {
        args.extend(["--key-file".to_owned(), key.to_string_lossy().into_owned()]);
    }
    let what = if key.is_some() { "signed" } else { "unsigned" };
    let impostor = hb.spawn_in(
        &node.ns,
        &format!("the {what} impostor"),
        &args,
        &dir.join(&format!("impostor-{what}.log")),
    )?;
    println!("    web-1 (impostor, {what}): hb {}", args.join(" "));
    Ok(impostor)
}

/// "XDP on hbdemom1 (native), ..." from `hb status --json`.
fn describe_interfaces(status: &Value) -> String {
    let list: Vec<String> = status["interfaces"]
        .as_array()
        .map(|interfaces| {
            interfaces
                .iter()
                .map(|i| {
                    format!(
                        "{} ({})",
                        i["name"].as_str().unwrap_or("?"),
                        i["mode"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "`hb status --json` lists no interfaces".to_owned()
    } else {
        format!("XDP attached to {}", list.join(", "))
    }
}
