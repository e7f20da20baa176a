//! `hb send`: the heartbeat sender that runs in the background of a node.
//!
//! Sends one heartbeat per interval to every monitor address, with random
//! jitter on each gap (so a fleet started together does not beat in
//! lockstep). The incarnation is new on every start, so the monitor accepts
//! the restarted sender's sequence from 1 at once. On SIGTERM or SIGINT it
//! sends one graceful-leave heartbeat and exits.
//!
//! With a key file (`--key-file`), every heartbeat, the graceful leave
//! included, carries the key's id and a SipHash tag under the key; without
//! one, heartbeats are unauthenticated (key id 0, no tag).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, bail};
use hb_common::{
    auth,
    wire::{HEARTBEAT_LEN, Heartbeat, flags},
};
use rand::Rng;
use tokio::{
    net::UdpSocket,
    signal::unix::{SignalKind, signal},
    time::Instant,
};

use crate::{clock::unix_ns, keys::KeyFile};

/// What `hb send` was asked to do.
#[derive(Clone, Debug)]
pub struct SendOptions {
    pub node_id: u32,
    pub targets: Vec<SocketAddr>,
    pub interval: Duration,
    /// Each gap is `interval x (1 +- jitter)`, jitter a fraction in [0, 0.5].
    pub jitter: f64,
    /// Fixed incarnation; by default the start time in Unix microseconds.
    pub incarnation: Option<u64>,
    /// Stop after this many heartbeats.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Local address to send from (default: any address of the target's family).
    pub bind: Option<IpAddr>,
    /// Sign every heartbeat with this key; `None`: unauthenticated.
    pub key: Option<KeyFile>,
}

/// One socket per address family in use.
struct Sockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Sockets {
    async fn open(targets: &[SocketAddr], bind: Option<IpAddr>) -> anyhow::Result<Self> {
        let open = |family_any: IpAddr| async move {
            let local = SocketAddr::new(bind.unwrap_or(family_any), 0);
            UdpSocket::bind(local)
                .await
                .with_context(|| format!("binding a UDP socket to {local}"))
        };
        let wants = |v4: bool| targets.iter().any(|t| t.is_ipv4() == v4);
        if let Some(bind) = bind
            && targets.iter().any(|t| t.is_ipv4() != bind.is_ipv4())
        {
            bail!("--bind {bind} is not of the same address family as every --to target");
        }
        Ok(Sockets {
            v4: if wants(true) {
                Some(open(Ipv4Addr::UNSPECIFIED.into()).await?)
            } else {
                None
            },
            v6: if wants(false) {
                Some(open(Ipv6Addr::UNSPECIFIED.into()).await?)
            } else {
                None
            },
        })
    }

    fn for_target(&self, target: &SocketAddr) -> Option<&UdpSocket> {
        if target.is_ipv4() {
            self.v4.as_ref()
        } else {
            self.v6.as_ref()
        }
    }
}

/// Runs the sender until a signal, `count` or `duration`.
pub async fn run(options: SendOptions) -> anyhow::Result<()> {
    if options.targets.is_empty() {
        bail!("no monitor address: pass --to ADDR:PORT at least once");
    }
    if !(0.0..=0.5).contains(&options.jitter) {
        bail!("--jitter must be between 0 and 50 (percent)");
    }
    let interval_ms = u32::try_from(options.interval.as_millis())
        .ok()
        .filter(|&ms| ms >= 1)
        .context("--interval must be between 1 ms and 49 days")?;
    let sockets = Sockets::open(&options.targets, options.bind).await?;
    let incarnation = options.incarnation.unwrap_or_else(|| unix_ns() / 1_000);
    let key = options.key.as_ref();
    let mut heartbeat = Heartbeat {
        flags: 0,
        key_id: key.map_or(auth::UNAUTHENTICATED, |key| key.id),
        node_id: options.node_id,
        interval_ms,
        incarnation,
        sequence: 0,
        sent_unix_ns: 0,
        auth_tag: [0; 16],
    };
    tracing::info!(
        node_id = options.node_id,
        incarnation,
        interval = ?options.interval,
        targets = ?options.targets,
        key_id = heartbeat.key_id,
        key_file = key.map(|key| tracing::field::display(key.path.display())),
        "sending heartbeats"
    );

    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let stop_at = options.duration.map(|d| Instant::now() + d);
    let mut errors = 0u64;
    let mut next = Instant::now();
    loop {
        if options
            .count
            .is_some_and(|count| heartbeat.sequence >= count)
        {
            break;
        }
        heartbeat.sequence += 1;
        heartbeat.sent_unix_ns = unix_ns();
        errors += send(&sockets, &options.targets, &heartbeat, key, errors).await;

        next += jittered(options.interval, options.jitter);
        if stop_at.is_some_and(|stop| next >= stop) {
            if let Some(stop) = stop_at {
                tokio::time::sleep_until(stop).await;
            }
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = terminate.recv() => return leave(&sockets, &options.targets, heartbeat, key).await,
            _ = interrupt.recv() => return leave(&sockets, &options.targets, heartbeat, key).await,
        }
    }
    tracing::info!(sent = heartbeat.sequence, "done");
    Ok(())
}

