//! Live layers in a hall: the active hub polls the hall's feeds once, runs ingest,
//! quality and quarantine, and publishes the result; every console follows it and
//! polls nothing itself, so all show the same live state.
//!
//! On the wire (core NATS, [`WIRE_VERSION`], MessagePack with named fields so a
//! newer reader can add fields):
//! - `zhongshu.<hall>.live`: [`Frame`]s of what changed (entities upserted, entities
//!   gone) each pump, and the feeds' list, health and quality once a second. Frames
//!   are numbered per hub; a console that sees a gap or another hub asks again.
//! - `zhongshu.<hall>.live.snapshot`: a request answered on the requester's inbox
//!   with the whole state in parts, the last one saying up to which frame it holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::feeds::config::FeedConfig;
use crate::governance::health::FeedHealth;
use crate::governance::quality::FeedQuality;
use crate::model::{EntityUpdate, FeedId};
use crate::nats::Nats;
use crate::state::{LiveState, Slot};

/// The version of the live wire format. A reader refuses frames of a newer major
/// version, by name, instead of misreading them.
pub const WIRE_VERSION: u16 = 1;

/// Entities per frame at most.
pub const ENTITIES_PER_FRAME: usize = 1000;

/// Bytes per frame at most: under the server's default 1 MiB message limit. Bigger
/// batches are split; one entity bigger than this is not sent (counted, said).
pub const MAX_FRAME_BYTES: usize = 900 * 1024;

/// An entity left out of the live layers: (feed, id, bytes its frame would take).
type TooBig = (FeedId, String, usize);

/// `changes` in parts whose frames (made by `frame`, with the largest number and
/// flags the caller will give them) each encode to at most [`MAX_FRAME_BYTES`];
/// entities too big for any frame are left out and returned.
fn split_by_bytes(
    changes: Changes,
    frame: &dyn Fn(Changes) -> Frame,
) -> (Vec<Changes>, Vec<TooBig>) {
    let bytes = encode(&frame(changes.clone()));
    if bytes.len() <= MAX_FRAME_BYTES {
        return (vec![changes], Vec::new());
    }
    if changes.upserts.len() + changes.removed.len() <= 1 {
        let dropped = changes
            .upserts
            .iter()
            .map(|e| (e.feed, e.update.id.clone(), bytes.len()))
            .collect();
        return (Vec::new(), dropped);
    }
    // Halve: upserts first, then removals.
    let Changes {
        mut upserts,
        mut removed,
    } = changes;
    let (a, b) = if upserts.len() > 1 {
        let tail = upserts.split_off(upserts.len() / 2);
        (
            Changes {
                upserts,
                removed: Vec::new(),
            },
            Changes {
                upserts: tail,
                removed,
            },
        )
    } else if removed.len() > 1 {
        let tail = removed.split_off(removed.len() / 2);
        (
            Changes { upserts, removed },
            Changes {
                upserts: Vec::new(),
                removed: tail,
            },
        )
    } else {
        (
            Changes {
                upserts,
                removed: Vec::new(),
            },
            Changes {
                upserts: Vec::new(),
                removed,
            },
        )
    };
    let (mut frames, mut dropped) = split_by_bytes(a, frame);
    let (more, more_dropped) = split_by_bytes(b, frame);
    frames.extend(more);
    dropped.extend(more_dropped);
    (frames, dropped)
}

pub fn live_subject(hall: &str) -> String {
    format!("zhongshu.{hall}.live")
}

pub fn snapshot_subject(hall: &str) -> String {
    format!("zhongshu.{hall}.live.snapshot")
}

/// One message on the live subject or a snapshot's inbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub v: u16,
    /// The publishing hub's member id: frames are numbered per hub.
    pub hub: String,
    /// This frame's number (live frames: 1, 2, 3... per hub; snapshot parts carry
    /// the number of the last live frame they include).
    pub seq: u64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Entities that changed, in the hub's order.
    Changes(Changes),
    /// The feeds as the hub runs them (credentials left out), their health and
    /// quality: what the status panel and steward show.
    Status(Status),
    /// A part of the whole state; `last` ends the snapshot.
    Snapshot { changes: Changes, last: bool },
}

/// Entities as they now are, and entities that have gone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    pub upserts: Vec<WireEntity>,
    pub removed: Vec<(FeedId, String)>,
}

/// One entity as the hub holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireEntity {
    pub feed: FeedId,
    pub received_at_ms: i64,
    pub update: EntityUpdate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub feeds: Vec<FeedConfig>,
    pub health: Vec<FeedHealth>,
    pub quality: Vec<FeedQuality>,
    /// Live entities per feed, in the hub's state.
    #[serde(default)]
    pub entities: Vec<u64>,
}

/// Encodes a frame for the wire.
pub fn encode(frame: &Frame) -> Vec<u8> {
    rmp_serde::to_vec_named(frame).expect("live frames always encode")
}

/// Decodes a frame, refusing another major version by name.
pub fn decode(bytes: &[u8]) -> Result<Frame, String> {
    #[derive(Deserialize)]
    struct Head {
        v: u16,
    }
    let head: Head = rmp_serde::from_slice(bytes).map_err(|e| format!("not a live frame: {e}"))?;
    if head.v != WIRE_VERSION {
        return Err(format!(
            "live frame of wire version {} (this console reads {WIRE_VERSION}): update the console",
            head.v
        ));
    }
    rmp_serde::from_slice(bytes).map_err(|e| format!("unreadable live frame: {e}"))
}

