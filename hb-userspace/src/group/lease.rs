//! The monitor's lease: granted, then renewed every third of its TTL by a
//! task of its own (so no other etcd request ever delays a renewal). Each
//! renewal moves the **deadline**: the instant the renewal request was
//! sent plus the TTL etcd answered with. etcd started counting no earlier
//! than it received the request, so the lease cannot have expired at etcd
//! before the deadline, whatever happens after; a monitor that has not
//! renewed by then must assume its lease, its opinions and its leadership
//! are gone.

use std::time::{Duration, Instant};

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;

use super::endpoints::Endpoints;

/// The lease as the keeper last renewed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Held; it cannot have expired at etcd before `deadline`.
    Held { id: i64, deadline: Instant },
    /// etcd says the lease is gone (it expired while we were cut off).
    Gone,
}

/// A lease etcd just granted.
#[derive(Clone, Copy, Debug)]
pub struct Granted {
    pub id: i64,
    /// The TTL etcd granted (it may raise a short one).
    pub ttl: Duration,
    pub deadline: Instant,
}

/// Grants a lease of `ttl` (whole seconds, at least 1).
pub async fn grant(
    client: &mut Client,
    ttl: Duration,
    timeout: Duration,
) -> Result<Granted, String> {
    let sent = Instant::now();
    let seconds = ttl.as_secs().max(1) as i64;
    let granted = tokio::time::timeout(timeout, client.lease_grant(seconds, None))
        .await
        .map_err(|_| format!("granting a lease: no answer within {timeout:?}"))?
        .map_err(|e| format!("granting a lease: {e}"))?;
    let ttl = Duration::from_secs(granted.ttl().max(1) as u64);
    Ok(Granted {
        id: granted.id(),
        ttl,
        deadline: sent + ttl,
    })
}

/// Renews lease `id` (granted for `granted`) until it is gone or
/// `state`'s receivers are all dropped. Renews every third of the TTL; a
/// renewal that fails or takes more than `timeout` is retried at once with
/// the next etcd member, then every 200 ms.
pub async fn keep(
    mut endpoints: Endpoints,
    id: i64,
    granted: Duration,
    timeout: Duration,
    state: watch::Sender<LeaseState>,
) {
    let period = granted / 3;
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut failures = 0u32;
    loop {
        let sent = Instant::now();
        let renewal = async {
            let client = endpoints.client().await.map_err(LeaseError::Connect)?;
            renew(client, id, granted, &mut stream)
                .await
                .map_err(LeaseError::Etcd)
        };
        match tokio::time::timeout(timeout, renewal).await {
            Ok(Ok(Some(ttl))) => {
                failures = 0;
                let deadline = sent + ttl;
                if state.send(LeaseState::Held { id, deadline }).is_err() {
                    return;
                }
                tokio::time::sleep(period).await;
            }
            Ok(Ok(None)) => {
                let _ = state.send(LeaseState::Gone);
                return;
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {timeout:?}"),
                };
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(
                        lease = format!("{id:x}"),
                        member = endpoints.url(),
                        failures,
                        "renewing the group lease: {why}; trying the next etcd member"
                    );
                }
                stream = None;
                endpoints.failed();
                if state.is_closed() {
                    return;
                }
                let pause = if failures == 1 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(200)
                };
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
enum LeaseError {
    #[error("{0}")]
    Connect(String),
    #[error(transparent)]
    Etcd(etcd_client::Error),
}

/// One renewal: the TTL etcd answers with, or `None` if the lease is gone.
async fn renew(
    client: &mut Client,
    id: i64,
    granted: Duration,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<Option<Duration>, etcd_client::Error> {
    let Some((keeper, responses)) = stream else {
        // Opening the stream sends one renewal and reads its answer.
        return match client.lease_client().keep_alive(id).await {
            Ok(opened) => {
                // A renewal restores the TTL the lease was granted with.
                *stream = Some(opened);
                Ok(Some(granted))
            }
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(e),
        };
    };
    keeper.keep_alive().await?;
    match responses.message().await? {
        Some(answer) if answer.ttl() > 0 => Ok(Some(Duration::from_secs(answer.ttl() as u64))),
        Some(_) => Ok(None),
        None => Err(etcd_client::Error::LeaseKeepAliveError(
            "the keep-alive stream ended".to_owned(),
        )),
    }
}

/// Whether etcd said the lease does not exist (any more).
fn is_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        etcd_client::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        _ => false,
    }
}
