//! A monitor group over TLS, as etcd deployments run it: one etcd member
//! serving `https://` with a certificate of a test CA and requiring client
//! certificates (`--client-cert-auth`), in a namespace of its own with an
//! agent (`[group]` with `ca_file`, `cert_file`, `key_file`) and a node.
//! The agent joins, leads (a group of one) and runs the node's `down` once
//! it crashes. A second agent with the CA but no client certificate is
//! refused by etcd: it reports `no quorum` with the reason, and runs
//! nothing. The certificates are made by `openssl` for the test and removed
//! with everything else. Needs root.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use hb_tests::{ChildGuard, Hb, NetNs, TempDir, netns, unique_prefix};
use serde_json::Value;

const ADDRESS: &str = "198.18.0.1";
const PORT_OK: u16 = 7971;
const PORT_REFUSED: u16 = 7972;

/// Runs `openssl ARGS` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, a server certificate for `ADDRESS` and a client certificate, all
/// P-256 with PKCS#8 keys, valid one day.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=hb test CA",
    ]);
    openssl(dir, &ca);
    for (name, usage, san) in [
        (
            "server",
            "serverAuth",
            format!("subjectAltName=IP:{ADDRESS}"),
        ),
        (
            "client",
            "clientAuth",
            "subjectAltName=DNS:hb-monitor".to_owned(),
        ),
    ] {
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("{san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
        )
        .expect("writing an extension file");
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN=hb {name}");
        let mut request = vec!["req"];
        request.extend(ec);
        request.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(dir, &request);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// An agent's configuration: the socket datapath on `lo`, node 1, an
/// action appending `EVENT NODE` to `actions`, and the group over TLS
/// (with the client certificate or without).
fn write_config(dir: &Path, name: &str, port: u16, client_cert: bool) -> std::path::PathBuf {
    let d = dir.display();
    let client = if client_cert {
        format!("cert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client.key\"\n")
    } else {
        String::new()
    };
    let text = format!(
        r#"interfaces = ["lo"]
datapath = "socket"
port = {port}
instance = "{name}"
status_socket = "{d}/{name}.sock"
state_file = "{d}/{name}.state"

[http]
listen = ""

[defaults]
interval = "100ms"
sweep_period = "50ms"

[[nodes]]
id = 1
name = "node-1"

[[actions]]
name = "record"
on = ["up", "down", "left"]
shell = "echo \"$HB_EVENT $HB_NODE_NAME\" >> {d}/{name}.actions"

[group]
name = "tls"
monitor = "{name}"
endpoints = ["https://{ADDRESS}:2379"]
lease_ttl = "2s"
join_after = "0s"
ca_file = "{d}/ca.pem"
{client}"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("writing a config");
    path
}

/// Polls `check` every 50 ms until it gives a value, at most `within`.
fn wait<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn group(hb: &Hb, socket: &Path) -> Option<Value> {
    hb.status_json(socket).ok()?.get("group").cloned()
}

#[test]
fn a_group_reaches_etcd_over_tls_only_with_a_client_certificate() {
    let hb = Hb::from_env();
    let dir = TempDir::new("hb-group-tls").expect("a temp dir");
    make_certificates(dir.path());
    let ns = NetNs::create(&format!("{}-tls", unique_prefix())).expect("a namespace");
    ns.ip(["link", "set", "lo", "up"]).expect("lo up");
    ns.ip(["addr", "add", &format!("{ADDRESS}/32"), "dev", "lo"])
        .expect("an address");
    let d = dir.path().display().to_string();
    let mut etcd_cmd = ns.command("etcd");
    etcd_cmd
        .args(["--name", "tls1", "--data-dir", &format!("{d}/etcd")])
        .args(["--listen-client-urls", &format!("https://{ADDRESS}:2379")])
        .args([
            "--advertise-client-urls",
            &format!("https://{ADDRESS}:2379"),
        ])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
        .args(["--initial-cluster", "tls1=http://127.0.0.1:2380"])
        .args(["--cert-file", &format!("{d}/server.pem")])
        .args(["--key-file", &format!("{d}/server.key")])
        .args(["--trusted-ca-file", &format!("{d}/ca.pem")])
        .arg("--client-cert-auth")
        .args(["--logger", "zap", "--log-outputs", "stderr"]);
    let _etcd = ChildGuard::spawn_logged("etcd", &mut etcd_cmd, &dir.join("etcd.log"))
        .expect("starting etcd");

    let start_agent = |name: &str, port: u16, client_cert: bool| -> ChildGuard {
        let config = write_config(dir.path(), name, port, client_cert);
        let config = config.display().to_string();
        let log = dir.join(&format!("{name}.log"));
        let mut agent = hb
            .spawn_in(&ns, name, ["agent", "--config", &config], &log)
            .expect("starting an agent");
        hb.wait_until_ready(
            &dir.join(&format!("{name}.sock")),
            &mut agent,
            Duration::from_secs(20),
        )
        .expect("the agent answers");
        agent
    };
    let mut trusted = start_agent("trusted", PORT_OK, true);
    let mut refused = start_agent("refused", PORT_REFUSED, false);
    let sender_args = [
        "send",
        "--node-id",
        "1",
        "--to",
        &format!("127.0.0.1:{PORT_OK}"),
        "--to",
        &format!("127.0.0.1:{PORT_REFUSED}"),
        "--interval",
        "100ms",
        "--jitter",
        "0",
    ];
    let mut sender = hb
        .spawn_in(&ns, "sender", sender_args, &dir.join("sender.log"))
        .expect("starting the sender");

    let trusted_socket = dir.join("trusted.sock");
    let leading = wait(
        Duration::from_secs(20),
        "the trusted agent to lead over TLS",
        || {
            let group = group(&hb, &trusted_socket)?;
            (group["role"] == "leader").then_some(group)
        },
    );
    assert_eq!(leading["quorum"], true, "{leading}");
    assert_eq!(
        leading["members"].as_array().map(Vec::len),
        Some(1),
        "{leading}"
    );

    let refused_socket = dir.join("refused.sock");
    let refusal = wait(Duration::from_secs(10), "the refused agent's error", || {
        let group = group(&hb, &refused_socket)?;
        group["last_error"].as_str().map(|_| group.clone())
    });
    assert_eq!(refusal["quorum"], false, "{refusal}");
    assert_eq!(refusal["role"], "no quorum", "{refusal}");
    let text = hb.status_text(&refused_socket).expect("hb status");
    assert!(text.contains("NO QUORUM"), "{text}");

    // Both hear the node; it crashes; only the group's leader acts, once.
    sender
        .stop(hb_tests::Signal::Kill, Duration::from_secs(5))
        .expect("crashing the node");
    let crashed = Instant::now();
    let actions = dir.join("trusted.actions");
    wait(Duration::from_secs(5), "the group's down", || {
        let text = std::fs::read_to_string(&actions).ok()?;
        text.contains("down node-1").then_some(())
    });
    eprintln!(
        "group over TLS: `down node-1` within {:?} of the crash",
        crashed.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    let ran = std::fs::read_to_string(&actions).unwrap_or_default();
    assert_eq!(ran.matches("down node-1").count(), 1, "{ran}");
    assert!(
        !dir.join("refused.actions").exists(),
        "the monitor without quorum ran an action"
    );
    let state = hb.status_json(&refused_socket).expect("status");
    let local = state["nodes"][0]["state"].clone();
    assert_eq!(local, "down", "it still detects locally: {state}");
    for agent in [&mut trusted, &mut refused] {
        agent.ensure_running().expect("the agents run on");
    }
    drop((trusted, refused));
    let name = ns.name().to_owned();
    drop(ns);
    assert!(
        !netns::list_with_prefix(&name)
            .expect("listing namespaces")
            .contains(&name),
        "the namespace {name} is left"
    );
}
