//! A loopback HTTP receiver for the webhook tests: a tokio listener
//! speaking just enough HTTP/1.1, answering from a script and recording
//! every request with the time it came and was answered; and a capture of
//! the log.

use std::{
    collections::HashMap,
    future::Future,
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug)]
pub(super) enum Answer {
    Status(u16),
    /// The status, after a pause.
    Slow(u16, Duration),
    /// Reads the request and never answers.
    Never,
}

/// One request as received.
#[derive(Clone, Debug)]
pub(super) struct Received {
    pub(super) request_line: String,
    /// Names lowercased.
    pub(super) headers: HashMap<String, String>,
    pub(super) body: Vec<u8>,
    pub(super) answered_at: Option<Instant>,
    pub(super) received_at: Instant,
}

impl Received {
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: body {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// An HTTP receiver on 127.0.0.1: request `n` gets `answers[n]`, the last
/// answer repeating.
pub(super) struct Receiver {
    pub(super) url: String,
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub(super) async fn start(answers: &[Answer]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hb", listener.local_addr().expect("address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answers = answers.to_vec();
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, answers) = (Arc::clone(&seen), answers.clone());
                tokio::spawn(async move { serve(stream, &seen, &answers).await });
            }
        });
        Self { url, requests }
    }

    pub(super) fn requests(&self) -> Vec<Received> {
        self.requests.lock().expect("requests").clone()
    }
}

/// Reads one request, records it, answers as scripted, closes.
async fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Received>>, answers: &[Answer]) {
    let Some(mut received) = read_request(&mut stream).await else {
        return;
    };
    let index = {
        let mut seen = seen.lock().expect("requests");
        seen.push(received.clone());
        seen.len() - 1
    };
    let answer = answers[index.min(answers.len() - 1)];
    let status = match answer {
        Answer::Status(status) => status,
        Answer::Slow(status, pause) => {
            tokio::time::sleep(pause).await;
            status
        }
        Answer::Never => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
    };
    let response =
        format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    received.answered_at = Some(Instant::now());
    seen.lock().expect("requests")[index] = received;
}

/// The request line, headers and `content-length` bytes of body.
async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    };
    let received_at = Instant::now();
    let head = String::from_utf8(bytes[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map_or(0, |l| l.parse().expect("content-length"));
    let mut body = bytes[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        request_line,
        headers,
        body,
        answered_at: None,
        received_at,
    })
}

/// Everything logged at any level while `f` runs on this thread. The log
/// statements `f` reaches must have been reached once before, without
/// the capture: tracing caches whether a statement is wanted when it is
/// first reached, and a first reach on another test's thread racing with
/// the capture's start could cache "not wanted" for the capture too.
pub(super) async fn logged<F: Future<Output = ()>>(f: F) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    f.await;
    let bytes = buffer.0.lock().expect("log buffer").clone();
    String::from_utf8(bytes).expect("UTF-8 log")
}
