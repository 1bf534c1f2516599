//! The event log of a hall on NATS JetStream: one stream per hall, file storage,
//! replicas as configured. Every console and the hub append to it and follow it.
//!
//! One stream message is one commit: the events one operator wrote at one time, with
//! the same SHA-256 chain as the embedded SQLite log (sequence numbers count events,
//! not messages; [`super::event_hash`] links each to the one before). Appends are
//! compare-and-append on the stream's last sequence (`Nats-Expected-Last-Sequence`),
//! so commands from several consoles serialize: a writer whose view is behind gets
//! [`StoreError::Conflict`], catches up with [`EventStore::follow`] and checks its
//! command again. A retried publish carries the same message id, so a commit whose
//! acknowledgement was lost is stored once (JetStream's duplicate window).
//!
//! Reading is one ordered consumer per open log (ephemeral; the server removes it
//! when the reader goes), handed over a bounded channel to whoever calls in, so a
//! caller never waits on the network except where it asks to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::push, context::PublishErrorKind, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{EventStore, GENESIS_HASH, StoreError, VerifyReport, event_hash};
use crate::nats::{Nats, check_hall_name};

/// Version of the commit format on the wire.
const WIRE_VERSION: u32 = 1;

/// Commits buffered between the reader and the caller.
const READ_BUFFER: usize = 8192;

/// Stream metadata key holding the log's random id.
const LOG_ID_KEY: &str = "zhongshu_log_id";

/// One commit as stored in the stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireCommit {
    pub v: u32,
    pub at_ms: i64,
    pub operator: String,
    pub role: String,
    /// Sequence number of the first event (events are numbered from 1 across the log).
    pub first_seq: i64,
    pub prev_hash: String,
    pub events: Vec<WireEvent>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireEvent {
    pub kind: String,
    /// The event as JSON text, exactly as hashed.
    pub payload: String,
    pub hash: String,
}

/// What the reader hands over: a commit with its stream sequence, or a message
/// that is not one.
enum Incoming {
    Commit(u64, WireCommit),
    Unreadable(u64, String),
}

/// Where the reader has got to.
struct Head {
    /// Stream sequence of the last commit read or written.
    stream_seq: u64,
    /// Events read or written.
    events: i64,
    hash: String,
}

struct Reader {
    /// The follower, started at the first read (a replay's reader carries on as it).
    rx: Option<mpsc::Receiver<Incoming>>,
    head: Head,
    alarm: Option<String>,
}

/// The names a hall's log lives under.
pub fn stream_name(hall: &str) -> String {
    // Hall names are letters, digits, `-` and `_`, all valid in a stream name, so
    // distinct halls have distinct streams.
    format!("ZHONGSHU_LOG_{hall}")
}

pub fn subject(hall: &str) -> String {
    format!("zhongshu.{hall}.log")
}

pub struct JetStreamLog {
    nats: Nats,
    hall: String,
    stream: stream::Stream,
    log_id: String,
    reader: Mutex<Reader>,
}

/// How the hall's stream is created when it does not exist.
#[derive(Clone, Debug)]
pub struct HallLogOptions {
    /// Copies kept by the cluster (1 on a single server, 3 on a 3-node cluster).
    pub replicas: usize,
    /// Create the stream when it does not exist (`false` for `audit verify`).
    pub create: bool,
}

impl Default for HallLogOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            create: true,
        }
    }
}

fn unavailable(what: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        what: what.to_string(),
        message: message.to_string(),
    }
}

