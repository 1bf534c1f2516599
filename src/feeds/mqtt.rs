//! Push intake over MQTT (`kind = "mqtt"`): a thread per feed keeps a session with
//! the broker (QoS 1, a persistent session when the feed names a stable
//! `client_id`, reconnecting with backoff), subscribes
//! to the feed's topic filters at every connect, and decodes each message as the
//! feed says (`flat` JSON objects with a field map, NGSI-LD or NGSI-v2 entities,
//! GeoJSON). Messages are gathered for a few milliseconds into one batch, so a flood
//! of small messages costs the ingest one batch, not one channel message each.
//! What a push feed delivers goes through the same health, quality, reconciliation
//! and quarantine as a polled one; it never removes entities for lacking from a
//! message (entities expire by their cadence instead).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS, Transport};

use super::config::FeedConfig;
use super::decode::{FlatFields, decode_flat, decode_geojson, decode_ngsi_ld, decode_ngsi_v2};
use super::poll::FeedEvent;
use super::{Decoded, PayloadError};
use crate::clock::unix_ms_now;
use crate::model::FeedId;

/// How long messages are gathered into one batch, at most.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Messages in one batch, at most.
const BATCH_MESSAGES: usize = 5_000;
/// How often a connected feed says it is alive (its "poll" in health terms).
const ALIVE_EVERY: Duration = Duration::from_secs(1);
/// Longest wait before reconnecting.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Host, port and whether TLS is used, from `mqtt://HOST[:1883]` or
/// `mqtts://HOST[:8883]`.
pub fn broker_address(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false, 1883)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true, 8883)
    } else {
        return Err(format!(
            "url {url:?}: an MQTT broker is mqtt://HOST:PORT or mqtts://HOST:PORT"
        ));
    };
    if rest.contains('@') {
        return Err(format!(
            "url {:?}: put credentials in username and password (env: or file:), never in the URL",
            crate::http::redact_url(url)
        ));
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>()
                .map_err(|_| format!("url {url:?}: {p:?} is not a port"))?,
        ),
        _ => (rest, default_port),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("url {url:?}: no broker host"));
    }
    Ok((host.to_string(), port, tls))
}

/// How an MQTT feed's messages are read.
#[derive(Clone, Debug, PartialEq)]
pub enum MqttPayload {
    Flat(FlatFields),
    NgsiLd,
    NgsiV2,
    Geojson,
}

impl MqttPayload {
    pub fn from_config(feed: &FeedConfig) -> Result<Self, String> {
        let payload = match feed.payload.as_deref().unwrap_or("flat") {
            "flat" | "json" => {
                let mut fields = FlatFields::new(feed.untyped_entity_type());
                for (key, member) in &feed.field_map {
                    let slot = match key.as_str() {
                        "id" => &mut fields.id,
                        "type" => &mut fields.entity_type,
                        "lon" => &mut fields.lon,
                        "lat" => &mut fields.lat,
                        "observed_at" => &mut fields.observed_at,
                        other => {
                            return Err(format!(
                                "field_map: unknown key {other:?} (id, type, lon, lat, observed_at)"
                            ));
                        }
                    };
                    if member.trim().is_empty() {
                        return Err(format!("field_map: {key} names no member"));
                    }
                    *slot = member.clone();
                }
                MqttPayload::Flat(fields)
            }
            "ngsi-ld" => MqttPayload::NgsiLd,
            "ngsi-v2" => MqttPayload::NgsiV2,
            "geojson" => MqttPayload::Geojson,
            other => {
                return Err(format!(
                    "payload {other:?}: flat, ngsi-ld, ngsi-v2 or geojson"
                ));
            }
        };
        if !matches!(payload, MqttPayload::Flat(_)) && !feed.field_map.is_empty() {
            return Err("field_map is for payload = \"flat\"".into());
        }
        Ok(payload)
    }

    pub fn decode(&self, body: &[u8]) -> Result<Decoded, PayloadError> {
        match self {
            MqttPayload::Flat(fields) => decode_flat(body, fields),
            MqttPayload::NgsiLd => decode_ngsi_ld(body),
            MqttPayload::NgsiV2 => decode_ngsi_v2(body),
            MqttPayload::Geojson => decode_geojson(body),
        }
    }
}

