//! The group session's task: the only code that talks to etcd (besides the
//! lease keeper). One loop does, whenever something changed and as far as
//! etcd answers:
//!
//! 1. hold a lease ([`lease`]), granted again if etcd lost it;
//! 2. mirror the group's keys into the [`Ballot`]: one read of the prefix,
//!    then a watch from the revision after it (read again after any gap);
//! 3. publish the difference between the opinions this monitor holds and
//!    those it published, in transactions of at most [`MAX_TXN_OPS`]
//!    operations (etcd's default `--max-txn-ops`), then its membership
//!    (voting once `join_after` has passed);
//! 4. campaign (etcd's election API) once it votes;
//! 5. as leader, record each incident the ballot finds due, fenced on its
//!    election key and on the incident key's revision, then hand the
//!    recorded ones to the agent to act on.
//!
//! Every etcd request is bounded by `group.request_timeout`; the loop
//! never waits on etcd for longer, so a stop or a lost lease is seen in
//! time. Past the lease's deadline (less a quarter of its TTL), the monitor
//! is out: no quorum, not leading, nothing recorded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    LeaderKey, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions, WatchResponse, WatchStream,
};
use futures_util::FutureExt as _;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    Decision, GroupMetrics, GroupStatus, MemberStatus, Opinion, Role,
    ballot::{Ballot, Disputed, Due, Entry, MemberValue},
    endpoints::Endpoints,
    keys::{Incident, Layout},
    lease::{self, LeaseState},
};
use crate::{clock, config::GroupConfig};

/// etcd's default `--max-txn-ops`: no transaction of ours has more
/// operations (or comparisons) than this.
pub const MAX_TXN_OPS: usize = 128;
/// HTTP/2 pings on idle etcd connections: etcd's servers drop clients
/// that ping more often than `--grpc-keepalive-min-time` (5 s by default)
/// with "too many pings", which cancels the campaign and the watch.
const HTTP2_PING_EVERY: Duration = Duration::from_secs(10);
/// After a failed request, the loop tries again this much later.
const RETRY: Duration = Duration::from_millis(250);

/// What the worker reads and writes besides etcd.
pub struct Channels {
    pub opinions: mpsc::UnboundedReceiver<Vec<(u32, Opinion)>>,
    pub decide: mpsc::UnboundedSender<Vec<Decision>>,
    pub stop: watch::Receiver<bool>,
}

/// Where the worker shows what it knows.
pub struct Shown {
    pub status: Arc<Mutex<GroupStatus>>,
    pub disputed: Arc<Mutex<Vec<Disputed>>>,
    pub metrics: GroupMetrics,
}

/// The lease this monitor holds and the task renewing it.
struct Held {
    id: i64,
    state: watch::Receiver<LeaseState>,
    keeper: JoinHandle<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

type Campaign = JoinHandle<Result<Option<LeaderKey>, etcd_client::Error>>;

pub struct Worker {
    config: GroupConfig,
    layout: Layout,
    channels: Channels,
    shown: Shown,
    /// The etcd member in use, the next after a failure.
    endpoints: Endpoints,
    held: Option<Held>,
    /// This monitor's opinions other than up, as the agent last told.
    desired: HashMap<u32, Opinion>,
    /// Those written under the current lease.
    published: HashMap<u32, Opinion>,
    /// The membership written under the current lease: whether voting.
    member_published: Option<bool>,
    /// From when this monitor votes.
    votes_from: Instant,
    ballot: Ballot,
    watch: Option<WatchStream>,
    /// When the watch last delivered anything (events or progress).
    watch_heard: Instant,
    /// A progress request sent on a quiet watch, not answered yet.
    progress_asked: Option<Instant>,
    campaign: Option<Campaign>,
    leading: Option<LeaderKey>,
    /// No request before this (after a failure).
    quiet_until: Option<Instant>,
    /// The lease's deadline was passed (counted once per loss).
    lost: bool,
    last_error: Option<String>,
    incidents_recorded: u64,
}

impl Worker {
    pub fn new(
        config: GroupConfig,
        join_after: Duration,
        initial: Vec<(u32, Opinion)>,
        channels: Channels,
        shown: Shown,
    ) -> anyhow::Result<Self> {
        let options = connect_options(&config)?;
        // Monitors spread over the members by name.
        let first = config
            .monitor
            .bytes()
            .fold(0usize, |sum, b| sum.wrapping_add(usize::from(b)));
        let endpoints = Endpoints::new(
            config.endpoints.clone(),
            options,
            config.request_timeout,
            first,
        );
        Ok(Worker {
            layout: Layout::new(&config.name),
            votes_from: Instant::now() + join_after,
            desired: initial
                .into_iter()
                .filter(|(_, o)| *o != Opinion::Up)
                .collect(),
            config,
            channels,
            shown,
            endpoints,
            held: None,
            published: HashMap::new(),
            member_published: None,
            ballot: Ballot::default(),
            watch: None,
            watch_heard: Instant::now(),
            progress_asked: None,
            campaign: None,
            leading: None,
            quiet_until: None,
            lost: false,
            last_error: None,
            incidents_recorded: 0,
        })
    }

