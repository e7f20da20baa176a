//! A real HAProxy (Debian's `haproxy`) in a lab namespace ([`Haproxy`]:
//! its config, its process, its runtime API), for the HAProxy action's
//! test. Health checks are off on purpose: only hb takes servers out of
//! rotation.

use std::{
    fs,
    io::{Read, Write},
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{ChildGuard, Error, NetNs, Result, interrupt};

/// Answers of the runtime API are small here; anything longer is cut.
const MAX_ANSWER: u64 = 1 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A HAProxy process (`haproxy -db`, killed on Drop) with an HTTP
/// frontend and one backend, and its admin-level stats socket.
#[derive(Debug)]
pub struct Haproxy {
    /// The process; killed on Drop.
    pub process: ChildGuard,
    /// The runtime API's Unix socket.
    pub socket: PathBuf,
    /// Where the frontend listens (inside the namespace).
    pub frontend: SocketAddr,
    /// The backend's name.
    pub backend: String,
}

impl Haproxy {
    /// Writes `dir/haproxy.cfg` (frontend on `frontend`, backend `backend`
    /// with `servers` as (name, address) in round robin, no health
    /// checks), starts HAProxy in `ns` and waits until its runtime API
    /// answers.
    pub fn start(
        ns: &NetNs,
        dir: &Path,
        frontend: SocketAddr,
        backend: &str,
        servers: &[(String, SocketAddr)],
    ) -> Result<Self> {
        let socket = dir.join("haproxy.sock");
        let config = dir.join("haproxy.cfg");
        let mut text = format!(
            "global\n    stats socket {} mode 600 level admin\n\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    \
             timeout server 5s\n\n\
             frontend front\n    bind {frontend}\n    default_backend {backend}\n\n\
             backend {backend}\n    balance roundrobin\n",
            socket.display()
        );
        for (name, address) in servers {
            text.push_str(&format!("    server {name} {address}\n"));
        }
        fs::write(&config, text).map_err(|source| Error::Io {
            op: "writing",
            path: config.clone(),
            source,
        })?;
        let mut command = ns.command("haproxy");
        command.arg("-db").arg("-f").arg(&config);
        let process = ChildGuard::spawn_logged("haproxy", &mut command, &dir.join("haproxy.log"))?;
        let mut haproxy = Self {
            process,
            socket,
            frontend,
            backend: backend.to_owned(),
        };
        haproxy.wait_ready(Duration::from_secs(10))?;
        Ok(haproxy)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.process.ensure_running()?;
            let last = match self.servers_state() {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "HAProxy's runtime API".to_owned(),
                    after: within,
                    detail: format!("; last error: {last}\n{}", self.process.log_tail(20)),
                });
            }
            interrupt::sleep(Duration::from_millis(50))?;
        }
    }

    /// Sends one runtime-API command and returns HAProxy's answer.
    pub fn command(&self, command: &str) -> Result<String> {
        let net = |source| Error::Net {
            op: format!("`{command}` on {}", self.socket.display()),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(net)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(net)?;
        stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(net)?;
        let mut answer = String::new();
        stream
            .take(MAX_ANSWER)
            .read_to_string(&mut answer)
            .map_err(net)?;
        Ok(answer)
    }

    /// `show servers state BACKEND` as (server, srv_op_state,
    /// srv_admin_state), read by the columns its header names.
    pub fn servers_state(&self) -> Result<Vec<(String, u32, u32)>> {
        let command = format!("show servers state {}", self.backend);
        let answer = self.command(&command)?;
        parse_servers_state(&answer).ok_or_else(|| Error::Invalid {
            what: "answer to show servers state",
            value: answer.clone(),
            reason: "not a `# be_id ...` header followed by server lines".to_owned(),
        })
    }

    /// The srv_admin_state of `server`.
    pub fn admin_state(&self, server: &str) -> Result<u32> {
        self.servers_state()?
            .into_iter()
            .find(|(name, _, _)| name == server)
            .map(|(_, _, admin)| admin)
            .ok_or_else(|| Error::Invalid {
                what: "server",
                value: server.to_owned(),
                reason: format!("not in backend {}", self.backend),
            })
    }
}

fn parse_servers_state(answer: &str) -> Option<Vec<(String, u32, u32)>> {
    let mut lines = answer.lines();
    let header: Vec<&str> = lines
        .by_ref()
        .find_map(|line| line.strip_prefix('#'))?
        .split_whitespace()
        .collect();
    let column = |name: &str| header.iter().position(|&c| c == name);
    let (name, op, admin) = (
        column("srv_name")?,
        column("srv_op_state")?,
        column("srv_admin_state")?,
    );
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((
                (*fields.get(name)?).to_owned(),
                fields.get(op)?.parse().ok()?,
                fields.get(admin)?.parse().ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_show_servers_state() {
        let answer = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n\
                      3 web 1 node-1 198.18.1.2 0 1\n3 web 2 node-2 198.18.2.2 2 0\n\n";
        assert_eq!(
            parse_servers_state(answer),
            Some(vec![("node-1".into(), 0, 1), ("node-2".into(), 2, 0)])
        );
        assert_eq!(parse_servers_state("Can't find backend.\n"), None);
    }
}