fn options(feed: &FeedConfig) -> Result<MqttOptions, String> {
    let url = feed.url.as_deref().unwrap_or_default();
    let (host, port, tls) = broker_address(url)?;
    let client_id = feed.client_id.clone().unwrap_or_else(|| {
        format!(
            "zhongshu-{}-{}-{}",
            feed.name,
            crate::clock::unix_ms_now() % 1_000_000,
            std::process::id()
        )
    });
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(15))
        // With a stable client id the broker keeps the subscription and queues QoS 1
        // messages while the connection is down, across restarts too. Without one,
        // a clean session: a persistent one per process start would be left on the
        // broker, queueing for nobody, for ever.
        .set_clean_session(feed.client_id.is_none())
        // Read whatever the broker sends up to the hard limit, so an oversized message
        // is rejected (and acknowledged) here, never a connection dropped and the
        // same message delivered again at every reconnect.
        .set_max_packet_size(super::MAX_PAYLOAD_BYTES + 64 * 1024, 64 * 1024);
    match (&feed.username, &feed.password) {
        (Some(u), Some(p)) => {
            let u = super::config::header_value(u).map_err(|e| format!("username: {e}"))?;
            let p = super::config::header_value(p).map_err(|e| format!("password: {e}"))?;
            o.set_credentials(u, p);
        }
        (None, None) => {}
        _ => return Err("a username needs a password and a password a username".into()),
    }
    if tls {
        let transport = match &feed.ca {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("cannot read the CA {}: {e}", ca.display()))?;
                Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
                    ca: pem,
                    alpn: None,
                    client_auth: None,
                })
            }
            None => std::panic::catch_unwind(Transport::tls_with_default_config)
                .map_err(|_| "cannot load the system's certificates for TLS".to_string())?,
        };
        o.set_transport(transport);
    }
    Ok(o)
}