/// A feed's configuration as consoles may see it: the URL without credentials, no
/// request headers.
pub fn shown_feed(feed: &FeedConfig) -> FeedConfig {
    FeedConfig {
        url: feed.url.as_deref().map(crate::http::redact_url),
        headers: Default::default(),
        password: feed.password.as_ref().map(|_| "***".into()),
        token: feed.token.as_ref().map(|_| "***".into()),
        ..feed.clone()
    }
}

/// The hub's side: remembers what it published, turns the live state's changed slots
/// into frames, answers snapshot requests.
pub struct Publisher {
    nats: Nats,
    hall: String,
    hub: String,
    seq: u64,
    /// (feed, id) of every slot published, so a slot that emptied can be named.
    published: HashMap<Slot, (FeedId, String)>,
    requests: Receiver<String>,
    stop: Arc<AtomicBool>,
    /// Frames published, entities sent (for the bench and hall-status).
    pub frames: u64,
    pub entities_sent: u64,
}

impl Publisher {
    /// Starts answering snapshot requests for `hall` as hub `hub`.
    pub fn start(nats: &Nats, hall: &str, hub: &str) -> Result<Publisher, String> {
        let (tx, requests) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let subject = snapshot_subject(hall);
        let client = nats.client.clone();
        let mut subscriber = nats.call("subscribe to snapshot requests", async move {
            client
                .subscribe(subject)
                .await
                .map_err(|e| format!("cannot subscribe to snapshot requests: {e}"))
        })?;
        let stopping = stop.clone();
        nats.rt.spawn(async move {
            while let Some(message) = subscriber.next().await {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(reply) = message.reply
                    && tx.send(reply.to_string()).is_err()
                {
                    break;
                }
            }
        });
        Ok(Publisher {
            nats: nats.clone(),
            hall: hall.to_owned(),
            hub: hub.to_owned(),
            seq: 0,
            published: HashMap::new(),
            requests,
            stop,
            frames: 0,
            entities_sent: 0,
        })
    }

    /// Publishes the entities in `changed` slots (upserted or gone), in frames of
    /// at most [`ENTITIES_PER_FRAME`] entities and [`MAX_FRAME_BYTES`] bytes; then
    /// answers waiting snapshot requests. An entity too big for any frame is left
    /// out and named in the error; everything else is still published.
    pub fn publish_changes(&mut self, state: &LiveState, changed: &[Slot]) -> Result<(), String> {
        let mut batches = Vec::new();
        let mut changes = Changes::default();
        for &slot in changed {
            match state.entity(slot) {
                Some(e) => {
                    self.published
                        .entry(slot)
                        .or_insert_with(|| (e.feed, e.id.clone()));
                    changes.upserts.push(WireEntity {
                        feed: e.feed,
                        received_at_ms: e.received_at_ms,
                        update: e.to_update(),
                    });
                }
                None => {
                    if let Some(gone) = self.published.remove(&slot) {
                        changes.removed.push(gone);
                    }
                }
            }
            if changes.upserts.len() + changes.removed.len() >= ENTITIES_PER_FRAME {
                batches.push(std::mem::take(&mut changes));
            }
        }
        if !changes.upserts.is_empty() || !changes.removed.is_empty() {
            batches.push(changes);
        }
        let mut problem = None;
        for batch in batches {
            // The usual case: the batch fits one frame, encoded once.
            let entities = (batch.upserts.len() + batch.removed.len()) as u64;
            let frame = Frame {
                v: WIRE_VERSION,
                hub: self.hub.clone(),
                seq: self.seq + 1,
                body: Body::Changes(batch),
            };
            let bytes = encode(&frame);
            if bytes.len() <= MAX_FRAME_BYTES {
                self.seq += 1;
                self.entities_sent += entities;
                self.publish_bytes(live_subject(&self.hall), bytes)?;
                continue;
            }
            let Body::Changes(batch) = frame.body else {
                unreachable!("built as changes above")
            };
            let hub = self.hub.clone();
            let (parts, dropped) = split_by_bytes(batch, &|changes| Frame {
                v: WIRE_VERSION,
                hub: hub.clone(),
                seq: u64::MAX,
                body: Body::Changes(changes),
            });
            problem = problem.or(too_large(&dropped));
            for changes in parts {
                self.seq += 1;
                self.entities_sent += (changes.upserts.len() + changes.removed.len()) as u64;
                let frame = Frame {
                    v: WIRE_VERSION,
                    hub: self.hub.clone(),
                    seq: self.seq,
                    body: Body::Changes(changes),
                };
                self.publish(live_subject(&self.hall), &frame)?;
            }
        }
        self.answer_snapshots(state)?;
        problem.map_or(Ok(()), Err)
    }

    /// Publishes the feeds' list, health and quality (not numbered: a status stands
    /// on its own).
    pub fn publish_status(&mut self, status: Status) -> Result<(), String> {
        let frame = Frame {
            v: WIRE_VERSION,
            hub: self.hub.clone(),
            seq: self.seq,
            body: Body::Status(status),
        };
        self.publish(live_subject(&self.hall), &frame)
    }

    fn publish(&mut self, subject: String, frame: &Frame) -> Result<(), String> {
        self.publish_bytes(subject, encode(frame))
    }

    fn publish_bytes(&mut self, subject: String, bytes: Vec<u8>) -> Result<(), String> {
        let client = self.nats.client.clone();
        self.frames += 1;
        self.nats.call("publish live layers", async move {
            client
                .publish(subject, bytes.into())
                .await
                .map_err(|e| format!("cannot publish live layers: {e}"))
        })
    }

