//! TCP and HTTP probes: run on the agent's tokio runtime, at most
//! `probe.max_concurrent` at once, each bounded by its `probe_timeout`. The
//! scheduler thread hands each due probe to [`Connector::submit`] (never
//! waiting: a probe that finds every slot taken and the queue full is
//! counted as `busy` and not sent); one dispatcher task starts them as
//! slots free up. No task or timer exists per node: only per probe in
//! flight. A success is recorded into the node table
//! ([`NodeTable::record_probe`]) as the XDP program records an ICMP reply.

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::{Semaphore, mpsc},
};

use super::{
    ProbeStats,
    spec::{ProbeKind, ProbePlan},
};
use crate::{clock::monotonic_ns, datapath::table::NodeTable};

/// Most bytes of a body read to look for `probe_body`.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a TCP or HTTP probe failed (`reason` of `hb_probe_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The connection was refused or reset.
    Refused,
    /// No answer within `probe_timeout`.
    Timeout,
    /// An HTTP status outside `probe_status`.
    Status,
    /// The body did not contain `probe_body`.
    Body,
    /// Anything else: no route, TLS, a malformed answer.
    Error,
    /// Every slot was taken: the probe was not sent.
    Busy,
    /// The kernel refused to send an echo request.
    Send,
}

impl Failure {
    pub const ALL: [Failure; 7] = [
        Failure::Refused,
        Failure::Timeout,
        Failure::Status,
        Failure::Body,
        Failure::Error,
        Failure::Busy,
        Failure::Send,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::Status => "status",
            Failure::Body => "body",
            Failure::Error => "error",
            Failure::Busy => "busy",
            Failure::Send => "send",
        }
    }
}

/// One TCP or HTTP probe to run.
pub struct Job {
    pub node_id: u32,
    pub sequence: u64,
    pub address: IpAddr,
    pub plan: Arc<ProbePlan>,
}

/// Hands probes to the runtime.
pub struct Connector {
    queue: mpsc::Sender<Job>,
    stats: Arc<ProbeStats>,
}

impl Connector {
    /// Starts the dispatcher on `runtime`; successes go into `table`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        max_concurrent: usize,
        table: NodeTable,
        stats: Arc<ProbeStats>,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(max_concurrent);
        runtime.spawn(dispatch(
            jobs,
            Arc::new(Semaphore::new(max_concurrent)),
            Arc::new(table),
            Arc::clone(&stats),
        ));
        Connector { queue, stats }
    }

    /// Queues a probe (true), or counts it `busy` if the queue is full.
    pub fn submit(&self, job: Job) -> bool {
        let kind = job.plan.kind.name();
        let queued = self.queue.try_send(job).is_ok();
        if !queued {
            self.stats.failed(kind, Failure::Busy);
        }
        queued
    }
}

/// Starts each queued probe once a slot is free; ends when the scheduler
/// drops its [`Connector`] (probes in flight finish on their own).
async fn dispatch(
    mut jobs: mpsc::Receiver<Job>,
    slots: Arc<Semaphore>,
    table: Arc<NodeTable>,
    stats: Arc<ProbeStats>,
) {
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (table, stats) = (Arc::clone(&table), Arc::clone(&stats));
        tokio::spawn(async move {
            let kind = job.plan.kind.name();
            let outcome = match tokio::time::timeout(job.plan.timeout, probe(&job)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Timeout),
            };
            match outcome {
                Ok(()) => {
                    table.record_probe(job.node_id, job.sequence, monotonic_ns());
                }
                Err(failure) => stats.failed(kind, failure),
            }
            drop(slot);
        });
    }
}

