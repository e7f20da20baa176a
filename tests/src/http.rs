//! A tiny HTTP backend living in a lab namespace ([`HttpBackend`]: a thread
//! of the test process, so no web server package is needed; stopped on
//! Drop) and a bounded HTTP/1.0 client run from inside a namespace
//! ([`get_many`]).

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use crate::{Error, Result, netns};

/// Connect, read and write timeout of every exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the backend looks at its stop flag while idle.
const POLL: Duration = Duration::from_millis(5);
/// Requests are short; anything longer is cut.
const MAX_REQUEST: usize = 8192;

/// An HTTP server answering every request with `200 OK` and its body (a
/// name saying who answered), from a thread whose socket lives in a lab
/// namespace. Dropping it (or [`HttpBackend::stop`]) closes the listening
/// socket, so new connections are refused: a crashed web server.
#[derive(Debug)]
pub struct HttpBackend {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpBackend {
    /// Serve `body` on `address` inside the namespace whose file is
    /// `netns` (see [`crate::NetNs::path`]).
    pub fn start(netns: &Path, address: SocketAddr, body: &str) -> Result<Self> {
        let (ready, bound) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (netns, body, stopping) = (netns.to_owned(), body.to_owned(), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let listener = bind_in(&netns, address);
            let listener = match listener {
                Ok(listener) => {
                    let _ = ready.send(Ok(()));
                    listener
                }
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            serve(&listener, &body, &stopping);
        });
        let backend = Self {
            stop,
            thread: Some(thread),
        };
        match bound.recv_timeout(IO_TIMEOUT) {
            Ok(Ok(())) => Ok(backend),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Timeout {
                what: format!("the HTTP backend to listen on {address}"),
                after: IO_TIMEOUT,
                detail: String::new(),
            }),
        }
    }

    /// Stops serving and closes the socket; returns once it is closed.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A non-blocking TCP listener on `address`, bound from inside `netns`
/// (the calling thread enters it).
pub(crate) fn bind_in(netns: &Path, address: SocketAddr) -> Result<TcpListener> {
    netns::enter(netns)?;
    let net = |op: &str| {
        let op = format!("{op} {address} in {}", netns.display());
        move |source| Error::Net { op, source }
    };
    let listener = TcpListener::bind(address).map_err(net("binding"))?;
    listener
        .set_nonblocking(true)
        .map_err(net("setting non-blocking"))?;
    Ok(listener)
}

/// Accepts and answers one connection at a time until `stop` is set.
fn serve(listener: &TcpListener, body: &str, stop: &AtomicBool) {
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                // A broken client only loses its own answer.
                let _ = answer(stream, response.as_bytes());
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

fn answer(mut stream: TcpStream, response: &[u8]) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..n]);
    }
    stream.write_all(response)?;
    stream.flush()
}

/// One request's outcome: the body of a `200` answer, or what went wrong
/// (another status, a refused or reset connection, a timeout).
pub type Answer = std::result::Result<String, String>;

/// `count` sequential `GET /` requests to `address`, each on its own
/// connection, from a thread inside the namespace whose file is `netns`.
/// Bounded: every exchange times out after a few seconds.
pub fn get_many(netns: &Path, address: SocketAddr, count: usize) -> Result<Vec<Answer>> {
    let netns = netns.to_owned();
    let client = thread::spawn(move || -> Result<Vec<Answer>> {
        netns::enter(&netns)?;
        Ok((0..count).map(|_| get(address)).collect())
    });
    client.join().unwrap_or_else(|_| {
        Err(Error::Net {
            op: format!("requests to {address}"),
            source: io::Error::other("the client thread panicked"),
        })
    })
}

fn get(address: SocketAddr) -> Answer {
    let exchange = || -> io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: hb-test\r\n\r\n")?;
        let mut response = String::new();
        stream.take(1 << 20).read_to_string(&mut response)?;
        Ok(response)
    };
    let response = exchange().map_err(|err| err.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {response:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(body.to_owned())
    } else {
        Err(format!("answered {status:?}"))
    }
}
