//! The agent's HTTP clients in the bench: a Prometheus-like scraper
//! fetching `/metrics` once a second and an event-stream client reading
//! `/api/v1/events`, each a thread of this process that entered the
//! monitor namespace (the agent listens on that namespace's 127.0.0.1), so
//! their own CPU never counts as the agent's. Plain HTTP/1.1 over
//! `std::net`: no client crate, no curl.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hb_tests::netns;
use serde::Serialize;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a blocked reader looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// The wait before the event client reconnects, as an `EventSource` does.
const RECONNECT: Duration = Duration::from_millis(100);
/// The event kinds the stream client counts (`event: KIND` lines).
const KINDS: [&str; 4] = ["transition", "summary", "lagged", "missed"];

/// Runs `work` in a thread that entered the network namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let netns = netns.to_owned();
    thread::spawn(move || {
        netns::enter(&netns)?;
        work()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in the monitor namespace panicked"))?
}

/// `GET path` from `addr` with `Connection: close`; the body of a 200.
pub fn get(addr: SocketAddr, path: &str) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading GET {path} from {addr}"))?;
    let (status, body) = parse_response(&raw)?;
    if status != 200 {
        bail!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// The status and the body of a whole HTTP/1.1 response (read to the
/// end), chunked transfer encoding undone.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the response has no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in the response head {head:?}"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// Undoes chunked transfer encoding (RFC 9112 7.1; extensions ignored).
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without a size line")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("a chunk of {size} bytes is cut short");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// What the scraper saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScrapeStats {
    pub attempted: u64,
    /// Scrapes answered 200 with a whole body.
    pub answered: u64,
    /// The first few errors, for the record.
    pub errors: Vec<String>,
    /// Request to the end of the body, per answered scrape, ms.
    pub latency_mean_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    /// The last body's size.
    pub last_body_bytes: usize,
}

/// What the event-stream client saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventStats {
    /// Connections opened (more than one: the agent dropped a lagging
    /// client, or refused a connection, and the client came back).
    pub connections: u64,
    /// Bytes read from the socket: response heads, chunk framing and
    /// events.
    pub bytes: u64,
    /// `event: KIND` lines, by kind ([`KINDS`] order).
    pub transition: u64,
    pub summary: u64,
    pub lagged: u64,
    pub missed: u64,
    /// Connections that ended before the run did.
    pub ended_early: u64,
    pub errors: Vec<String>,
}

/// The two clients, running until [`Clients::finish`] (or Drop) stops them.
pub struct Clients {
    stop: Arc<AtomicBool>,
    scraper: Option<JoinHandle<Result<ScrapeStats>>>,
    events: Option<JoinHandle<Result<EventStats>>>,
}

impl Clients {
    /// Starts both in the namespace `netns`, against `addr` there.
    pub fn start(netns: PathBuf, addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let scraper = {
            let (netns, stop) = (netns.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                netns::enter(&netns)?;
                Ok(scrape_every_second(addr, &stop))
            })
        };
        let events = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                netns::enter(&netns)?;
                Ok(read_events(addr, &stop))
            })
        };
        Self {
            stop,
            scraper: Some(scraper),
            events: Some(events),
        }
    }

    /// Stops both and returns what they saw.
    pub fn finish(mut self) -> Result<(ScrapeStats, EventStats)> {
        self.stop.store(true, Ordering::Relaxed);
        let scrapes = join("scraper", self.scraper.take())?;
        let events = join("event client", self.events.take())?;
        Ok((scrapes, events))
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        // Both threads look at the flag at least every POLL (a scrape in
        // flight: within its timeout), so this join is bounded.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.scraper.take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.events.take() {
            let _ = handle.join();
        }
    }
}

/// What a client thread returned.
fn join<T>(name: &str, handle: Option<JoinHandle<Result<T>>>) -> Result<T> {
    match handle {
        Some(handle) => handle
            .join()
            .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))?,
        None => bail!("the {name} thread is gone"),
    }
}

/// Fetches `/metrics` once a second, on a fixed schedule, until `stop`.
fn scrape_every_second(addr: SocketAddr, stop: &AtomicBool) -> ScrapeStats {
    let mut stats = ScrapeStats::default();
    let mut latencies = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < next {
            thread::sleep(POLL.min(next - Instant::now()));
            continue;
        }
        next += Duration::from_secs(1);
        stats.attempted += 1;
        let start = Instant::now();
        match get(addr, "/metrics") {
            Ok(body) => {
                latencies.push(start.elapsed().as_secs_f64() * 1e3);
                stats.answered += 1;
                stats.last_body_bytes = body.len();
            }
            Err(err) if stats.errors.len() < 5 => stats.errors.push(format!("{err:#}")),
            Err(_) => {}
        }
    }
    if !latencies.is_empty() {
        stats.latency_mean_ms = Some(latencies.iter().sum::<f64>() / latencies.len() as f64);
        stats.latency_max_ms = latencies.iter().copied().reduce(f64::max);
    }
    stats
}

