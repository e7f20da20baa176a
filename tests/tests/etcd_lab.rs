//! The etcd lab of issue 13, first step: a real 3-member etcd cluster
//! (Debian's `etcd-server`, installed by `cargo xtask setup`), one member per
//! monitor namespace over the lab's bridge, driven through the `etcd-client`
//! crate from inside monitor namespace 1 with what the monitor groups will
//! use: a lease kept alive, a key attached to it, a create-if-absent
//! transaction, an election. Then one member is killed (the other two
//! still form a quorum and answer) and a second (no quorum: requests fail
//! within a bounded time). Everything is removed afterwards. Needs root.

use std::{
    thread,
    time::{Duration, Instant},
};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
use hb_tests::{EtcdCluster, netns, unique_prefix};

/// Lease TTL: several keep-alive deadlines, so that a keep-alive stream
/// stuck on a cut-off member is opened again in time; shorter than the
/// test, so the leased key is only there at the end if the keep-alive
/// works.
const LEASE_TTL_S: i64 = 5;
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(500);
/// A keep-alive stream that does not answer within this is opened again.
const KEEP_ALIVE_DEADLINE: Duration = Duration::from_secs(1);
/// Per-request deadline of the client (tonic's timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Hard bound on one request, whatever the client does.
const REQUEST_BOUND: Duration = Duration::from_secs(4);
/// Bound on the cluster answering again after one member died (the client
/// drops the dead endpoint; a new Raft leader if the dead one led: about
/// one election timeout).
const RECOVERY_WITHIN: Duration = Duration::from_secs(10);
/// The whole test, from the first namespace to the last removal.
const TEST_WITHIN: Duration = Duration::from_secs(30);
const ELECTION: &str = "hb-lab/leader";

#[test]
fn three_members_lease_txn_election_and_quorum() {
    let start = Instant::now();
    let prefix = unique_prefix();
    let mut cluster =
        EtcdCluster::start(&prefix, 3).unwrap_or_else(|err| panic!("starting etcd: {err}"));
    let started = start.elapsed();
    let dir = cluster.dir().to_owned();
    let ns = cluster.member(1).ns.path();
    let endpoints = cluster.endpoints();

    // The client runs on its own thread, moved into monitor namespace 1
    // (its sockets are that namespace's), with a current-thread runtime.
    let report = thread::scope(|scope| {
        scope
            .spawn(|| {
                netns::enter(&ns).unwrap_or_else(|err| panic!("{err}"));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(scenario(&mut cluster, &endpoints))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });

    drop(cluster);
    assert_eq!(
        netns::list_with_prefix(&format!("{prefix}-")).unwrap(),
        Vec::<String>::new(),
        "the cluster's namespaces are removed"
    );
    assert!(!dir.exists(), "{} is removed", dir.display());
    let total = start.elapsed();
    println!("etcd lab: cluster healthy after {started:.2?}; {report}; whole test {total:.2?}");
    assert!(total < TEST_WITHIN, "the test took {total:?}");
}

/// What the scenario measured, for the summary line.
struct Report {
    recovered: Duration,
    no_quorum: Duration,
    error: String,
    back: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "writing again {:.2?} after one member was killed; the survivor's write failed \
             {:.2?} after the second ({}); writing again {:.2?} after a restart",
            self.recovered, self.no_quorum, self.error, self.back
        )
    }
}