    /// Runs until told to stop, then leaves the group.
    pub async fn run(mut self) {
        tracing::info!(
            group = self.config.name,
            monitor = self.config.monitor,
            endpoints = ?self.config.endpoints,
            "joining the monitor group"
        );
        loop {
            if *self.channels.stop.borrow() {
                break;
            }
            if let Err(e) = self.step().await {
                self.failed(e);
            }
            self.show();
            let wake = self.next_wake();
            tokio::select! {
                _ = self.channels.stop.changed() => {}
                changes = self.channels.opinions.recv() => match changes {
                    Some(changes) => {
                        self.take(changes);
                        while let Ok(more) = self.channels.opinions.try_recv() {
                            self.take(more);
                        }
                    }
                    None => break,
                },
                message = next_message(&mut self.watch) => {
                    self.watched(message);
                    // Everything the watch already holds, before writing:
                    // a leader acts on the latest opinions, in one record.
                    while let Some(more) = self.watch.as_mut().and_then(|w| w.message().now_or_never()) {
                        self.watched(more);
                    }
                }
                () = lease_news(&mut self.held) => {}
                done = campaign_done(&mut self.campaign) => {
                    self.campaign = None;
                    self.campaigned(done);
                }
                () = sleep_until(wake) => {}
            }
        }
        self.leave().await;
    }

    /// What the agent told: opinions changed.
    fn take(&mut self, changes: Vec<(u32, Opinion)>) {
        for (node, opinion) in changes {
            if opinion == Opinion::Up {
                self.desired.remove(&node);
            } else {
                self.desired.insert(node, opinion);
            }
        }
    }

    /// The session as far as etcd lets it go now.
    async fn step(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        if self.quiet_until.is_some_and(|at| at > now) {
            return Ok(());
        }
        self.quiet_until = None;
        self.endpoints.client().await.map_err(anyhow::Error::msg)?;
        if !self.hold_lease().await? {
            return Ok(());
        }
        if self.watch.is_none() {
            self.sync().await?;
        }
        self.check_watch().await?;
        // Opinions first: a monitor's vote never counts before its
        // opinions are there (a restarted one would briefly vote up).
        self.publish_opinions().await?;
        let voting = Instant::now() >= self.votes_from;
        if self.member_published != Some(voting) {
            self.publish_membership(voting).await?;
        }
        if voting && self.leading.is_none() && self.campaign.is_none() {
            self.start_campaign();
        }
        // Only once the mirror has seen the revision the key was made at.
        let key_gone = self.leading.as_ref().is_some_and(|leading| {
            self.ballot.revision >= leading.rev()
                && !self
                    .ballot
                    .has_candidate(&String::from_utf8_lossy(leading.key()))
        });
        if key_gone {
            tracing::warn!("no longer the group's leader: its election key is gone");
            self.leading = None;
        }
        if self.leading.is_some() {
            self.record_incidents().await?;
        }
        self.last_error = None;
        Ok(())
    }