/// Reads `/api/v1/events` and discards it until `stop`, reconnecting when
/// the agent drops the connection; counts bytes and events.
fn read_events(addr: SocketAddr, stop: &AtomicBool) -> EventStats {
    let mut stats = EventStats::default();
    while !stop.load(Ordering::Relaxed) {
        match stream_once(addr, stop, &mut stats) {
            Ok(true) => stats.ended_early += 1,
            Ok(false) => {}
            Err(err) if stats.errors.len() < 5 => stats.errors.push(format!("{err:#}")),
            Err(_) => {}
        }
        thread::sleep(RECONNECT);
    }
    stats
}

/// One connection to the event stream; true if the agent ended it (as it
/// does after telling a lagging client `lagged`). `Connection: close`, so
/// the end of the stream is the end of the connection: otherwise HTTP/1.1
/// keeps it open after the last chunk, and the client would wait forever.
fn stream_once(addr: SocketAddr, stop: &AtomicBool, stats: &mut EventStats) -> Result<bool> {
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(POLL))?;
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
         Connection: close\r\n\r\n"
    )?;
    stats.connections += 1;
    let mut counter = KindCounter::default();
    let mut buffer = vec![0u8; 64 * 1024];
    let ended = loop {
        if stop.load(Ordering::Relaxed) {
            break false;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => {
                stats.bytes += n as u64;
                counter.feed(&buffer[..n]);
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => {
                counter.add_to(stats);
                return Err(err).context("reading the event stream");
            }
        }
    };
    counter.add_to(stats);
    Ok(ended)
}

/// Counts `event: KIND\n` lines in a byte stream that arrives in pieces
/// (a line may be split between two reads).
#[derive(Default)]
struct KindCounter {
    counts: [u64; KINDS.len()],
    /// The end of the previous piece, too short to hold a whole line.
    carry: Vec<u8>,
}

impl KindCounter {
    fn feed(&mut self, piece: &[u8]) {
        let longest = KINDS.iter().map(|k| k.len()).max().unwrap_or(0) + "event: \n".len();
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(piece);
        for (count, kind) in self.counts.iter_mut().zip(KINDS) {
            let pattern = format!("event: {kind}\n");
            *count += data
                .windows(pattern.len())
                .filter(|w| *w == pattern.as_bytes())
                .count() as u64;
        }
        // Keep what could start a pattern not yet complete (but no whole
        // pattern, which would be counted twice).
        let keep = (longest - 1).min(data.len());
        self.carry = data[data.len() - keep..].to_vec();
        for kind in KINDS {
            let pattern = format!("event: {kind}\n");
            if let Some(at) = find(&self.carry, pattern.as_bytes()) {
                self.carry.drain(..at + pattern.len());
            }
        }
    }

    fn add_to(&self, stats: &mut EventStats) {
        stats.transition += self.counts[0];
        stats.summary += self.counts[1];
        stats.lagged += self.counts[2];
        stats.missed += self.counts[3];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain).unwrap(), (200, b"hello".to_vec()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\nhello\r\na;x=y\r\n, world!!!\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (200, b"hello, world!!!".to_vec())
        );
        let short = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nhello\r\n";
        assert!(parse_response(short).is_err());
        let refused = b"HTTP/1.1 503 Service Unavailable\r\n\r\nbusy";
        assert_eq!(parse_response(refused).unwrap().0, 503);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn counts_events_split_across_reads() {
        let stream = b"a\r\nevent: summary\ndata: {\"event\":\"down\"}\n\n\r\n\
                       event: transition\nid: 1\ndata: {}\n\nevent: transition\nid: 2\n\n\
                       event: lagged\ndata: {\"missed\":9}\n\n";
        for size in [1, 2, 7, 13, stream.len()] {
            let mut counter = KindCounter::default();
            for piece in stream.chunks(size) {
                counter.feed(piece);
            }
            let mut stats = EventStats::default();
            counter.add_to(&mut stats);
            assert_eq!(
                (stats.transition, stats.summary, stats.lagged, stats.missed),
                (2, 1, 1, 0),
                "pieces of {size} bytes"
            );
        }
    }
}