/// The value of the request `$request` (an expression, evaluated again for
/// every attempt) once it succeeds, retried every 100 ms; panics naming
/// `$what` after [`RECOVERY_WITHIN`]. For requests that may be repeated.
macro_rules! retry {
    ($what:expr, $request:expr) => {{
        let start = Instant::now();
        loop {
            let failure = match tokio::time::timeout(REQUEST_BOUND, $request).await {
                Ok(Ok(value)) => break value,
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {REQUEST_BOUND:?}"),
            };
            assert!(
                start.elapsed() < RECOVERY_WITHIN,
                "{}: nothing within {RECOVERY_WITHIN:?}; last: {failure}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

async fn scenario(cluster: &mut EtcdCluster, endpoints: &[String]) -> Report {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(REQUEST_TIMEOUT);
    let mut client = bounded("connect", Client::connect(endpoints, Some(options.clone()))).await;
    // The member of this namespace alone, as a monitor asks its local
    // member: after a fault, a client of every endpoint still sends some
    // requests to a dead or cut-off member (they fail or hang until the
    // request timeout), so what the surviving quorum does is asked here.
    let local = Client::connect(&endpoints[..1], Some(options.clone()));
    let mut local = bounded("connect to m1", local).await;

    // A lease kept alive by a task of its own, and a key attached to it.
    let lease = bounded("lease grant", client.lease_grant(LEASE_TTL_S, None)).await;
    assert_eq!(lease.ttl(), LEASE_TTL_S);
    let lease_id = lease.id();
    let granted = Instant::now();
    // A keep-alive stream lives on one member's connection: when that
    // member dies or is cut off, it is opened again (on a live one).
    let mut keeper_client = client.clone();
    let keep_alive = tokio::spawn(async move {
        loop {
            if let Err(err) = keep_lease(&mut keeper_client, lease_id).await {
                eprintln!("keep-alive of lease {lease_id}: {err}; opening it again");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let key = "hb-lab/monitors/m1";
    let put = client.put(key, "alive", Some(PutOptions::new().with_lease(lease_id)));
    bounded("put with lease", put).await;
    let got = bounded("get", client.get(key, None)).await;
    let kv = got.kvs().first().expect("the key just put");
    assert_eq!(kv.value(), b"alive");
    assert_eq!(kv.lease(), lease_id);

    // Create-if-absent: succeeds once, then fails.
    let record = || {
        Txn::new()
            .when([Compare::create_revision(
                "hb-lab/incidents/1",
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put("hb-lab/incidents/1", "m1", None)])
    };
    let first = bounded("first txn", client.txn(record())).await;
    assert!(first.succeeded(), "the incident was not recorded yet");
    let second = bounded("second txn", client.txn(record())).await;
    assert!(!second.succeeded(), "the incident is recorded already");

    // An election: the only candidate leads.
    let campaign = bounded("campaign", client.campaign(ELECTION, "m1", lease_id)).await;
    let leader_key = campaign.leader().expect("a leader key");
    assert_eq!(leader_key.lease(), lease_id);
    let leader = bounded("leader", client.leader(ELECTION)).await;
    assert_eq!(leader.kv().map(|kv| kv.value()), Some(&b"m1"[..]));

    // One member cut off (its link down): the other two answer; it has
    // no quorum of its own. Healed, it catches up.
    cluster
        .partition(2)
        .unwrap_or_else(|err| panic!("cutting member 2 off: {err}"));
    retry!(
        "write with m2 cut off",
        local.put("hb-lab/partitioned", "ok", None)
    );
    assert!(
        !cluster.is_healthy(2),
        "a cut-off member answers a quorum read"
    );
    cluster
        .heal(2)
        .unwrap_or_else(|err| panic!("healing member 2: {err}"));
    cluster
        .wait_healthy(RECOVERY_WITHIN)
        .unwrap_or_else(|err| panic!("after healing member 2: {err}"));

    // One member killed: two of three are a quorum and answer.
    cluster
        .kill(3)
        .unwrap_or_else(|err| panic!("killing member 3: {err}"));
    let killed = Instant::now();
    retry!(
        "write with m3 dead",
        local.put("hb-lab/after-one", "ok", None)
    );
    let recovered = killed.elapsed();
    let leader = retry!("leader with m3 dead", local.leader(ELECTION));
    assert_eq!(leader.kv().map(|kv| kv.value()), Some(&b"m1"[..]));
    // Past the TTL, through a cut-off member and a dead one: the key is
    // still there only thanks to the keep-alive.
    let past_ttl = granted + Duration::from_secs(LEASE_TTL_S as u64 + 1);
    tokio::time::sleep_until(past_ttl.into()).await;
    assert!(!keep_alive.is_finished(), "the keep-alive gave up");
    let got = retry!("get with m3 dead", local.get(key, None));
    let kv = got.kvs().first().expect("the lease is still kept alive");
    assert_eq!(kv.lease(), lease_id);

    // A second member killed: no quorum. The survivor (m1, asked alone, so
    // that no dead connection answers for it) fails a write within the
    // client's request timeout, and a quorum read.
    cluster
        .kill(2)
        .unwrap_or_else(|err| panic!("killing member 2: {err}"));
    let killed = Instant::now();
    let put = local.put("hb-lab/after-two", "must not commit", None);
    let attempt = tokio::time::timeout(REQUEST_BOUND, put).await;
    let no_quorum = killed.elapsed();
    let error = match attempt {
        Ok(Ok(response)) => panic!("a write committed with 1 of 3 members: {response:?}"),
        Ok(Err(err)) => err.to_string(),
        Err(_) => format!("no answer within {REQUEST_BOUND:?}"),
    };
    assert!(
        !cluster.is_healthy(1),
        "1 of 3 members answers a quorum read"
    );
    keep_alive.abort();

    // A killed member back on its data directory: a quorum again.
    cluster
        .restart(3)
        .unwrap_or_else(|err| panic!("restarting member 3: {err}"));
    let restarted = Instant::now();
    retry!("write with m3 back", local.put("hb-lab/back", "ok", None));
    let back = restarted.elapsed();
    Report {
        recovered,
        no_quorum,
        error,
        back,
    }
}

/// Keeps lease `id` alive every [`KEEP_ALIVE_EVERY`] until its stream
/// fails, ends or does not answer within [`KEEP_ALIVE_DEADLINE`].
async fn keep_lease(client: &mut Client, id: i64) -> Result<(), String> {
    let (mut keeper, mut responses) =
        tokio::time::timeout(KEEP_ALIVE_DEADLINE, client.lease_keep_alive(id))
            .await
            .map_err(|_| "no stream".to_owned())?
            .map_err(|err| err.to_string())?;
    loop {
        keeper.keep_alive().await.map_err(|err| err.to_string())?;
        let response = tokio::time::timeout(KEEP_ALIVE_DEADLINE, responses.message())
            .await
            .map_err(|_| "no answer".to_owned())?
            .map_err(|err| err.to_string())?
            .ok_or("the stream ended")?;
        assert!(response.ttl() > 0, "lease {id} expired");
        tokio::time::sleep(KEEP_ALIVE_EVERY).await;
    }
}

/// `future`'s value, or a panic naming `what` if it fails or takes longer
/// than [`REQUEST_BOUND`].
async fn bounded<T>(what: &str, future: impl Future<Output = Result<T, etcd_client::Error>>) -> T {
    match tokio::time::timeout(REQUEST_BOUND, future).await {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => panic!("{what}: {err}"),
        Err(_) => panic!("{what}: no answer within {REQUEST_BOUND:?}"),
    }
}