/// Runs one MQTT feed until `stop`: connects, subscribes, decodes and sends batches;
/// reconnects with backoff when the broker goes away.
pub fn listen_loop(id: FeedId, feed: FeedConfig, tx: Sender<FeedEvent>, stop: &AtomicBool) {
    let fail = |reason: &'static str, error: String, retry_in: Duration| {
        tx.send(FeedEvent::PollFailed {
            feed: id,
            at_ms: unix_ms_now(),
            reason,
            error: crate::http::redact_in_text(&error),
            retry_in,
        })
        .is_ok()
    };
    let payload = match MqttPayload::from_config(&feed) {
        Ok(p) => p,
        Err(e) => {
            fail("client", e, MAX_BACKOFF);
            return;
        }
    };
    let options = match options(&feed) {
        Ok(o) => o,
        Err(e) => {
            fail("client", e, MAX_BACKOFF);
            return;
        }
    };
    let (client, mut connection) = Client::new(options, 64);
    // The connection is driven on a thread of its own: a connect (TCP, TLS, CONNECT)
    // takes as long as the broker needs, never cut short by the batch window.
    let (notices, events) = std::sync::mpsc::channel::<Notice>();
    let quit = std::sync::Arc::new(AtomicBool::new(false));
    {
        let quit = quit.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("mqtt {}", feed.name))
            .spawn(move || {
                let mut failures = 0u32;
                for event in connection.iter() {
                    if quit.load(Ordering::Relaxed) {
                        break;
                    }
                    let notice = match event {
                        Ok(e) => {
                            if matches!(e, Event::Incoming(Packet::ConnAck(_))) {
                                failures = 0;
                            }
                            Notice::Event(e)
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            let backoff = Duration::from_millis(250)
                                .saturating_mul(1u32 << failures.min(7))
                                .min(MAX_BACKOFF);
                            if notices.send(Notice::Lost(e, backoff)).is_err() {
                                break;
                            }
                            super::poll::nap(backoff, &quit);
                            continue;
                        }
                    };
                    if notices.send(notice).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            fail(
                "client",
                format!("cannot start the MQTT thread: {e}"),
                MAX_BACKOFF,
            );
            return;
        }
    }
    struct Quit(std::sync::Arc<AtomicBool>);
    impl Drop for Quit {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _quit = Quit(quit);
    let mut batch = Decoded::default();
    let mut batch_bytes = 0usize;
    let mut batch_messages = 0usize;
    let mut batch_started: Option<Instant> = None;
    let mut last_alive = Instant::now() - ALIVE_EVERY;
    let mut bytes_since_alive = 0usize;
    let mut connected = false;
    while !stop.load(Ordering::Relaxed) {
        // Send what was gathered when its window is over (or on a quiet line).
        let due = batch_started.is_some_and(|t| t.elapsed() >= BATCH_WINDOW)
            || batch_messages >= BATCH_MESSAGES;
        if due {
            let decoded = std::mem::take(&mut batch);
            bytes_since_alive += batch_bytes;
            batch_bytes = 0;
            batch_messages = 0;
            batch_started = None;
            if tx
                .send(FeedEvent::Batch {
                    feed: id,
                    decoded,
                    received_at_ms: unix_ms_now(),
                })
                .is_err()
            {
                return;
            }
        }
        if connected && last_alive.elapsed() >= ALIVE_EVERY {
            last_alive = Instant::now();
            let _ = tx.send(FeedEvent::PollOk {
                feed: id,
                at_ms: unix_ms_now(),
                not_modified: bytes_since_alive == 0,
                complete: false,
                bytes: std::mem::take(&mut bytes_since_alive),
            });
        }
        let wait = match batch_started {
            Some(t) => BATCH_WINDOW.saturating_sub(t.elapsed()),
            None => Duration::from_millis(100),
        };
        match events.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(Notice::Event(Event::Incoming(Packet::ConnAck(_)))) => {
                connected = true;
                for topic in &feed.topics {
                    if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                        fail(
                            "client",
                            format!("cannot subscribe to {topic}: {e}"),
                            MAX_BACKOFF,
                        );
                    }
                }
            }
            Ok(Notice::Event(Event::Incoming(Packet::Publish(p)))) => {
                // One device's bad message is a reject of that message (named by
                // its topic), counted with the feed's items: never the connection's
                // failure, so other devices go on.
                let decoded = if p.payload.len() > feed.max_payload_bytes {
                    Err(PayloadError::TooLarge {
                        size: p.payload.len(),
                        limit: feed.max_payload_bytes,
                    })
                } else {
                    payload.decode(&p.payload).map(|mut d| {
                        super::decode::positions_to_wgs84(&mut d, feed.coords);
                        d
                    })
                };
                match decoded {
                    Ok(d) => {
                        batch.updates.extend(d.updates);
                        batch.rejects.extend(d.rejects);
                        batch.withheld.extend(d.withheld);
                    }
                    Err(e) => batch.rejects.push(crate::model::Reject {
                        reason: crate::model::RejectReason::Unreadable,
                        item_id: Some(p.topic.clone()),
                        path: None,
                        detail: format!("message on {}: {e}", p.topic),
                    }),
                }
                batch_bytes += p.payload.len();
                batch_messages += 1;
                batch_started.get_or_insert_with(Instant::now);
            }
            Ok(Notice::Event(Event::Incoming(Packet::SubAck(ack)))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if refused {
                    fail(
                        "client",
                        "the broker refused a subscription (topics): check the user's ACL".into(),
                        MAX_BACKOFF,
                    );
                }
            }
            Ok(Notice::Event(_)) => {}
            Ok(Notice::Lost(e, backoff)) => {
                connected = false;
                let reason = match &e {
                    rumqttc::ConnectionError::NetworkTimeout => "timeout",
                    rumqttc::ConnectionError::ConnectionRefused(_) => "client",
                    _ => "connect",
                };
                let url = feed.url.as_deref().unwrap_or_default();
                if !fail(reason, format!("broker {url}: {e}"), backoff) {
                    return;
                }
            }
            // Nothing within the wait: loop to send what is due.
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
    let _ = client.try_disconnect();
}

/// What the connection's thread tells the feed's loop.
enum Notice {
    Event(Event),
    /// The connection was lost (or could not be made); it is tried again after the
    /// backoff.
    Lost(rumqttc::ConnectionError, Duration),
}

/// A real `mosquitto` for tests: on 127.0.0.1, a random port; killed on drop.
pub mod testing {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct Mosquitto {
        child: Option<Child>,
        pub port: u16,
        dir: std::path::PathBuf,
        extra: String,
    }

    impl Mosquitto {
        pub fn start(name: &str) -> Self {
            Self::start_with(name, "")
        }

        /// With more settings for the listener (TLS files, …).
        pub fn start_with(name: &str, extra: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "zhongshu-mqtt-{name}-{}-{}",
                std::process::id(),
                crate::clock::unix_ms_now()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut m = Self {
                child: None,
                port: crate::nats::testing::free_port(),
                dir,
                extra: extra.to_string(),
            };
            m.launch();
            m
        }

        pub fn url(&self) -> String {
            format!("mqtt://127.0.0.1:{}", self.port)
        }

        fn launch(&mut self) {
            let conf = self.dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    // `user root`: run as root (CI), it would drop to a `mosquitto`
                    // user that cannot read the test's files; no effect otherwise.
                    "user root\nlistener {} 127.0.0.1\nallow_anonymous true\npersistence false\n{}\n",
                    self.port, self.extra
                ),
            )
            .unwrap();
            let child = Command::new(mosquitto_binary())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "mosquitto is not installed: run the test command, scripts/test.sh, which installs it",
                );
            self.child = Some(child);
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("mosquitto did not listen on {} within 10 s", self.port);
        }

        pub fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }

        /// Starts it again on the same port.
        pub fn restart(&mut self) {
            self.kill();
            self.launch();
        }
    }

    impl Drop for Mosquitto {
        fn drop(&mut self) {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Debian installs it in /usr/sbin, often not on a user's PATH.
    fn mosquitto_binary() -> String {
        for p in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
            if std::path::Path::new(p).exists() {
                return p.into();
            }
        }
        "mosquitto".into()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::mpsc::Receiver;

    use super::testing::Mosquitto;
    use super::*;
    use crate::feeds::FieldValue;
    use crate::feeds::config::parse_feeds;
    use crate::feeds::poll::Pollers;

    /// A device: publishes at QoS 1 from its own client.
    struct Device {
        client: Client,
        stop: std::sync::Arc<AtomicBool>,
    }

    impl Device {
        fn connect(port: u16, extra: impl FnOnce(&mut MqttOptions)) -> Device {
            let mut o = MqttOptions::new(
                format!("device-{}-{}", std::process::id(), unix_ms_now()),
                "127.0.0.1",
                port,
            );
            o.set_keep_alive(Duration::from_secs(5));
            extra(&mut o);
            let (client, mut connection) = Client::new(o, 100);
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Ok(Err(_)) = connection.recv_timeout(Duration::from_millis(50)) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
            Device { client, stop }
        }

        fn say(&self, topic: &str, body: &str) {
            let _ =
                self.client
                    .try_publish(topic, QoS::AtLeastOnce, false, body.as_bytes().to_vec());
        }
    }

    impl Drop for Device {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    #[derive(Default)]
    struct Seen {
        values: HashMap<String, (Option<FieldValue>, Option<[f64; 2]>)>,
        failures: Vec<(String, String)>,
        rejects: usize,
        reject_details: Vec<String>,
        alive: usize,
    }

    impl Seen {
        fn take(&mut self, rx: &Receiver<FeedEvent>) {
            while let Ok(e) = rx.recv_timeout(Duration::from_millis(20)) {
                match e {
                    FeedEvent::Batch { decoded, .. } => {
                        self.rejects += decoded.rejects.len();
                        self.reject_details
                            .extend(decoded.rejects.iter().map(|r| r.detail.clone()));
                        for u in decoded.updates {
                            self.values
                                .insert(u.id.clone(), (u.fields.get("pm25").cloned(), u.position));
                        }
                    }
                    FeedEvent::PollFailed { reason, error, .. } => {
                        self.failures.push((reason.to_string(), error))
                    }
                    FeedEvent::PollOk { .. } => self.alive += 1,
                    FeedEvent::Refused { .. } => {}
                }
            }
        }

        /// Takes events until `done`, saying `say` every 200 ms (a device repeats).
        fn until(
            &mut self,
            rx: &Receiver<FeedEvent>,
            what: &str,
            mut say: impl FnMut(),
            done: impl Fn(&Seen) -> bool,
        ) {
            let until = Instant::now() + Duration::from_secs(20);
            let mut said = Instant::now() - Duration::from_secs(1);
            while !done(self) {
                assert!(Instant::now() < until, "not within 20 s: {what}");
                if said.elapsed() >= Duration::from_millis(200) {
                    said = Instant::now();
                    say();
                }
                self.take(rx);
            }
        }
    }

    fn feed(toml: &str) -> (Pollers, Receiver<FeedEvent>) {
        let feeds = parse_feeds(toml).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        (Pollers::start(&feeds, Default::default(), tx), rx)
    }

    #[test]
    fn devices_publishing_flat_json_land_and_the_feed_reconnects_after_the_broker_restarts() {
        let mut broker = Mosquitto::start("flat");
        let (pollers, rx) = feed(&format!(
            "[[feed]]\nname='air-devices'\nkind='mqtt'\nurl='{}'\ntopics=['city/air/#']\ndomain='ecology'\nentity_type='AirQualityObserved'\nfield_map={{ id = 'deviceId', lon = 'lng', observed_at = 'ts' }}\n",
            broker.url()
        ));
        let device = Device::connect(broker.port, |_| {});
        let mut seen = Seen::default();
        seen.until(
            &rx,
            "the first reading",
            || {
                device.say(
                    "city/air/aq-7",
                    &format!(
                        r#"{{"deviceId":"aq-7","lng":24.94,"lat":"60.17","pm25":12.5,"ts":{}}}"#,
                        unix_ms_now() / 1000
                    ),
                )
            },
            |s| s.values.contains_key("aq-7"),
        );
        let (pm25, position) = seen.values["aq-7"].clone();
        assert_eq!(pm25, Some(FieldValue::Number(12.5)));
        let [lon, lat] = position.expect("a position");
        assert!((lon - 24.94).abs() < 1e-9 && (lat - 60.17).abs() < 1e-9);
        // An array in one message; an item without an id is a reject; garbage on a
        // topic is a failure naming the topic, and the feed goes on.
        device.say(
            "city/air/batch",
            r#"[{"deviceId":"aq-8","lng":24.95,"lat":60.18,"pm25":3},{"lng":1,"lat":2}]"#,
        );
        device.say("city/air/broken", "{not json");
        seen.until(
            &rx,
            "the array and the garbage",
            || {},
            |s| s.values.contains_key("aq-8") && s.rejects >= 2,
        );
        // A device's garbage is a reject naming its topic, not the connection's
        // failure.
        assert!(
            seen.reject_details
                .iter()
                .any(|d| d.contains("city/air/broken") && d.contains("not JSON")),
            "{:?}",
            seen.reject_details
        );
        assert!(seen.failures.is_empty(), "{:?}", seen.failures);
        assert!(seen.alive >= 1, "a connected feed says it is alive");
        // A flat message with a GeoJSON location of its own keeps it.
        seen.until(
            &rx,
            "a message with its own location",
            || {
                device.say(
                    "city/air/aq-9",
                    r#"{"deviceId":"aq-9","location":{"type":"Point","coordinates":[24.96,60.19]},"pm25":7}"#,
                )
            },
            |s| s.values.get("aq-9").is_some_and(|v| v.1.is_some()),
        );

        // The broker goes away and comes back on the same port: the feed says so,
        // reconnects with backoff, subscribes again and takes new readings.
        broker.restart();
        let device = Device::connect(broker.port, |_| {});
        seen.failures.clear();
        seen.until(
            &rx,
            "a reading after the restart",
            || {
                device.say(
                    "city/air/aq-7",
                    r#"{"deviceId":"aq-7","lng":24.94,"lat":60.17,"pm25":40}"#,
                )
            },
            |s| {
                s.values
                    .get("aq-7")
                    .is_some_and(|v| v.0 == Some(FieldValue::Number(40.0)))
            },
        );
        assert!(
            seen.failures.iter().any(|(r, _)| r == "connect"),
            "the lost connection was said: {:?}",
            seen.failures
        );
        pollers.stop();
    }

    #[test]
    fn a_broker_with_tls_and_passwords_takes_the_right_user_only() {
        let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
        let dir = std::env::temp_dir().join(format!("zhongshu-mqtt-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passwords = dir.join("passwords");
        let made = std::process::Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwords)
            .args(["sensor-hub", "s3cret pass"])
            .status()
            .expect("mosquitto_passwd (installed with mosquitto)");
        assert!(made.success());
        let broker = Mosquitto::start_with(
            "tls",
            &format!(
                "allow_anonymous false\npassword_file {}\ncertfile {}\nkeyfile {}\n",
                passwords.display(),
                tls.join("cert.pem").display(),
                tls.join("key.pem").display()
            ),
        );
        let secret = dir.join("mqtt-password");
        std::fs::write(&secret, "s3cret pass\n").unwrap();
        let toml = |password: &str| {
            format!(
                "[[feed]]\nname='secure'\nkind='mqtt'\nurl='mqtts://127.0.0.1:{}'\ntopics=['s/#']\ndomain='ecology'\nusername='sensor-hub'\npassword='{password}'\nca='{}'\n",
                broker.port,
                tls.join("cert.pem").display()
            )
        };
        // The wrong password is refused by the broker, and said.
        let (wrong, rx) = feed(&toml("guess"));
        let mut seen = Seen::default();
        seen.until(&rx, "the refusal", || {}, |s| !s.failures.is_empty());
        assert!(
            seen.failures[0].1.to_lowercase().contains("refused")
                || seen.failures[0].1.to_lowercase().contains("not authorized"),
            "{:?}",
            seen.failures
        );
        wrong.stop();
        // The right one, from a file, over TLS.
        let (pollers, rx) = feed(&toml(&format!("file:{}", secret.display())));
        let device = Device::connect(broker.port, |o| {
            o.set_credentials("sensor-hub", "s3cret pass");
            o.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca: std::fs::read(tls.join("cert.pem")).unwrap(),
                    alpn: None,
                    client_auth: None,
                },
            ));
        });
        let mut seen = Seen::default();
        seen.until(
            &rx,
            "a reading over TLS",
            || device.say("s/1", r#"{"id":"s1","lon":24.9,"lat":60.1,"pm25":1}"#),
            |s| s.values.contains_key("s1"),
        );
        pollers.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stable_client_id_gets_what_was_published_while_zhongshu_was_away() {
        let broker = Mosquitto::start("session");
        let toml = format!(
            "[[feed]]\nname='meters'\nkind='mqtt'\nurl='{}'\ntopics=['meters/#']\ndomain='utilities'\nclient_id='zhongshu-test-{}'\n",
            broker.url(),
            std::process::id()
        );
        let device = Device::connect(broker.port, |_| {});
        // Connected and subscribed once: the broker keeps the session.
        let (pollers, rx) = feed(&toml);
        let mut seen = Seen::default();
        seen.until(
            &rx,
            "the first reading",
            || device.say("meters/m0", r#"{"id":"m0","lon":24.9,"lat":60.1,"pm25":0}"#),
            |s| s.values.contains_key("m0"),
        );
        pollers.stop();
        // Published while the feed is away …
        for i in 1..=3 {
            device.say(
                &format!("meters/m{i}"),
                &format!(r#"{{"id":"m{i}","lon":24.9,"lat":60.1,"pm25":{i}}}"#),
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        // … is delivered when it comes back under the same id.
        let (pollers, rx) = feed(&toml);
        let mut back = Seen::default();
        back.until(
            &rx,
            "the readings queued meanwhile",
            || {},
            |s| (1..=3).all(|i| s.values.contains_key(&format!("m{i}"))),
        );
        pollers.stop();
    }

    #[test]
    fn mqtt_feeds_are_checked_when_the_file_is_read() {
        let bad = |extra: &str| {
            parse_feeds(&format!(
                "[[feed]]\nname='m'\nkind='mqtt'\ndomain='ecology'\n{extra}"
            ))
            .unwrap_err()
        };
        assert!(bad("url='mqtt://h:1883'\n").contains("topics"));
        assert!(bad("url='http://h'\ntopics=['a']\n").contains("mqtt://"));
        assert!(bad("url='mqtt://u:p@h'\ntopics=['a']\n").contains("never in the URL"));
        assert!(bad("url='mqtt://h'\ntopics=['a/#/b']\n").contains("topic filter"));
        assert!(bad("url='mqtt://h'\ntopics=['a']\npayload='xml'\n").contains("payload"));
        assert!(
            bad("url='mqtt://h'\ntopics=['a']\nfield_map={ x = 'y' }\n").contains("unknown key")
        );
        let e = parse_feeds(
            "[[feed]]\nname='g'\nkind='geojson'\nurl='http://h'\ndomain='ecology'\ntopics=['a']\n",
        )
        .unwrap_err();
        assert!(e.contains("for kind mqtt"), "{e}");
        assert_eq!(
            broker_address("mqtts://broker.city.example").unwrap(),
            ("broker.city.example".into(), 8883, true)
        );
        assert_eq!(
            broker_address("mqtt://127.0.0.1:1884/").unwrap(),
            ("127.0.0.1".into(), 1884, false)
        );
    }
}