/// Sends the graceful-leave heartbeat that tells the monitor not to fail over.
async fn leave(
    sockets: &Sockets,
    targets: &[SocketAddr],
    mut heartbeat: Heartbeat,
    key: Option<&KeyFile>,
) -> anyhow::Result<()> {
    heartbeat.sequence += 1;
    heartbeat.flags |= flags::LEAVE;
    heartbeat.sent_unix_ns = unix_ns();
    let failed = send(sockets, targets, &heartbeat, key, 0).await;
    if failed == targets.len() as u64 {
        bail!("could not send the graceful-leave heartbeat to any monitor");
    }
    tracing::info!(
        node_id = heartbeat.node_id,
        sequence = heartbeat.sequence,
        "sent graceful leave"
    );
    Ok(())
}

/// Signs (with `key`, if any) and sends to every target; returns how many
/// sends failed. Errors are logged for the first few failures and then every
/// 100th, so a long outage does not flood the log.
async fn send(
    sockets: &Sockets,
    targets: &[SocketAddr],
    heartbeat: &Heartbeat,
    key: Option<&KeyFile>,
    errors_so_far: u64,
) -> u64 {
    let bytes = encode(heartbeat, key);
    let mut failed = 0;
    for target in targets {
        let Some(socket) = sockets.for_target(target) else {
            continue;
        };
        if let Err(error) = socket.send_to(&bytes, target).await {
            failed += 1;
            let n = errors_so_far + failed;
            if n <= 5 || n.is_multiple_of(100) {
                tracing::warn!(%target, %error, failures = n, "heartbeat not sent");
            }
        }
    }
    failed
}

/// The heartbeat's payload: signed with `key`, or unauthenticated.
fn encode(heartbeat: &Heartbeat, key: Option<&KeyFile>) -> [u8; HEARTBEAT_LEN] {
    let mut bytes = heartbeat.encode();
    match key {
        Some(key) => auth::sign(&mut bytes, key.id, &key.key),
        None => auth::sign(&mut bytes, auth::UNAUTHENTICATED, &[0; 16]),
    }
    bytes
}

fn jittered(interval: Duration, jitter: f64) -> Duration {
    if jitter == 0.0 {
        return interval;
    }
    let factor = rand::rng().random_range(1.0 - jitter..=1.0 + jitter);
    interval.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let interval = Duration::from_millis(1000);
        let samples: Vec<_> = (0..1000).map(|_| jittered(interval, 0.1)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_millis(900) && *d <= Duration::from_millis(1100))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter must actually vary the gaps");
        assert_eq!(jittered(interval, 0.0), interval);
    }

    #[tokio::test]
    async fn sends_numbered_heartbeats_then_stops_at_count() {
        let monitor = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let options = SendOptions {
            node_id: 7,
            targets: vec![monitor.local_addr().unwrap()],
            interval: Duration::from_millis(10),
            jitter: 0.1,
            incarnation: Some(99),
            count: Some(3),
            duration: None,
            bind: None,
            key: None,
        };
        run(options).await.unwrap();
        let mut buf = [0u8; 128];
        for expected in 1..=3 {
            let n = monitor.recv(&mut buf).await.unwrap();
            let hb = Heartbeat::decode(&buf[..n]).unwrap();
            assert_eq!(
                (hb.node_id, hb.incarnation, hb.sequence, hb.interval_ms),
                (7, 99, expected, 10)
            );
            assert!(!hb.is_leave());
        }
    }

    fn test_key() -> KeyFile {
        KeyFile {
            path: "/etc/hb/test.key".into(),
            id: 3,
            key: [0x5a; 16],
        }
    }

    fn tag_check(payload: &[u8], key: &KeyFile) -> auth::TagCheck {
        let payload: &[u8; HEARTBEAT_LEN] = payload.try_into().unwrap();
        auth::check(payload, |id| (id == key.id).then_some(&key.key))
    }

    #[tokio::test]
    async fn signs_every_heartbeat_with_the_key() {
        let monitor = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let key = test_key();
        let options = SendOptions {
            node_id: 7,
            targets: vec![monitor.local_addr().unwrap()],
            interval: Duration::from_millis(10),
            jitter: 0.0,
            incarnation: Some(99),
            count: Some(3),
            duration: None,
            bind: None,
            key: Some(key.clone()),
        };
        run(options).await.unwrap();
        let mut buf = [0u8; 128];
        for expected in 1..=3 {
            let n = monitor.recv(&mut buf).await.unwrap();
            let hb = Heartbeat::decode(&buf[..n]).unwrap();
            assert_eq!((hb.sequence, hb.key_id), (expected, 3));
            assert_eq!(tag_check(&buf[..n], &key), auth::TagCheck::Authenticated);
        }
    }

    #[test]
    fn the_leave_is_signed_too_and_no_key_means_no_tag() {
        let key = test_key();
        let heartbeat = Heartbeat {
            flags: flags::LEAVE,
            key_id: 0,
            node_id: 1,
            interval_ms: 1000,
            incarnation: 2,
            sequence: 3,
            sent_unix_ns: 4,
            auth_tag: [0; 16],
        };
        let signed = encode(&heartbeat, Some(&key));
        assert!(Heartbeat::decode(&signed).unwrap().is_leave());
        assert_eq!(tag_check(&signed, &key), auth::TagCheck::Authenticated);
        let plain = encode(&heartbeat, None);
        assert_eq!(plain, heartbeat.encode());
        assert_eq!(tag_check(&plain, &key), auth::TagCheck::Unauthenticated);
    }
}