    /// Holds a lease within its deadline: `true` if the session is on.
    async fn hold_lease(&mut self) -> anyhow::Result<bool> {
        let state = self.held.as_ref().map(|held| *held.state.borrow());
        match state {
            None => {
                let timeout = self.config.request_timeout;
                let ttl = self.config.lease_ttl;
                let granted = lease::grant(self.client(), ttl, timeout)
                    .await
                    .map_err(anyhow::Error::msg)?;
                let id = granted.id;
                let (tell, state) = watch::channel(LeaseState::Held {
                    id,
                    deadline: granted.deadline,
                });
                let keeper = tokio::spawn(lease::keep(
                    self.endpoints.fork(),
                    id,
                    granted.ttl,
                    self.config.request_timeout,
                    tell,
                ));
                tracing::info!(lease = format!("{id:x}"), "the monitor holds a group lease");
                self.held = Some(Held { id, state, keeper });
                // A new lease holds none of the keys the last one did.
                self.published.clear();
                self.member_published = None;
                self.lost = false;
                Ok(true)
            }
            Some(LeaseState::Gone) => {
                tracing::warn!(
                    "etcd says the group lease expired: this monitor's opinions are gone; it \
                     takes a new lease and publishes them again"
                );
                self.held = None;
                self.out_of_session();
                Ok(false)
            }
            Some(LeaseState::Held { deadline, .. }) => {
                if Instant::now() + self.margin() >= deadline {
                    if !self.lost {
                        self.lost = true;
                        self.shown.metrics.lease_losses.inc();
                        tracing::warn!(
                            "no quorum: the group lease could not be renewed in time; this \
                             monitor steps down and runs no group action until it renews it"
                        );
                    }
                    self.out_of_session();
                    return Ok(false);
                }
                if self.lost {
                    self.lost = false;
                    tracing::info!("the group lease is renewed again: back in the group");
                }
                Ok(true)
            }
        }
    }

    /// How long before the lease's deadline the monitor counts itself out.
    fn margin(&self) -> Duration {
        self.config.lease_ttl / 4
    }

    /// Out of the session: not leading, not campaigning, the mirror to be
    /// read again when back.
    fn out_of_session(&mut self) {
        if self.leading.take().is_some() {
            tracing::warn!("stepped down as the group's leader");
        }
        if let Some(campaign) = self.campaign.take() {
            campaign.abort();
        }
        self.watch = None;
    }

    fn client(&mut self) -> &mut Client {
        self.endpoints
            .connected()
            .expect("connected at the start of the step")
    }

    fn lease_id(&self) -> i64 {
        self.held.as_ref().map_or(0, |held| held.id)
    }