impl JetStreamLog {
    /// Opens the hall's log (creating its stream when allowed) and starts reading it
    /// from the beginning.
    pub fn open(nats: &Nats, hall: &str, options: &HallLogOptions) -> Result<Self, StoreError> {
        check_hall_name(hall).map_err(|e| unavailable(hall, e))?;
        let what = format!("hall {hall} on {}", nats.url);
        let js = nats.js.clone();
        let name = stream_name(hall);
        let subj = subject(hall);
        let create = options.create;
        let replicas = options.replicas.max(1);
        let stream = nats
            .call("open the hall's log", async move {
                if let Ok(s) = js.get_stream(&name).await {
                    return Ok(s);
                }
                if !create {
                    return Err(format!(
                        "the hall has no log (stream {name} does not exist)"
                    ));
                }
                let log_id = super::seal::random_hex(16)?;
                let config = stream::Config {
                    name: name.clone(),
                    subjects: vec![subj],
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    deny_delete: true,
                    deny_purge: true,
                    allow_rollup: false,
                    duplicate_window: Duration::from_secs(120),
                    metadata: HashMap::from([(LOG_ID_KEY.to_string(), log_id)]),
                    description: Some("Zhongshu: the hall's event log".into()),
                    ..Default::default()
                };
                match js.create_stream(config).await {
                    Ok(s) => Ok(s),
                    // Another console created it at the same moment.
                    Err(first) => js
                        .get_stream(&name)
                        .await
                        .map_err(|_| format!("cannot create the hall's log {name}: {first}")),
                }
            })
            .map_err(|e| unavailable(&what, e))?;
        let log_id = stream
            .cached_info()
            .config
            .metadata
            .get(LOG_ID_KEY)
            .cloned()
            .ok_or_else(|| {
                unavailable(
                    &what,
                    format!(
                        "stream {} is not a Zhongshu log (no {LOG_ID_KEY} in its metadata)",
                        stream_name(hall)
                    ),
                )
            })?;
        Ok(Self {
            nats: nats.clone(),
            hall: hall.to_string(),
            stream,
            log_id,
            reader: Mutex::new(Reader {
                rx: None,
                head: Head::new(),
                alarm: None,
            }),
        })
    }

    pub fn hall(&self) -> &str {
        &self.hall
    }

    /// The last event read or written: its sequence number and hash.
    pub fn head(&self) -> (i64, String) {
        let r = self.reader.lock().expect("the reader lock is not poisoned");
        (r.head.events, r.head.hash.clone())
    }