    fn answer_snapshots(&mut self, state: &LiveState) -> Result<(), String> {
        let inboxes: Vec<String> = self.requests.try_iter().collect();
        if inboxes.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        let mut changes = Changes::default();
        for (_, e) in state.iter() {
            changes.upserts.push(WireEntity {
                feed: e.feed,
                received_at_ms: e.received_at_ms,
                update: e.to_update(),
            });
            if changes.upserts.len() >= ENTITIES_PER_FRAME {
                parts.push(std::mem::take(&mut changes));
            }
        }
        parts.push(changes);
        let hub = self.hub.clone();
        let seq = self.seq;
        let mut split = Vec::new();
        let mut dropped = Vec::new();
        for changes in parts {
            let (fitting, too_big) = split_by_bytes(changes, &|changes| Frame {
                v: WIRE_VERSION,
                hub: hub.clone(),
                seq,
                body: Body::Snapshot {
                    changes,
                    last: false,
                },
            });
            split.extend(fitting);
            dropped.extend(too_big);
        }
        // The last part says so (an empty one when nothing fitted).
        if split.is_empty() {
            split.push(Changes::default());
        }
        let count = split.len();
        let frames: Vec<Vec<u8>> = split
            .into_iter()
            .enumerate()
            .map(|(i, changes)| {
                encode(&Frame {
                    v: WIRE_VERSION,
                    hub: hub.clone(),
                    seq,
                    body: Body::Snapshot {
                        changes,
                        last: i + 1 == count,
                    },
                })
            })
            .collect();
        let problem = too_large(&dropped);
        for inbox in inboxes {
            let client = self.nats.client.clone();
            let frames = frames.clone();
            self.nats.call("answer a snapshot request", async move {
                for frame in frames {
                    client
                        .publish(inbox.clone(), frame.into())
                        .await
                        .map_err(|e| format!("cannot answer a snapshot request: {e}"))?;
                }
                client
                    .flush()
                    .await
                    .map_err(|e| format!("cannot answer a snapshot request: {e}"))
            })?;
        }
        problem.map_or(Ok(()), Err)
    }
}

/// What to say of entities too big for a live frame, if any.
fn too_large(dropped: &[TooBig]) -> Option<String> {
    let (feed, id, bytes) = dropped.first()?;
    Some(format!(
        "{} entit{} too big for a live frame (the first: {id:?} of feed #{feed}, {} KiB; at most {} KiB): not sent to the consoles",
        dropped.len(),
        if dropped.len() == 1 { "y" } else { "ies" },
        bytes / 1024,
        MAX_FRAME_BYTES / 1024
    ))
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a console's follower hands the frame.
#[derive(Debug)]
pub enum LiveIn {
    /// Apply these (a snapshot part or live changes). `replace` starts a new picture:
    /// entities the coming snapshot does not hold are to go when it ends.
    Changes {
        changes: Changes,
        snapshot: SnapshotMark,
    },
    Status(Status),
    /// The follower's state, for the console's banner: `None` while frames arrive in
    /// order from a hub; else why the layers may be behind.
    Trouble(Option<String>),
}

/// Where a batch of changes stands in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMark {
    /// Live changes.
    Live,
    /// The first part of a snapshot: what it does not hold has gone.
    First,
    /// Another part; `last` ends it.
    Part { last: bool },
}

/// How many frames a console's follower keeps for the frame at most; past that it
/// drops and asks for a snapshot (the console is behind, never frozen).
pub const FOLLOW_QUEUE: usize = 4096;

/// A console's follower of the hall's live layers: a task on the NATS runtime that
/// subscribes, asks for a snapshot, puts frames in order and hands them over a
/// bounded channel. Dropping it stops the task.
pub struct Follower {
    /// In a mutex only so a console can keep it in a shared resource; one reader.
    pub rx: std::sync::Mutex<Receiver<LiveIn>>,
    stop: Arc<AtomicBool>,
    /// Keeps the runtime the task runs on.
    _nats: Nats,
}