/// One probe, unbounded in time (the caller bounds it).
async fn probe(job: &Job) -> Result<(), Failure> {
    match &job.plan.kind {
        ProbeKind::Tcp { port } => {
            let stream = connect((job.address, *port).into()).await?;
            drop(stream);
            Ok(())
        }
        ProbeKind::Http(url) => {
            let target = url.target(job.address).map_err(|_| Failure::Error)?;
            let stream = connect(target.connect).await?;
            let _ = stream.set_nodelay(true);
            let request = Request::get(target.path.as_str())
                .header(header::HOST, target.host_header.as_str())
                .header(
                    header::USER_AGENT,
                    concat!("hb-probe/", env!("CARGO_PKG_VERSION")),
                )
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|_| Failure::Error)?;
            if target.https {
                let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|_| Failure::Error)?;
                let tls = tokio_rustls::TlsConnector::from(tls_config())
                    .connect(name, stream)
                    .await
                    .map_err(|e| classify(&e))?;
                exchange(tls, request, &job.plan).await
            } else {
                exchange(stream, request, &job.plan).await
            }
        }
        ProbeKind::Icmp => Err(Failure::Error),
    }
}

async fn connect(address: std::net::SocketAddr) -> Result<TcpStream, Failure> {
    TcpStream::connect(address).await.map_err(|e| classify(&e))
}

fn classify(error: &std::io::Error) -> Failure {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset => {
            Failure::Refused
        }
        std::io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Error,
    }
}

/// Sends the request over `io` and checks the answer against the plan's
/// status range and body text.
async fn exchange<IO>(
    io: IO,
    request: Request<Empty<Bytes>>,
    plan: &ProbePlan,
) -> Result<(), Failure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| Failure::Error)?;
    let connection = tokio::spawn(connection);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Error)?;
        if !plan.status.contains(response.status().as_u16()) {
            return Err(Failure::Status);
        }
        if let Some(wanted) = &plan.body {
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|_| Failure::Body)?
                .to_bytes();
            if !contains(&body, wanted.as_bytes()) {
                return Err(Failure::Body);
            }
        }
        Ok(())
    }
    .await;
    connection.abort();
    result
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The TLS client configuration of HTTPS probes (the system's CA store,
/// as webhooks), built at the first HTTPS probe.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| Arc::new(crate::sinks::actions::webhook::tls_config())))
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        time::Duration,
    };

    use super::*;
    use crate::probe::spec::{StatusRange, default_timeout};

    fn plan(kind: &str, status: Option<&str>, body: Option<&str>) -> Arc<ProbePlan> {
        Arc::new(ProbePlan {
            kind: ProbeKind::try_from(kind.to_owned()).unwrap(),
            interval: Duration::from_secs(1),
            timeout: default_timeout(Duration::from_secs(1)),
            status: status.map_or_else(StatusRange::default, |s| {
                StatusRange::try_from(s.to_owned()).unwrap()
            }),
            body: body.map(str::to_owned),
            confirm: false,
        })
    }

    /// A one-shot HTTP server on loopback answering every request with
    /// `status` and `body`, for `requests` requests.
    fn serve(status: &'static str, body: &'static str, requests: usize) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        port
    }

    fn job(plan: Arc<ProbePlan>) -> Job {
        Job {
            node_id: 1,
            sequence: 1,
            address: "127.0.0.1".parse().unwrap(),
            plan,
        }
    }

    #[tokio::test]
    async fn http_probes_check_the_status_and_the_body() {
        let port = serve("200 OK", "all ok", 3);
        let url = format!("http://{{address}}:{port}/healthz");
        assert_eq!(probe(&job(plan(&url, None, None))).await, Ok(()));
        assert_eq!(probe(&job(plan(&url, None, Some("ok")))).await, Ok(()));
        assert_eq!(
            probe(&job(plan(&url, None, Some("nope")))).await,
            Err(Failure::Body)
        );
        let port = serve("503 Service Unavailable", "down", 1);
        let url = format!("http://{{address}}:{port}/");
        assert_eq!(
            probe(&job(plan(&url, Some("200-299"), None))).await,
            Err(Failure::Status)
        );
    }

    #[tokio::test]
    async fn tcp_probes_connect_and_refusals_are_told_apart() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            probe(&job(plan(&format!("tcp:{port}"), None, None))).await,
            Ok(())
        );
        drop(listener);
        assert_eq!(
            probe(&job(plan(&format!("tcp:{port}"), None, None))).await,
            Err(Failure::Refused)
        );
    }

    #[test]
    fn body_search() {
        assert!(contains(b"all ok", b"ok"));
        assert!(!contains(b"o", b"ok"));
    }
}