    /// The stream's last sequence now (one request).
    pub fn stream_last_seq(&self) -> Result<u64, StoreError> {
        let stream = self.stream.clone();
        self.nats
            .call("read the hall's log head", async move {
                stream
                    .get_info()
                    .await
                    .map(|i| i.state.last_sequence)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| unavailable(&self.describe(), e))
    }

    /// Follows the log: reads commits until the stream sequence `target` is reached
    /// (or, without one, what has arrived), passing each new event to `f`.
    fn read_until(
        &self,
        target: Option<u64>,
        wait: Duration,
        f: &mut dyn FnMut(i64, &str, &str, &str),
    ) -> Result<u64, StoreError> {
        let mut reader = self.reader.lock().expect("the reader lock is not poisoned");
        let Reader { rx, head, alarm } = &mut *reader;
        let rx = rx.get_or_insert_with(|| {
            spawn_reader(&self.nats, self.stream.clone(), head.stream_seq + 1)
        });
        read_commits(
            &self.nats,
            &self.describe(),
            rx,
            head,
            alarm,
            target,
            wait,
            f,
        )
    }
}

impl Head {
    fn new() -> Self {
        Head {
            stream_seq: 0,
            events: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

/// Reads commits from `rx` until the stream sequence `target` is reached (or,
/// without one, what has already arrived), passing each event after `head` to `f`
/// and moving `head` on. What does not link to the head is noted in `alarm`.
#[allow(clippy::too_many_arguments)]
fn read_commits(
    nats: &Nats,
    what: &str,
    rx: &mut mpsc::Receiver<Incoming>,
    head: &mut Head,
    alarm: &mut Option<String>,
    target: Option<u64>,
    wait: Duration,
    f: &mut dyn FnMut(i64, &str, &str, &str),
) -> Result<u64, StoreError> {
    let deadline = Instant::now() + wait;
    let mut taken = 0u64;
    loop {
        let incoming = match rx.try_recv() {
            Ok(i) => i,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                return Err(unavailable(what, "the reader stopped"));
            }
            Err(mpsc::error::TryRecvError::Empty) => {
                let reached = target.is_none_or(|t| head.stream_seq >= t);
                if reached {
                    return Ok(taken);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(unavailable(
                        what,
                        format!(
                            "caught up to commit {} of {} only within {wait:?}",
                            head.stream_seq,
                            target.unwrap_or(0)
                        ),
                    ));
                }
                let rx_ref = &mut *rx;
                match nats
                    .rt
                    .block_on(async { tokio::time::timeout(left, rx_ref.recv()).await })
                {
                    Ok(Some(i)) => i,
                    Ok(None) => return Err(unavailable(what, "the reader stopped")),
                    Err(_) => continue,
                }
            }
        };
        match incoming {
            Incoming::Commit(seq, commit) => {
                if seq <= head.stream_seq {
                    continue; // written by this writer, already applied
                }
                if commit.first_seq != head.events + 1
                    || commit.prev_hash != head.hash
                    || commit.events.is_empty()
                {
                    // Not written by a writer that had read the log (a forged or
                    // damaged message): it is not taken in, so no console applies it
                    // and the next honest commit links to the last good event.
                    alarm.get_or_insert_with(|| {
                        format!(
                            "the hall's log has a commit that does not link (stream message {seq}: event {} after {}, where event {} after {} was due); it was not taken in",
                            commit.first_seq,
                            short(&commit.prev_hash),
                            head.events + 1,
                            short(&head.hash),
                        )
                    });
                    head.stream_seq = seq;
                    continue;
                }
                for e in &commit.events {
                    f(commit.at_ms, &commit.operator, &commit.role, &e.payload);
                    taken += 1;
                }
                head.stream_seq = seq;
                head.events = commit.first_seq - 1 + commit.events.len() as i64;
                if let Some(last) = commit.events.last() {
                    head.hash = last.hash.clone();
                }
            }
            Incoming::Unreadable(seq, why) => {
                head.stream_seq = head.stream_seq.max(seq);
                alarm.get_or_insert_with(|| {
                    format!("the hall's log has an unreadable commit {seq}: {why}")
                });
            }
        }
    }
}

/// The first characters of a hash for messages (whatever the text: a forged
/// message may carry anything).
fn short(hash: &str) -> String {
    let mut out: String = hash.chars().take(12).collect();
    if hash.chars().count() > 12 {
        out.push('…');
    }
    out
}

/// Starts an ordered consumer from stream sequence `start`, handing commits over a
/// bounded channel. It re-creates itself after errors, from where it got to, and
/// stops when the receiver goes.
fn spawn_reader(nats: &Nats, stream: stream::Stream, start: u64) -> mpsc::Receiver<Incoming> {
    let (tx, rx) = mpsc::channel(READ_BUFFER);
    let client = nats.client.clone();
    nats.rt.spawn(async move {
        let mut next = start.max(1);
        loop {
            let config = push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                deliver_policy: if next <= 1 {
                    jetstream::consumer::DeliverPolicy::All
                } else {
                    jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    }
                },
                ..Default::default()
            };
            let messages = match stream.create_consumer(config).await {
                Ok(c) => c.messages().await.ok(),
                Err(_) => None,
            };
            if let Some(mut messages) = messages {
                loop {
                    // Stops as soon as the log is dropped, even on a quiet stream, so
                    // its consumer goes with it.
                    let next_message = std::pin::pin!(messages.next());
                    let closed = std::pin::pin!(tx.closed());
                    let m = match futures_util::future::select(next_message, closed).await {
                        futures_util::future::Either::Left((m, _)) => m,
                        futures_util::future::Either::Right(_) => return,
                    };
                    let Some(m) = m else { break };
                    let Ok(m) = m else { break };
                    let Ok(info) = m.info() else { continue };
                    let seq = info.stream_sequence;
                    let incoming = match serde_json::from_slice::<WireCommit>(&m.message.payload) {
                        Ok(c) if c.v == WIRE_VERSION => Incoming::Commit(seq, c),
                        Ok(c) => Incoming::Unreadable(seq, format!("format version {}", c.v)),
                        Err(e) => Incoming::Unreadable(seq, e.to_string()),
                    };
                    if tx.send(incoming).await.is_err() {
                        return;
                    }
                    next = seq + 1;
                }
            }
            if tx.is_closed() {
                return;
            }
            let pause = std::pin::pin!(tokio::time::sleep(Duration::from_millis(250)));
            let closed = std::pin::pin!(tx.closed());
            if let futures_util::future::Either::Right(_) =
                futures_util::future::select(pause, closed).await
            {
                return;
            }
        }
    });
    rx
}

impl EventStore for JetStreamLog {
    fn describe(&self) -> String {
        format!("hall {} on {}", self.hall, self.nats.url)
    }

    fn log_id(&self) -> &str {
        &self.log_id
    }

