//! One hall, many consoles, one truth: who is where in a hall on NATS JetStream.
//!
//! - The **lease** says which `zhongshu hub` is active: a key in a JetStream KV bucket
//!   whose entries expire after [`LEASE_TTL`]; the active hub renews it every second
//!   with a compare-and-set on its revision, and a standby takes it with a create
//!   (which succeeds only once the key is gone) when the active hub stops renewing.
//! - **Members** (hubs, active or standby, and consoles) announce themselves in a
//!   second bucket every few seconds; what is not renewed expires, so the list is
//!   who is there now. `zhongshu hall-status` prints both.

pub mod bench;
pub mod history;
pub mod hub;
pub mod link;
pub mod live;

use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::nats::Nats;

/// How long the active hub's lease lasts without renewal: a standby takes over
/// within this (plus one poll) after the active hub stops.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// How long a member's announcement lasts without renewal.
pub const MEMBER_TTL: Duration = Duration::from_secs(7);

const ACTIVE_KEY: &str = "active";

fn lease_bucket(hall: &str) -> String {
    format!("zhongshu_{hall}_lease")
}

fn members_bucket(hall: &str) -> String {
    format!("zhongshu_{hall}_members")
}

/// Opens (or creates) a KV bucket whose entries expire after `ttl`.
fn bucket(
    nats: &Nats,
    name: String,
    ttl: Duration,
    replicas: usize,
    create: bool,
) -> Result<kv::Store, String> {
    let js = nats.js.clone();
    nats.call("open the hall's key-value bucket", async move {
        if let Ok(store) = js.get_key_value(&name).await {
            return Ok(store);
        }
        if !create {
            return Err(format!("no bucket {name}"));
        }
        let config = kv::Config {
            bucket: name.clone(),
            history: 1,
            max_age: ttl,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        match js.create_key_value(config).await {
            Ok(s) => Ok(s),
            Err(first) => js
                .get_key_value(&name)
                .await
                .map_err(|_| format!("cannot create bucket {name}: {first}")),
        }
    })
}

/// What a member of the hall says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// `hub` or `console`.
    pub kind: String,
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// For a hub: `active` or `standby`. For a console: the signed-in user's role.
    pub state: String,
    /// The signed-in user (consoles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The incident the user is working on (a soft claim, not a lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_on: Option<String>,
    /// Where the hub's department status API listens (active hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// Since when in this state (Unix ms).
    pub since_ms: i64,
    pub last_seen_ms: i64,
}

/// This machine's name, for members' announcements.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A member id unique to this process.
pub fn new_member_id(kind: &str) -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::getrandom(&mut bytes);
    format!(
        "{kind}-{}-{}-{:02x}{:02x}{:02x}{:02x}",
        host_name(),
        std::process::id(),
        bytes[0],
        bytes[1],
        bytes[2],
        bytes[3]
    )
    .replace(
        |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "_",
    )
}

/// The active hub's lease.
pub struct Lease {
    nats: Nats,
    store: kv::Store,
    id: String,
    value: bytes::Bytes,
    revision: Option<u64>,
}

impl Lease {
    pub fn open(nats: &Nats, hall: &str, id: &str, replicas: usize) -> Result<Self, String> {
        Self::open_with(nats, hall, id, replicas, true)
    }

    /// `create`: make the bucket when the hall has none (`false` to only look).
    pub fn open_with(
        nats: &Nats,
        hall: &str,
        id: &str,
        replicas: usize,
        create: bool,
    ) -> Result<Self, String> {
        Ok(Self {
            nats: nats.clone(),
            store: bucket(nats, lease_bucket(hall), LEASE_TTL, replicas, create)?,
            id: id.to_string(),
            value: bytes::Bytes::from(id.to_string()),
            revision: None,
        })
    }

    pub fn held(&self) -> bool {
        self.revision.is_some()
    }

