//! The wire side of the haproxy action: one runtime-API command per
//! connection, and reading `show servers state`.

use std::{collections::HashMap, io};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UnixStream},
};

use super::HaproxySocket;

/// Answers are read up to this size: a `show servers state` line is about
/// 150 bytes, so this holds backends of 400,000 servers.
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// `srv_admin_state` by server name, from the answer to `show servers
/// state BACKEND` (a version line, a `# be_id be_name ...` header naming
/// the columns, one line per server). Anything else is HAProxy's error.
pub(super) fn admin_states(answer: &str, backend: &str) -> Result<HashMap<String, u32>, String> {
    let mut lines = answer.lines();
    let header = lines
        .by_ref()
        .find_map(|line| line.strip_prefix('#'))
        .ok_or_else(|| format!("HAProxy answered {:?}", one_line(answer)))?;
    let columns: Vec<&str> = header.split_whitespace().collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|&c| c == name)
            .ok_or_else(|| format!("no {name} column in HAProxy's header {:?}", header.trim()))
    };
    let (be_name, srv_name, admin) = (
        column("be_name")?,
        column("srv_name")?,
        column("srv_admin_state")?,
    );
    let mut states = HashMap::new();
    for line in lines.filter(|line| !line.trim().is_empty() && !line.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(&be), Some(&server), Some(state)) =
            (fields.get(be_name), fields.get(srv_name), fields.get(admin))
        else {
            return Err(format!("cannot read HAProxy's line {line:?}"));
        };
        let state = state
            .parse()
            .map_err(|_| format!("srv_admin_state {state:?} is not a number in {line:?}"))?;
        if be == backend {
            states.insert(server.to_owned(), state);
        }
    }
    Ok(states)
}

/// HAProxy's answer on one line, for a log message.
pub(super) fn one_line(answer: &str) -> String {
    let lines: Vec<&str> = answer
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" / ")
}

/// Sends one command on a fresh connection and reads the answer until
/// HAProxy closes it.
pub(super) async fn send(socket: &HaproxySocket, command: &str) -> io::Result<String> {
    let context =
        |e: io::Error| io::Error::new(e.kind(), format!("HAProxy stats socket {socket}: {e}"));
    match socket {
        HaproxySocket::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(context)?;
            exchange(stream, command).await.map_err(context)
        }
        HaproxySocket::Tcp(address) => {
            let stream = TcpStream::connect(address).await.map_err(context)?;
            exchange(stream, command).await.map_err(context)
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    command: &str,
) -> io::Result<String> {
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