    /// Reads the whole prefix, then watches from the revision after it.
    async fn sync(&mut self) -> anyhow::Result<()> {
        let prefix = self.layout.prefix().to_owned();
        let timeout = self.config.request_timeout;
        let client = self.client();
        let read = bounded(
            timeout,
            "reading the group's keys",
            client.get(prefix.as_bytes(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = read.header().map_or(0, |h| h.revision());
        let mut ballot = Ballot::default();
        ballot.reset(revision);
        for kv in read.kvs() {
            let entry = Entry {
                key: kv.key_str().unwrap_or_default(),
                value: kv.value(),
                lease: kv.lease(),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
            };
            ballot.put(&self.layout, &entry);
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let client = self.client();
        let stream = bounded(
            timeout,
            "watching the group's keys",
            client.watch(prefix.as_bytes(), Some(options)),
        )
        .await?;
        self.ballot = ballot;
        self.watch = Some(stream);
        self.watch_heard = Instant::now();
        self.progress_asked = None;
        Ok(())
    }

    /// A watch says nothing while nothing changes, and nothing either when
    /// its member is cut off: after a third of the lease's TTL of silence
    /// it is asked for its progress, and one that does not answer within
    /// the request timeout is given up (the next member is tried).
    async fn check_watch(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let (quiet, timeout) = (self.config.lease_ttl / 3, self.config.request_timeout);
        let Some(watch) = self.watch.as_mut() else {
            return Ok(());
        };
        match self.progress_asked {
            Some(asked) if now >= asked + timeout => Err(anyhow::anyhow!(
                "the watch of the group's keys did not answer a progress request within \
                 {timeout:?} (member {})",
                self.endpoints.url()
            )),
            None if now >= self.watch_heard + quiet => {
                bounded(
                    timeout,
                    "asking the watch for progress",
                    watch.request_progress(),
                )
                .await?;
                self.progress_asked = Some(now);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A watch message: events applied, or the watch dropped (read again).
    fn watched(&mut self, message: Result<Option<WatchResponse>, etcd_client::Error>) {
        self.watch_heard = Instant::now();
        self.progress_asked = None;
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                self.watch = None;
                return;
            }
            Err(e) => {
                self.watch = None;
                self.failed(anyhow::Error::new(e).context("watching the group's keys"));
                return;
            }
        };
        if response.canceled() || response.compact_revision() > 0 {
            tracing::debug!(reason = response.cancel_reason(), "the group watch ended");
            self.watch = None;
            return;
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let key = kv.key_str().unwrap_or_default();
            match event.event_type() {
                EventType::Put => {
                    let entry = Entry {
                        key,
                        value: kv.value(),
                        lease: kv.lease(),
                        create_revision: kv.create_revision(),
                        mod_revision: kv.mod_revision(),
                    };
                    if !self.ballot.put(&self.layout, &entry) {
                        tracing::debug!(key, "ignoring a key of the group's prefix");
                    }
                }
                EventType::Delete => self.ballot.delete(&self.layout, key),
            }
        }
        if let Some(header) = response.header() {
            self.ballot.revision = self.ballot.revision.max(header.revision());
        }
    }

    async fn publish_membership(&mut self, voting: bool) -> anyhow::Result<()> {
        let key = self.layout.member(&self.config.monitor);
        let value = serde_json::to_vec(&MemberValue { voting })?;
        let lease = self.lease_id();
        let timeout = self.config.request_timeout;
        let client = self.client();
        bounded(
            timeout,
            "publishing the membership",
            client.put(key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await?;
        self.count_write(1);
        if voting {
            tracing::info!("this monitor now votes in its group");
        }
        self.member_published = Some(voting);
        Ok(())
    }

    /// Writes the opinions that differ from those published, in
    /// transactions of at most [`MAX_TXN_OPS`] operations.
    async fn publish_opinions(&mut self) -> anyhow::Result<()> {
        let mut changes: Vec<(u32, Opinion)> = self
            .desired
            .iter()
            .filter(|(node, opinion)| self.published.get(node) != Some(opinion))
            .map(|(&node, &opinion)| (node, opinion))
            .collect();
        changes.extend(
            self.published
                .keys()
                .filter(|node| !self.desired.contains_key(node))
                .map(|&node| (node, Opinion::Up)),
        );
        changes.sort_unstable_by_key(|&(node, _)| node);
        let lease = self.lease_id();
        let monitor = self.config.monitor.clone();
        let timeout = self.config.request_timeout;
        for chunk in changes.chunks(MAX_TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|&(node, opinion)| {
                    let key = self.layout.opinion(node, &monitor);
                    match opinion {
                        Opinion::Up => TxnOp::delete(key, None),
                        held => TxnOp::put(
                            key,
                            held.as_str(),
                            Some(PutOptions::new().with_lease(lease)),
                        ),
                    }
                })
                .collect();
            let client = self.client();
            bounded(
                timeout,
                "publishing opinions",
                client.txn(Txn::new().and_then(ops)),
            )
            .await?;
            self.count_write(chunk.len());
            for &(node, opinion) in chunk {
                if opinion == Opinion::Up {
                    self.published.remove(&node);
                } else {
                    self.published.insert(node, opinion);
                }
            }
        }
        Ok(())
    }

    fn start_campaign(&mut self) {
        let mut election = self.client().election_client();
        let (name, monitor, lease) = (
            self.layout.election(),
            self.config.monitor.clone(),
            self.lease_id(),
        );
        // The candidate's key is etcd's one write of the campaign.
        self.count_write(1);
        self.campaign = Some(tokio::spawn(async move {
            let mut won = election.campaign(name, monitor, lease).await?;
            Ok(won.take_leader())
        }));
    }

    fn campaigned(&mut self, done: Result<Result<Option<LeaderKey>, etcd_client::Error>, String>) {
        match done {
            Ok(Ok(Some(key))) if key.lease() == self.lease_id() => {
                tracing::info!("this monitor leads its group: it runs the group's actions");
                self.leading = Some(key);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.failed(anyhow::Error::new(e).context("campaigning")),
            Err(e) => self.failed(anyhow::anyhow!("the campaign task: {e}")),
        }
    }

    /// Records the due incidents, fenced on the election key and on each
    /// incident key's revision, and hands the recorded ones to the agent.
    async fn record_incidents(&mut self) -> anyhow::Result<()> {
        let due = self.ballot.due();
        if due.is_empty() {
            return Ok(());
        }
        let Some(leading) = self.leading.clone() else {
            return Ok(());
        };
        let timeout = self.config.request_timeout;
        // One comparison is the election key's.
        for chunk in due.chunks(MAX_TXN_OPS - 1) {
            let unix_ms = clock::unix_ns() / 1_000_000;
            let mut compares = vec![Compare::create_revision(
                leading.key(),
                CompareOp::Equal,
                leading.rev(),
            )];
            let mut puts = Vec::with_capacity(chunk.len());
            let mut values = Vec::with_capacity(chunk.len());
            for due in chunk {
                let key = self.layout.incident(due.node);
                compares.push(Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    due.mod_revision,
                ));
                let value = serde_json::to_vec(&Incident {
                    state: due.verdict,
                    generation: due.generation,
                    leader: self.config.monitor.clone(),
                    unix_ms,
                })?;
                puts.push(TxnOp::put(key.clone(), value.clone(), None));
                values.push((key, value));
            }
            let txn = Txn::new()
                .when(compares)
                .and_then(puts)
                .or_else(vec![TxnOp::get(leading.key(), None)]);
            let client = self.client();
            let answer = bounded(timeout, "recording incidents", client.txn(txn)).await?;
            self.count_write(chunk.len());
            if !answer.succeeded() {
                return self.not_recorded(&leading, &answer);
            }
            let revision = answer.header().map_or(0, |h| h.revision());
            for (key, value) in &values {
                let entry = Entry {
                    key,
                    value,
                    lease: 0,
                    create_revision: revision,
                    mod_revision: revision,
                };
                self.ballot.put(&self.layout, &entry);
            }
            self.decided(chunk);
        }
        Ok(())
    }

    /// A fenced record failed: either leadership is gone, or the mirror was
    /// behind (read it again; nothing is acted on).
    fn not_recorded(
        &mut self,
        leading: &LeaderKey,
        answer: &etcd_client::TxnResponse,
    ) -> anyhow::Result<()> {
        let still_ours = answer.op_responses().iter().any(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .iter()
                .any(|kv| kv.create_revision() == leading.rev()),
            _ => false,
        });
        if still_ours {
            tracing::info!("an incident was recorded meanwhile: reading the group again");
            self.watch = None;
        } else {
            tracing::warn!("no longer the group's leader (its election key is gone)");
            self.leading = None;
        }
        Ok(())
    }

    /// Hands recorded incidents to the agent, which runs their actions.
    fn decided(&mut self, recorded: &[Due]) {
        self.incidents_recorded += recorded.len() as u64;
        self.shown.metrics.incidents.inc_by(recorded.len() as u64);
        for due in recorded {
            tracing::info!(
                node_id = due.node,
                verdict = due.verdict.as_str(),
                previous = due.previous.as_str(),
                incident = due.generation,
                "group verdict recorded: running its actions"
            );
        }
        let decisions = recorded
            .iter()
            .map(|due| Decision {
                node_id: due.node,
                verdict: due.verdict,
                previous: due.previous,
                generation: due.generation,
            })
            .collect();
        let _ = self.channels.decide.send(decisions);
    }

    fn count_write(&self, ops: usize) {
        self.shown.metrics.writes.inc();
        self.shown.metrics.write_ops.inc_by(ops as u64);
    }

    fn failed(&mut self, e: anyhow::Error) {
        let message = format!("{e:#}");
        if self.last_error.as_deref() != Some(&message) {
            tracing::warn!("monitor group: {message}");
        }
        if message.contains("lease not found") {
            self.held = None;
            self.out_of_session();
        }
        // The member may be cut off or gone: the next request goes to the
        // next one, with a new watch (and a new campaign: this one waits on
        // the old connection).
        self.endpoints.failed();
        if let Some(campaign) = self.campaign.take() {
            campaign.abort();
        }
        self.watch = None;
        self.last_error = Some(message);
        self.quiet_until = Some(Instant::now() + RETRY);
    }

    /// When the loop must look again with no news: a retry, the vote, or
    /// the lease's deadline.
    fn next_wake(&self) -> Option<Instant> {
        let mut wake = self.quiet_until;
        let mut at = |instant: Instant| {
            wake = Some(wake.map_or(instant, |w| w.min(instant)));
        };
        if self.member_published != Some(true) && self.held.is_some() {
            at(self.votes_from);
        }
        if let Some(held) = &self.held
            && let LeaseState::Held { deadline, .. } = *held.state.borrow()
            && !self.lost
        {
            at(deadline.checked_sub(self.margin()).unwrap_or(deadline));
        }
        if self.watch.is_some() {
            at(match self.progress_asked {
                Some(asked) => asked + self.config.request_timeout,
                None => self.watch_heard + self.config.lease_ttl / 3,
            });
        }
        if self.held.is_none() && self.quiet_until.is_none() {
            at(Instant::now() + RETRY);
        }
        wake
    }

    /// Updates the status and the metrics.
    fn show(&self) {
        let in_session = self.held.is_some() && !self.lost;
        let voting = self.member_published == Some(true);
        let role = match (in_session, self.leading.is_some(), voting) {
            (false, ..) => Role::NoQuorum,
            (true, true, _) => Role::Leader,
            (true, false, true) => Role::Follower,
            (true, false, false) => Role::Joining,
        };
        let members: Vec<MemberStatus> = self
            .ballot
            .members()
            .iter()
            .map(|(monitor, member)| MemberStatus {
                monitor: monitor.clone(),
                lease: format!("{:x}", member.lease),
                voting: member.voting,
            })
            .collect();
        let disputed = self.ballot.disputed(usize::MAX);
        let metrics = &self.shown.metrics;
        metrics.quorum.set(i64::from(in_session));
        metrics.leader.set(i64::from(role == Role::Leader));
        metrics.members.set(members.len() as i64);
        metrics
            .voters
            .set(members.iter().filter(|m| m.voting).count() as i64);
        metrics.disputed.set(disputed.len() as i64);
        metrics.holding_down.set(self.desired.len() as i64);
        {
            let mut status = self
                .shown
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            status.quorum = in_session;
            status.role = role;
            status.leader = in_session
                .then(|| self.ballot.leader().map(str::to_owned))
                .flatten();
            status.lease = self.held.as_ref().map(|held| format!("{:x}", held.id));
            status.members = members;
            status.holding_down = self.desired.len() as u64;
            status.incidents_recorded = self.incidents_recorded;
            status.last_error.clone_from(&self.last_error);
        }
        *self
            .shown
            .disputed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = disputed;
    }

    /// Leaves the group: revoking the lease deletes this monitor's keys
    /// (membership, opinions, election key) at once.
    async fn leave(mut self) {
        if let Some(campaign) = self.campaign.take() {
            campaign.abort();
        }
        let Some(held) = self.held.take() else {
            return;
        };
        let timeout = self.config.request_timeout;
        let revoked = match self.endpoints.client().await {
            Ok(client) => {
                bounded(timeout, "revoking the lease", client.lease_revoke(held.id)).await
            }
            Err(e) => Err(anyhow::Error::msg(e)),
        };
        match revoked {
            Ok(_) => tracing::info!("left the monitor group (lease revoked)"),
            Err(e) => tracing::warn!("leaving the monitor group: {e:#}; its lease will expire"),
        }
        self.leading = None;
        self.shown.metrics.quorum.set(0);
        self.shown.metrics.leader.set(0);
    }
}

/// How the client reaches etcd: connections bounded and pinged (each
/// request is bounded by [`bounded`], but for the campaign, which waits for
/// leadership by design), requests refused by a member without a leader (so a monitor cut off with a minority member does not
/// read stale keys), TLS if configured.
fn connect_options(config: &GroupConfig) -> anyhow::Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.request_timeout)
        .with_keep_alive(HTTP2_PING_EVERY, config.request_timeout)
        .with_require_leader(true);
    if config.uses_tls() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("group.ca_file: reading {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
            let cert_pem = std::fs::read(cert)
                .with_context(|| format!("group.cert_file: reading {}", cert.display()))?;
            let key_pem = std::fs::read(key)
                .with_context(|| format!("group.key_file: reading {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

/// `request`, or an error naming `what` if it fails or takes longer than
/// `timeout`.
async fn bounded<T>(
    timeout: Duration,
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(what.to_owned())),
        Err(_) => Err(anyhow::anyhow!("{what}: no answer within {timeout:?}")),
    }
}

async fn next_message(
    watch: &mut Option<WatchStream>,
) -> Result<Option<WatchResponse>, etcd_client::Error> {
    match watch {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

async fn lease_news(held: &mut Option<Held>) {
    match held {
        Some(held) => {
            if held.state.changed().await.is_err() {
                // The keeper ended: its last word stays in `state`.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn campaign_done(
    campaign: &mut Option<Campaign>,
) -> Result<Result<Option<LeaderKey>, etcd_client::Error>, String> {
    match campaign {
        Some(task) => task.await.map_err(|e| e.to_string()),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