    /// Takes the lease if nobody holds it. Returns whether this hub holds it now.
    pub fn try_acquire(&mut self) -> Result<bool, String> {
        if self.revision.is_some() {
            return self.renew();
        }
        let store = self.store.clone();
        let value = self.value.clone();
        let got = self.nats.call("take the hub lease", async move {
            match store.create(ACTIVE_KEY, value).await {
                Ok(rev) => Ok(Some(rev)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })?;
        self.revision = got;
        Ok(got.is_some())
    }

    /// Renews the lease; `false` when it was lost (expired and taken by another).
    pub fn renew(&mut self) -> Result<bool, String> {
        let Some(rev) = self.revision else {
            return Ok(false);
        };
        let store = self.store.clone();
        let value = self.value.clone();
        let renewed = self.nats.call("renew the hub lease", async move {
            match store.update(ACTIVE_KEY, value, rev).await {
                Ok(rev) => Ok(Some(rev)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        });
        match renewed {
            Ok(Some(rev)) => {
                self.revision = Some(rev);
                Ok(true)
            }
            Ok(None) => {
                self.revision = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Stops counting on the lease without a word to the server (it is out of
    /// reach): the next look tries to take it afresh.
    pub fn forget(&mut self) {
        self.revision = None;
    }

    /// Gives the lease up at once (a clean stop), so a standby need not wait.
    pub fn release(&mut self) {
        if let Some(rev) = self.revision.take() {
            let store = self.store.clone();
            let _ = self.nats.call("release the hub lease", async move {
                store
                    .delete_expect_revision(ACTIVE_KEY, Some(rev))
                    .await
                    .map_err(|e| e.to_string())
            });
        }
    }

    /// Who holds the lease now.
    pub fn holder(&self) -> Result<Option<String>, String> {
        let store = self.store.clone();
        self.nats.call("read the hub lease", async move {
            store
                .get(ACTIVE_KEY)
                .await
                .map(|v| v.map(|b| String::from_utf8_lossy(&b).to_string()))
                .map_err(|e| e.to_string())
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Announcements of the hall's members.
#[derive(Clone)]
pub struct Members {
    nats: Nats,
    store: kv::Store,
}

impl Members {
    pub fn open(nats: &Nats, hall: &str, replicas: usize) -> Result<Self, String> {
        Self::open_with(nats, hall, replicas, true)
    }

    /// `create`: make the bucket when the hall has none (`false` to only look).
    pub fn open_with(
        nats: &Nats,
        hall: &str,
        replicas: usize,
        create: bool,
    ) -> Result<Self, String> {
        Ok(Self {
            nats: nats.clone(),
            store: bucket(nats, members_bucket(hall), MEMBER_TTL, replicas, create)?,
        })
    }

    /// Says (again) that `member` is here.
    pub fn announce(&self, member: &Member) -> Result<(), String> {
        let store = self.store.clone();
        let key = format!("{}.{}", member.kind, member.id);
        let value = bytes::Bytes::from(serde_json::to_vec(member).expect("members serialize"));
        self.nats.call("announce in the hall", async move {
            store
                .put(key, value)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    /// Says `member` has left.
    pub fn leave(&self, member: &Member) {
        let store = self.store.clone();
        let key = format!("{}.{}", member.kind, member.id);
        let _ = self.nats.call("leave the hall", async move {
            store.purge(key).await.map_err(|e| e.to_string())
        });
    }

    /// Everyone announced and not expired.
    pub fn list(&self) -> Result<Vec<Member>, String> {
        let store = self.store.clone();
        self.nats.call("list the hall's members", async move {
            let mut keys = store.keys().await.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            let mut names = Vec::new();
            while let Some(k) = keys.next().await {
                names.push(k.map_err(|e| e.to_string())?);
            }
            for k in names {
                if let Ok(Some(v)) = store.get(k).await
                    && let Ok(m) = serde_json::from_slice::<Member>(&v)
                {
                    out.push(m);
                }
            }
            out.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
            Ok(out)
        })
    }
}