impl Follower {
    pub fn start(nats: &Nats, hall: &str) -> Result<Follower, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(FOLLOW_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let client = nats.client.clone();
        let subject = live_subject(hall);
        let live = nats.call("follow the hall's live layers", {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject)
                    .await
                    .map_err(|e| format!("cannot follow the hall's live layers: {e}"))
            }
        })?;
        let stopping = stop.clone();
        let snapshot = snapshot_subject(hall);
        nats.rt.spawn(follow(client, live, snapshot, tx, stopping));
        Ok(Follower {
            rx: std::sync::Mutex::new(rx),
            stop,
            _nats: nats.clone(),
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How long a console waits for a snapshot's parts before asking again.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

async fn follow(
    client: async_nats::Client,
    mut live: async_nats::Subscriber,
    snapshot_subject: String,
    tx: SyncSender<LiveIn>,
    stop: Arc<AtomicBool>,
) {
    let send = |item: LiveIn| -> Result<(), bool> {
        match tx.try_send(item) {
            Ok(()) => Ok(()),
            // The frame is behind: start again from a snapshot.
            Err(TrySendError::Full(_)) => Err(true),
            Err(TrySendError::Disconnected(_)) => Err(false),
        }
    };
    // (hub, last frame number applied); None: a snapshot is needed.
    let mut at: Option<(String, u64)> = None;
    let mut said_trouble: Option<String> = Some(String::new());
    let mut buffered: Vec<Frame> = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if at.is_none() {
            // Ask for the whole state, keeping live frames meanwhile.
            match take_snapshot(&client, &snapshot_subject, &mut live, &mut buffered, &tx).await {
                Ok(Some((hub, seq))) => {
                    at = Some((hub.clone(), seq));
                    for frame in std::mem::take(&mut buffered) {
                        if frame.hub != hub || frame.seq <= seq {
                            continue;
                        }
                        if let Body::Changes(changes) = frame.body {
                            if frame.seq != at.as_ref().map_or(0, |a| a.1) + 1 {
                                at = None;
                                break;
                            }
                            at = Some((hub.clone(), frame.seq));
                            if send(LiveIn::Changes {
                                changes,
                                snapshot: SnapshotMark::Live,
                            })
                            .is_err()
                            {
                                at = None;
                                break;
                            }
                        }
                    }
                    if at.is_some() && said_trouble.is_some() {
                        said_trouble = None;
                        if let Err(false) = send(LiveIn::Trouble(None)) {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    let why = "no hub answers: the live layers wait for the hall's hub".to_owned();
                    if said_trouble.as_deref() != Some(why.as_str()) {
                        if let Err(false) = send(LiveIn::Trouble(Some(why.clone()))) {
                            return;
                        }
                        said_trouble = Some(why);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(false) => return,
                Err(true) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            continue;
        }
        let message = tokio::select! {
            m = live.next() => m,
            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
        };
        let Some(message) = message else { return };
        let frame = match decode(&message.payload) {
            Ok(frame) => frame,
            Err(why) => {
                if said_trouble.as_deref() != Some(why.as_str()) {
                    if let Err(false) = send(LiveIn::Trouble(Some(why.clone()))) {
                        return;
                    }
                    said_trouble = Some(why);
                }
                continue;
            }
        };
        let (hub, seq) = at.clone().unwrap_or_default();
        match frame.body {
            Body::Status(status) => {
                if frame.hub == hub
                    && let Err(false) = send(LiveIn::Status(status))
                {
                    return;
                }
            }
            Body::Changes(changes) => {
                if frame.hub != hub || frame.seq != seq + 1 {
                    // Another hub took over, or frames were lost: start again.
                    at = None;
                    buffered.push(Frame {
                        body: Body::Changes(changes),
                        ..frame
                    });
                    continue;
                }
                match send(LiveIn::Changes {
                    changes,
                    snapshot: SnapshotMark::Live,
                }) {
                    Ok(()) => at = Some((hub, frame.seq)),
                    Err(true) => at = None,
                    Err(false) => return,
                }
            }
            Body::Snapshot { .. } => {}
        }
    }
}

/// Asks for a snapshot and hands its parts over; keeps live frames that arrive
/// meanwhile in `buffered`. `Ok(None)`: nobody answered; `Err(true)`: the console
/// is behind (try later); `Err(false)`: the console has gone.
async fn take_snapshot(
    client: &async_nats::Client,
    subject: &str,
    live: &mut async_nats::Subscriber,
    buffered: &mut Vec<Frame>,
    tx: &SyncSender<LiveIn>,
) -> Result<Option<(String, u64)>, bool> {
    let inbox = client.new_inbox();
    let Ok(mut parts) = client.subscribe(inbox.clone()).await else {
        return Ok(None);
    };
    if client
        .publish_with_reply(subject.to_owned(), inbox, Vec::new().into())
        .await
        .is_err()
    {
        return Ok(None);
    }
    let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
    let mut first = true;
    let mut hub: Option<String> = None;
    loop {
        let next = tokio::select! {
            p = parts.next() => p,
            m = live.next() => {
                if let Some(frame) = m.and_then(|m| decode(&m.payload).ok()) {
                    if buffered.len() < FOLLOW_QUEUE {
                        buffered.push(frame);
                    } else {
                        buffered.clear();
                    }
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
        };
        let Some(message) = next else { return Ok(None) };
        let Ok(frame) = decode(&message.payload) else {
            continue;
        };
        let Body::Snapshot { changes, last } = frame.body else {
            continue;
        };
        if hub.get_or_insert_with(|| frame.hub.clone()) != &frame.hub {
            continue;
        }
        let mark = if first {
            SnapshotMark::First
        } else {
            SnapshotMark::Part { last }
        };
        first = false;
        let item = LiveIn::Changes {
            changes,
            snapshot: mark,
        };
        match tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(true),
            Err(TrySendError::Disconnected(_)) => return Err(false),
        }
        if last {
            if mark == SnapshotMark::First {
                // A one-part snapshot: it ends too.
                let end = LiveIn::Changes {
                    changes: Changes::default(),
                    snapshot: SnapshotMark::Part { last: true },
                };
                if let Err(e) = tx.try_send(end) {
                    return Err(matches!(e, TrySendError::Full(_)));
                }
            }
            return Ok(Some((frame.hub, frame.seq)));
        }
    }
}

/// The console's side of the frame: applies what the follower handed over to the
/// live state, at most `max` entities a call, and remembers the hub's status.
pub struct LiveApplier {
    /// Entities held before the snapshot in progress, not yet seen in it: they go
    /// when it ends.
    unseen: Option<std::collections::HashSet<(FeedId, String)>>,
    pending: std::collections::VecDeque<LiveIn>,
    /// The hub's latest status.
    pub status: Option<Status>,
    /// Why the layers may be behind (no hub, a newer wire version...), if so.
    pub trouble: Option<String>,
    /// Snapshots taken in full (1 after joining; more after gaps or a new hub).
    pub snapshots: u64,
}

impl Default for LiveApplier {
    fn default() -> Self {
        LiveApplier {
            unseen: None,
            pending: Default::default(),
            status: None,
            trouble: Some("waiting for the hall's hub".into()),
            snapshots: 0,
        }
    }
}

impl LiveApplier {
    /// Takes what `rx` holds and applies up to `max` entity changes to `state`.
    /// Returns how many were applied.
    pub fn pump(
        &mut self,
        rx: &std::sync::Mutex<Receiver<LiveIn>>,
        state: &mut LiveState,
        max: usize,
    ) -> usize {
        if let Ok(rx) = rx.lock() {
            let room = FOLLOW_QUEUE.saturating_sub(self.pending.len());
            self.pending.extend(rx.try_iter().take(room));
        }
        let mut applied = 0;
        while applied < max {
            let Some(item) = self.pending.pop_front() else {
                break;
            };
            match item {
                LiveIn::Status(status) => self.status = Some(status),
                LiveIn::Trouble(why) => self.trouble = why,
                LiveIn::Changes { changes, snapshot } => {
                    if snapshot == SnapshotMark::First {
                        self.unseen =
                            Some(state.iter().map(|(_, e)| (e.feed, e.id.clone())).collect());
                    }
                    for gone in &changes.removed {
                        state.remove(gone.0, &gone.1);
                    }
                    applied += changes.removed.len();
                    for e in changes.upserts {
                        if let Some(unseen) = self.unseen.as_mut() {
                            unseen.remove(&(e.feed, e.update.id.clone()));
                        }
                        state.apply(e.feed, e.update, e.received_at_ms);
                        applied += 1;
                    }
                    if snapshot == (SnapshotMark::Part { last: true }) {
                        for (feed, id) in self.unseen.take().unwrap_or_default() {
                            state.remove(feed, &id);
                        }
                        self.snapshots += 1;
                        self.trouble = None;
                    }
                }
            }
        }
        applied
    }
}

/// Reads the hall's live status once: the first status frame within `wait`.
pub fn read_status(nats: &Nats, hall: &str, wait: Duration) -> Result<Option<Status>, String> {
    let client = nats.client.clone();
    let subject = live_subject(hall);
    let started = Instant::now();
    nats.rt.block_on(async move {
        let mut live = client
            .subscribe(subject)
            .await
            .map_err(|e| format!("cannot follow the hall's live layers: {e}"))?;
        loop {
            let left = wait.saturating_sub(started.elapsed());
            let message = match tokio::time::timeout(left, live.next()).await {
                Ok(Some(m)) => m,
                _ => return Ok(None),
            };
            if let Ok(Frame {
                body: Body::Status(status),
                ..
            }) = decode(&message.payload)
            {
                return Ok(Some(status));
            }
        }
    })
}

/// What the hub's live layers run on: the hall's feeds on the hall's map.
#[derive(Clone)]
pub struct LiveSetup {
    pub feeds: Vec<FeedConfig>,
    pub ranges: Vec<crate::feeds::config::RangeRule>,
    pub areas: Vec<crate::feeds::config::AreaConfig>,
    pub map: Arc<crate::map::CityMap>,
    pub seed: u64,
    /// `hub --open-data`: the active hub serves the open part of its live state.
    pub open_data: Option<crate::governance::open_data::serve::OpenDataService>,
    /// The active hub records the hall's history here and puts it in the hall's
    /// object store for every console.
    pub history: Option<HubHistory>,
}

/// Where and how long the hub keeps the hall's history.
#[derive(Clone, Debug)]
pub struct HubHistory {
    pub dir: std::path::PathBuf,
    pub retention: Duration,
}

/// How often the hub publishes the feeds' status.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The active hub's live layers: the hall's feeds polled once, ingested into one
/// live state, published as it changes.
pub struct HubLive {
    setup: LiveSetup,
    _running: crate::feeds::RunningFeeds,
    ingest: crate::governance::health::Ingest,
    pub state: LiveState,
    publisher: Publisher,
    last_status: Option<Instant>,
    /// Alert entities not yet looked at (all of them at the start).
    catch_up: bool,
    open_data: Option<crate::governance::open_data::serve::OpenDataPublisher>,
    /// Why the open data is not served, when it was asked for and did not start (said
    /// once by whoever takes it).
    pub open_data_problem: Option<String>,
    /// The hall's history recorded (finished on drop, before the last upload).
    recorder: Option<(crate::history::Recorder, crate::history::record::RecordTap)>,
    /// Puts the recorded segments in the hall's object store.
    uploader: Option<super::history::SyncThread>,
    /// Why the history is not recorded or shared, when it was asked for and did not
    /// start (said once by whoever takes it).
    pub history_problem: Option<String>,
    /// The recorder's errors already said.
    history_errors_said: u64,
}

impl Drop for HubLive {
    fn drop(&mut self) {
        // The open segment finished (its index written), then put a last time.
        if let Some((recorder, _)) = self.recorder.take() {
            recorder.finish();
        }
        self.uploader.take();
    }
}

impl HubLive {
    pub fn start(nats: &Nats, hall: &str, hub: &str, setup: LiveSetup) -> Result<HubLive, String> {
        let publisher = Publisher::start(nats, hall, hub)?;
        let (running, rx) =
            crate::feeds::start_feeds(&setup.feeds, &setup.areas, &setup.map, setup.seed);
        let rules = crate::governance::quality::QualityRules::for_city(setup.map.bbox_wgs84)
            .with_ranges(setup.ranges.clone());
        let ingest = crate::governance::health::Ingest::with_rules(&setup.feeds, rx, rules);
        // The open data fails alone: the live layers and alerts go on without it.
        let (open_data, open_data_problem) = match &setup.open_data {
            None => (None, None),
            Some(service) => match service.start(&setup.feeds, &setup.map) {
                Ok(publisher) => (Some(publisher), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "the open data on {} did not start: {e:#}",
                        service.addr
                    )),
                ),
            },
        };
        let mut state = LiveState::new(setup.map.frame);
        let (recorder, uploader, history_problem) = match &setup.history {
            None => (None, None, None),
            Some(history) => match start_history(nats, hall, history, &setup.feeds) {
                Ok((recorder, uploader)) => {
                    state.keep_journal(true);
                    (Some((recorder, Default::default())), Some(uploader), None)
                }
                Err(e) => (None, None, Some(format!("the hall's history: {e}"))),
            },
        };
        Ok(HubLive {
            open_data,
            open_data_problem,
            recorder,
            uploader,
            history_problem,
            history_errors_said: 0,
            state,
            setup,
            _running: running,
            ingest,
            publisher,
            last_status: None,
            catch_up: true,
        })
    }

    /// Takes in what the feeds delivered, publishes what changed (and the status once
    /// a second), and returns the alerts among the changed entities, to raise.
    ///
    /// The alerts come back whatever publishing did: raising an incident never
    /// depends on the consoles' layers. A publishing problem comes back beside them.
    pub fn pump(&mut self, now_ms: i64) -> (Vec<crate::model::AlertIn>, Option<String>) {
        self.ingest.pump(&mut self.state, usize::MAX);
        self.ingest.expire(&mut self.state, now_ms);
        if let Some((recorder, tap)) = &mut self.recorder {
            // Handed over, never waited for.
            tap.tap(recorder, &mut self.state, &self.ingest, now_ms);
        }
        let changed = self.state.drain_changed();
        let slots: Vec<Slot> = if std::mem::take(&mut self.catch_up) {
            self.state.iter().map(|(slot, _)| slot).collect()
        } else {
            changed.clone()
        };
        let alerts = slots
            .into_iter()
            .filter_map(|slot| self.state.entity(slot))
            .filter(|e| e.entity_type == "Alert")
            .filter_map(|e| {
                crate::dispatch::alerts::of_feed(
                    &e.to_update(),
                    self.setup.feeds.get(e.feed as usize),
                )
            })
            .collect();
        if let Some(open_data) = &mut self.open_data {
            open_data.tick(&self.state, &self.ingest.schemas, now_ms);
        }
        let mut problem = self.publisher.publish_changes(&self.state, &changed).err();
        if self
            .last_status
            .is_none_or(|at| at.elapsed() >= STATUS_EVERY)
        {
            self.last_status = Some(Instant::now());
            if let Err(e) = self.publisher.publish_status(self.status()) {
                problem.get_or_insert(e);
            }
        }
        (alerts, problem)
    }

    /// The feeds as consoles see them, their health and quality.
    pub fn status(&self) -> Status {
        Status {
            feeds: self.setup.feeds.iter().map(shown_feed).collect(),
            health: self.ingest.health.clone(),
            quality: self.ingest.quality.clone(),
            entities: (0..self.setup.feeds.len())
                .map(|i| self.state.count_for_feed(i as FeedId) as u64)
                .collect(),
        }
    }

    /// Where the open data is served, when it is.
    pub fn open_data_addr(&self) -> Option<std::net::SocketAddr> {
        self.open_data.as_ref().map(|p| p.server().addr())
    }

    /// Frames and entities published so far.
    pub fn published(&self) -> (u64, u64) {
        (self.publisher.frames, self.publisher.entities_sent)
    }

    /// How putting the history in the hall's object store goes, when it runs.
    pub fn history_status(&self) -> Option<super::history::SyncStatus> {
        self.uploader.as_ref().map(|u| u.status())
    }

    /// What went wrong with the hall's history since last asked: the recorder's
    /// newest error (a full disk), else why putting it in the object store fails
    /// now; `None` when all is well.
    pub fn history_trouble(&mut self) -> Option<String> {
        if let Some((recorder, _)) = &self.recorder {
            let stats = recorder.stats();
            if stats.errors > self.history_errors_said {
                self.history_errors_said = stats.errors;
                return stats
                    .last_error
                    .map(|e| format!("the hall's history is not being recorded in full: {e}"));
            }
        }
        self.history_status()
            .and_then(|s| s.problem)
            .map(|e| format!("the hall's history is not reaching the consoles: {e}"))
    }
}

/// The hub's recorder into `history.dir` (a segment a minute, kept for the
/// retention) and the thread putting its segments in the hall's object store.
fn start_history(
    nats: &Nats,
    hall: &str,
    history: &HubHistory,
    feeds: &[FeedConfig],
) -> Result<(crate::history::Recorder, super::history::SyncThread), String> {
    let options = crate::history::HistoryOptions {
        retention_ms: history.retention.as_millis() as i64,
        segment_ms: super::history::HALL_SEGMENT_MS,
        ..Default::default()
    };
    let mut uploader =
        super::history::Uploader::open(nats, hall, &history.dir, history.retention, 1)?;
    let recorder = crate::history::Recorder::start(
        &history.dir,
        crate::history::record::feed_metas(feeds),
        options,
    )
    .map_err(|e| format!("{e:#}"))?;
    let nats = nats.clone();
    let thread = super::history::SyncThread::start("hall-history-upload", move || {
        uploader.sync(&nats).map(|_| ())
    })
    .map_err(|e| e.to_string())?;
    Ok((recorder, thread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::config::DispatchConfig;
    use crate::dispatch::dispatcher::Dispatcher;
    use crate::dispatch::service::ServiceOptions;
    use crate::hall::hub::{HubOptions, run};
    use crate::nats::NatsOptions;
    use crate::nats::testing::NatsServer;
    use crate::store::jetstream::{HallLogOptions, JetStreamLog};
    use std::collections::BTreeSet;

    fn connect(server: &NatsServer) -> Nats {
        Nats::connect(&NatsOptions {
            url: server.url(),
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        })
        .unwrap()
    }

    /// A console's view: its follower, applier and live state.
    struct Console {
        follower: Follower,
        applier: LiveApplier,
        state: LiveState,
    }

    impl Console {
        fn join(server: &NatsServer, map: &crate::map::CityMap) -> Console {
            Console {
                follower: Follower::start(&connect(server), "live").unwrap(),
                applier: LiveApplier::default(),
                state: LiveState::new(map.frame),
            }
        }
        fn pump(&mut self) {
            self.applier
                .pump(&self.follower.rx, &mut self.state, usize::MAX);
        }
        fn entities(&self) -> BTreeSet<(FeedId, String, i64)> {
            self.state
                .iter()
                .map(|(_, e)| (e.feed, e.id.clone(), e.as_of_ms))
                .collect()
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn the_hub_polls_once_and_every_console_shows_the_same_live_layers_and_alerts_raise_incidents_in_the_hall()
     {
        let server = NatsServer::start("live-layers");
        // A CAP agency on loopback, counting how often it is asked.
        let agency = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let base = format!(
            "http://user:secret@{}",
            agency.server_addr().to_ip().unwrap()
        );
        let asked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        {
            let (agency, asked) = (agency.clone(), asked.clone());
            let fire = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/cap/kallio-building-fire.xml");
            std::thread::spawn(move || {
                for request in agency.incoming_requests() {
                    asked.fetch_add(1, Ordering::Relaxed);
                    let body = std::fs::read(&fire).unwrap();
                    let _ = request.respond(tiny_http::Response::from_data(body));
                }
            });
        }
        let feeds = crate::feeds::config::parse_feeds(&format!(
            "[[feed]]\nname = 'roads'\nkind = 'sim'\ndomain = 'traffic'\n\n\
             [[feed]]\nname = 'fire-alerts'\nkind = 'cap'\nurl = '{base}/fire.xml'\n\
             domain = 'safety'\ninterval_s = 0.5\n"
        ))
        .unwrap();
        let map = Arc::new(crate::map::load_default().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let hub_history =
            std::env::temp_dir().join(format!("zhongshu-hub-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&hub_history);
        let hub = {
            let (nats, stop, map) = (connect(&server), stop.clone(), map.clone());
            let history = Some(HubHistory {
                dir: hub_history.clone(),
                retention: Duration::from_secs(86_400),
            });
            std::thread::spawn(move || {
                let options = HubOptions {
                    hall: "live".into(),
                    config: DispatchConfig::default_config(),
                    service: ServiceOptions {
                        api_addr: "127.0.0.1:0".into(),
                        ..Default::default()
                    },
                    replicas: 1,
                    crash_on_stop: false,
                    live: Some(LiveSetup {
                        feeds,
                        ranges: Vec::new(),
                        areas: Vec::new(),
                        map,
                        seed: 7,
                        open_data: None,
                        history,
                    }),
                };
                run(&nats, options, stop, |_| {}).unwrap();
            })
        };

        let mut first = Console::join(&server, &map);
        wait_for("the first console's live layers", || {
            first.pump();
            first.applier.snapshots >= 1
                && first.state.len() > 10
                && first.state.iter().any(|(_, e)| e.entity_type == "Alert")
        });
        // The hub's status: both feeds, the agency's credentials left out.
        wait_for("the hub's status", || {
            first.pump();
            first.applier.status.is_some()
        });
        let status = first.applier.status.clone().unwrap();
        let names: Vec<&str> = status.feeds.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["roads", "fire-alerts"]);
        let shown = status.feeds[1].url.as_deref().unwrap();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(status.health[1].polls_ok >= 1, "{:?}", status.health[1]);
        assert_eq!(status.entities[1], 1);
        assert!(status.entities[0] > 10);

        // A console that joins later gets the whole picture from a snapshot.
        std::thread::sleep(Duration::from_millis(1500));
        let mut second = Console::join(&server, &map);
        wait_for("the second console's snapshot", || {
            first.pump();
            second.pump();
            second.applier.snapshots >= 1
        });
        assert!(second.state.len() > 10);

        // The alert raised one incident in the hall's log (the hub's doing: consoles
        // raise nothing).
        let reader = connect(&server);
        let log = JetStreamLog::open(&reader, "live", &HallLogOptions::default()).unwrap();
        let mut book =
            Dispatcher::open_store(Box::new(log), DispatchConfig::default_config()).unwrap();
        wait_for("the fire's incident in the hall", || {
            book.sync().unwrap();
            book.book()
                .incidents
                .iter()
                .any(|i| i.kind == "building_fire")
        });

        // Stop the hub: once the last frames are in, both consoles hold the same.
        stop.store(true, Ordering::Relaxed);
        hub.join().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        first.pump();
        second.pump();
        assert_eq!(first.entities(), second.entities());
        // The hall's history, recorded by the hub, replays on a console that never
        // saw it live: the city at the end is what the consoles held.
        let mirror_dir =
            std::env::temp_dir().join(format!("zhongshu-hall-mirror-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&mirror_dir);
        let reader_nats = connect(&server);
        let mut mirror =
            crate::hall::history::Mirror::open(&reader_nats, "live", &mirror_dir).unwrap();
        assert!(mirror.sync(&reader_nats).unwrap().fetched >= 1);
        let history = crate::history::History::open(&mirror_dir).unwrap();
        let end = history
            .state_at(crate::clock::unix_ms_now())
            .unwrap_or_else(|e| panic!("{e:#}"));
        let ids = |it: Vec<String>| it.into_iter().collect::<BTreeSet<String>>();
        assert_eq!(
            ids(end.entities.keys().map(|(_, id)| id.clone()).collect()),
            ids(first.state.iter().map(|(_, e)| e.id.clone()).collect()),
            "{:?}",
            end.problems
        );
        assert!(
            end.entities
                .values()
                .any(|e| e.update.entity_type == "Alert")
        );
        let _ = std::fs::remove_dir_all(&mirror_dir);
        let _ = std::fs::remove_dir_all(&hub_history);
        // Polled by the hub, every half second.
        let polls = asked.load(Ordering::Relaxed);
        assert!(polls >= 2, "{polls}");
        assert_eq!(
            book.book()
                .incidents
                .iter()
                .filter(|i| i.kind == "building_fire")
                .count(),
            1
        );
    }

    /// Lists, units, sub-properties, decode notes and reject examples reach the
    /// consoles as the hub holds them.
    #[test]
    fn smart_data_models_entities_and_feed_health_travel_whole() {
        let decoded = crate::feeds::decode::decode_geojson(include_bytes!(
            "../../tests/data/sdm/air-quality-observed-geojson.json"
        ))
        .unwrap();
        let upserts: Vec<WireEntity> = decoded
            .updates
            .into_iter()
            .map(|update| WireEntity {
                feed: 0,
                received_at_ms: 1,
                update,
            })
            .collect();
        assert!(!upserts[0].update.units.is_empty() && !upserts[0].update.notes.is_empty());
        let frame = Frame {
            v: WIRE_VERSION,
            hub: "hub-1".into(),
            seq: 7,
            body: Body::Changes(Changes {
                upserts,
                removed: Vec::new(),
            }),
        };
        assert_eq!(decode(&encode(&frame)).unwrap(), frame);

        let rejects = crate::feeds::decode::decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/rejects-mixed.jsonld"
        ))
        .unwrap()
        .rejects;
        let mut health = FeedHealth::default();
        health.feed = "air".into();
        health.rejected = 5;
        health.reject_examples = rejects;
        health.notes = [("geometry_wrapped".to_string(), 2)].into_iter().collect();
        health.poll_errors = [("timeout".to_string(), 1)].into_iter().collect();
        let status = Frame {
            v: WIRE_VERSION,
            hub: "hub-1".into(),
            seq: 8,
            body: Body::Status(Status {
                feeds: Vec::new(),
                health: vec![health],
                quality: vec![FeedQuality {
                    rejected: 5,
                    ..FeedQuality::default()
                }],
                entities: vec![0],
            }),
        };
        assert_eq!(decode(&encode(&status)).unwrap(), status);
    }

    #[test]
    fn frames_are_split_by_bytes_and_an_entity_too_big_for_any_is_left_out_by_name() {
        let entity = |id: &str, text_len: usize| WireEntity {
            feed: 3,
            received_at_ms: 1,
            update: EntityUpdate {
                id: id.into(),
                entity_type: "Thing".into(),
                kind: crate::model::EntityKind::Generic,
                position: Some([24.94, 60.17]),
                line: None,
                observed_at_ms: None,
                fields: [(
                    "blob".to_string(),
                    crate::model::FieldValue::Text("x".repeat(text_len)),
                )]
                .into_iter()
                .collect(),
                units: Default::default(),
                notes: Vec::new(),
            },
        };
        // 999 entities of 2 KiB and one of 2 MiB: nothing fits one frame.
        let mut upserts: Vec<WireEntity> =
            (0..999).map(|i| entity(&format!("e{i}"), 2048)).collect();
        upserts.insert(500, entity("huge", 2 << 20));
        let changes = Changes {
            upserts,
            removed: vec![(3, "gone".into())],
        };
        let frame = |changes| Frame {
            v: WIRE_VERSION,
            hub: "h".into(),
            seq: 9,
            body: Body::Changes(changes),
        };
        let (parts, dropped) = split_by_bytes(changes, &frame);
        let frames: Vec<Vec<u8>> = parts.into_iter().map(|c| encode(&frame(c))).collect();
        assert!(frames.len() >= 3, "{}", frames.len());
        assert!(frames.iter().all(|f| f.len() <= MAX_FRAME_BYTES));
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].1, "huge");
        let mut ids = Vec::new();
        let mut removed = Vec::new();
        for bytes in &frames {
            let Body::Changes(c) = decode(bytes).unwrap().body else {
                panic!("not changes")
            };
            ids.extend(c.upserts.into_iter().map(|e| e.update.id));
            removed.extend(c.removed);
        }
        // Everything else, in order.
        let expected: Vec<String> = (0..999).map(|i| format!("e{i}")).collect();
        assert_eq!(ids, expected);
        assert_eq!(removed, [(3, "gone".to_string())]);
        let said = too_large(&dropped).unwrap();
        assert!(
            said.contains("\"huge\"") && said.contains("not sent"),
            "{said}"
        );
    }

    #[test]
    fn a_frame_of_another_wire_version_is_refused_by_name() {
        let frame = Frame {
            v: WIRE_VERSION + 1,
            hub: "hub-x".into(),
            seq: 1,
            body: Body::Changes(Changes::default()),
        };
        let err = decode(&encode(&frame)).unwrap_err();
        assert!(err.contains("wire version 2"), "{err}");
        assert!(decode(b"\x93garbage").is_err());
        let ok = Frame {
            v: WIRE_VERSION,
            ..frame
        };
        assert_eq!(decode(&encode(&ok)).unwrap(), ok);
    }
}