    fn len(&self) -> i64 {
        self.reader.lock().map(|r| r.head.events).unwrap_or(0)
    }

    fn append_all(
        &mut self,
        at_ms: i64,
        operator: &str,
        role: &str,
        events: &[(&str, String)],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let what = self.describe();
        // Nothing is sent while the server is out of reach: the client would keep it
        // and send it on reconnecting, long after the command was said to fail.
        // A ping answered just before the write narrows the moment in which a write
        // can be lost in the client's buffer to almost nothing.
        let client = self.nats.client.clone();
        let alive = self.nats.connected()
            && self
                .nats
                .rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(2), client.flush()).await
                })
                .is_ok_and(|r| r.is_ok());
        if !alive {
            return Err(unavailable(
                &what,
                "the hall's server is out of reach; nothing was written",
            ));
        }
        let reader = self
            .reader
            .get_mut()
            .expect("the reader lock is not poisoned");
        let head = &mut reader.head;
        let mut hash = head.hash.clone();
        let first_seq = head.events + 1;
        let mut wire = Vec::with_capacity(events.len());
        for (i, (kind, payload)) in events.iter().enumerate() {
            hash = event_hash(
                &hash,
                first_seq + i as i64,
                at_ms,
                operator,
                role,
                kind,
                payload,
            );
            wire.push(WireEvent {
                kind: kind.to_string(),
                payload: payload.clone(),
                hash: hash.clone(),
            });
        }
        let commit = WireCommit {
            v: WIRE_VERSION,
            at_ms,
            operator: operator.to_string(),
            role: role.to_string(),
            first_seq,
            prev_hash: head.hash.clone(),
            events: wire,
        };
        let body = bytes::Bytes::from(serde_json::to_vec(&commit).expect("commits serialize"));
        let msg_id = super::seal::random_hex(16).map_err(|e| unavailable(&what, e))?;
        let expected = head.stream_seq;
        let js = self.nats.js.clone();
        let subj = subject(&self.hall);
        let timeout = self.nats.timeout;
        // Retried with the same message id until acknowledged or the time is up: a
        // commit whose acknowledgement was lost is stored once.
        // A write the server's permissions refuse is never acknowledged: the
        // server's word for it ends the wait at once, and is what the desk says.
        let nats = self.nats.clone();
        let started = std::time::Instant::now();
        let result = self.nats.rt.block_on(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let publish = jetstream::message::PublishMessage::build()
                    .payload(body.clone())
                    .message_id(&msg_id)
                    .expected_last_sequence(expected);
                let attempt = async {
                    let ack = js.send_publish(subj.clone(), publish).await?;
                    ack.await
                };
                let refused = async {
                    loop {
                        tokio::time::sleep(Duration::from_millis(25)).await;
                        if let Some(text) = nats.refused_since(started, &subj) {
                            return text;
                        }
                    }
                };
                let raced = futures_util::future::select(Box::pin(attempt), Box::pin(refused));
                let outcome = match tokio::time::timeout_at(deadline, raced).await {
                    Ok(futures_util::future::Either::Left((outcome, _))) => Ok(outcome),
                    Ok(futures_util::future::Either::Right((text, _))) => {
                        return Err(Some(format!(
                            "the hall's server refused it ({text}): this NATS user may not write the hall's log; nothing was written"
                        )));
                    }
                    Err(elapsed) => Err(elapsed),
                };
                match outcome {
                    Ok(Ok(ack)) => return Ok(ack.sequence),
                    Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                        return Err(None);
                    }
                    Ok(Err(e)) => {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(Some(e.to_string()));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(_) => {
                        return Err(Some(format!(
                            "not acknowledged within {timeout:?}; it shows on every console if it was stored"
                        )));
                    }
                }
            }
        });
        match result {
            Ok(stream_seq) => {
                head.stream_seq = stream_seq;
                head.events = first_seq - 1 + events.len() as i64;
                head.hash = hash;
                Ok(())
            }
            Err(None) => Err(StoreError::Conflict { what }),
            Err(Some(message)) => Err(unavailable(&what, message)),
        }
    }

    fn scan_replay(&self, f: &mut dyn FnMut(i64, &str, &str, &str)) -> Result<(), StoreError> {
        let target = self.stream_last_seq()?;
        // A large log takes a while to read; allow for it.
        let wait = self.nats.timeout.max(Duration::from_secs(120));
        let mut rx = spawn_reader(&self.nats, self.stream.clone(), 1);
        let mut head = Head::new();
        let mut alarm = None;
        read_commits(
            &self.nats,
            &self.describe(),
            &mut rx,
            &mut head,
            &mut alarm,
            Some(target),
            wait,
            f,
        )?;
        // The first read of a log that has followed nothing yet: this reader goes on
        // as its follower, from where the replay stopped.
        let mut reader = self.reader.lock().expect("the reader lock is not poisoned");
        if reader.rx.is_none() && reader.head.stream_seq == 0 {
            reader.rx = Some(rx);
            reader.head = head;
            reader.alarm = alarm;
        }
        Ok(())
    }

    fn follow(
        &mut self,
        wait: bool,
        f: &mut dyn FnMut(i64, &str, &str, &str),
    ) -> Result<u64, StoreError> {
        if wait {
            let target = self.stream_last_seq()?;
            self.read_until(Some(target), self.nats.timeout, f)
        } else {
            self.read_until(None, Duration::ZERO, f)
        }
    }

    fn verify(&self) -> Result<VerifyReport, StoreError> {
        let target = self.stream_last_seq()?;
        let mut report = VerifyReport {
            chain_ok: true,
            ..Default::default()
        };
        report.notes.push(
            "the hall's stream is checked link by link; it carries no seals (its server's \
             deny-delete and deny-purge settings and replication guard it)"
                .into(),
        );
        if target == 0 {
            return Ok(report);
        }
        let mut rx = spawn_reader(&self.nats, self.stream.clone(), 1);
        let mut events = 0i64;
        let mut hash = GENESIS_HASH.to_string();
        let mut last_seq = 0u64;
        let idle = self.nats.timeout.max(Duration::from_secs(30));
        while last_seq < target {
            let next = self
                .nats
                .rt
                .block_on(async { tokio::time::timeout(idle, rx.recv()).await });
            let incoming = match next {
                Ok(Some(i)) => i,
                _ => {
                    return Err(unavailable(
                        &self.describe(),
                        format!("reading stopped at commit {last_seq} of {target}"),
                    ));
                }
            };
            let bad = |report: &mut VerifyReport, seq: i64, problem: String| {
                if report.first_bad_event.is_none() {
                    report.first_bad_event = Some(seq);
                }
                report.chain_ok = false;
                if report.problems.len() < 20 {
                    report.problems.push(problem);
                }
            };
            match incoming {
                Incoming::Unreadable(seq, why) => {
                    last_seq = seq;
                    bad(
                        &mut report,
                        events + 1,
                        format!("commit {seq} is not a readable commit: {why}"),
                    );
                }
                Incoming::Commit(seq, commit) => {
                    last_seq = seq;
                    if commit.first_seq != events + 1
                        || commit.prev_hash != hash
                        || commit.events.is_empty()
                    {
                        // Consoles do not take such a commit in: the chain goes on
                        // from the last good event.
                        bad(
                            &mut report,
                            events + 1,
                            format!(
                                "stream message {seq} does not link: it claims event {} after {}, where event {} after {} was due (not taken in)",
                                commit.first_seq,
                                short(&commit.prev_hash),
                                events + 1,
                                short(&hash)
                            ),
                        );
                        continue;
                    }
                    let mut prev = commit.prev_hash.clone();
                    for (i, e) in commit.events.iter().enumerate() {
                        let seq_e = commit.first_seq + i as i64;
                        let h = event_hash(
                            &prev,
                            seq_e,
                            commit.at_ms,
                            &commit.operator,
                            &commit.role,
                            &e.kind,
                            &e.payload,
                        );
                        if h != e.hash {
                            bad(
                                &mut report,
                                seq_e,
                                format!("event {seq_e}'s hash does not match its content"),
                            );
                        }
                        prev = e.hash.clone();
                    }
                    events = commit.first_seq - 1 + commit.events.len() as i64;
                    hash = prev;
                }
            }
        }
        report.events = events.max(0) as u64;
        Ok(report)
    }

    fn integrity_alarm(&self) -> Option<String> {
        self.reader.lock().ok().and_then(|r| r.alarm.clone())
    }

    fn shared(&self) -> bool {
        true
    }
}
