//! Giving freed memory back to the system. A long-running hub's heap keeps the
//! high-water mark of every burst (payloads that queued while the machine was busy,
//! a storm's backlog) unless told to return what it has freed: glibc's allocator
//! keeps freed pages in its arenas. [`Trimmer`] returns them once in a while, on its
//! own thread, so resident memory follows what is live, not the worst minute so far.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the app, the hub and the drills give freed memory back.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Returns the allocator's free pages to the system; whether any were returned.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks and releases the allocator's free memory.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Caps the allocator's arenas at one per core (at least two), before any thread is
/// started. glibc gives threads up to eight arenas per core, and each keeps its own
/// free pages and fragments: a process that starts short-lived threads all day (a
/// reconciliation pass every two seconds, HTTP handlers) spreads its heap over many of
/// them, and resident memory creeps up with nothing more being live. Call it first
/// thing in `main`; whether the cap was set.
pub fn few_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = cores.clamp(2, 64) as libc::c_int;
        // SAFETY: mallopt only sets a tunable of the allocator; it is called before
        // the process starts threads.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every `every` on a thread of its own until dropped.
pub struct Trimmer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Trimmer {
    pub fn start(every: Duration) -> Trimmer {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("memory-trim".into())
                .spawn(move || {
                    loop {
                        std::thread::park_timeout(every);
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        trim();
                    }
                })
                .ok()
        };
        Trimmer { stop, thread }
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn a_burst_freed_is_given_back() {
        // Measured in a process of its own: other tests allocate meanwhile.
        if std::env::var_os("ZHONGSHU_TRIM_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "memory::tests::a_burst_freed_is_given_back",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("ZHONGSHU_TRIM_CHILD", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "{text}");
            return;
        }
        // 40 MB in small blocks (as payloads and their parsed values are), then freed
        // but for every 64th block, which pins the heap's pages without a trim.
        let mut blocks: Vec<Vec<u8>> = (0..40_000).map(|i| vec![i as u8; 1_000]).collect();
        let mut kept = Vec::new();
        for (i, b) in blocks.drain(..).enumerate() {
            if i % 64 == 63 {
                kept.push(b);
            }
        }
        drop(blocks);
        let before = crate::bench::rss_anon_bytes().unwrap();
        let trimmer = Trimmer::start(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(300));
        drop(trimmer);
        let after = crate::bench::rss_anon_bytes().unwrap();
        assert!(
            after + 20_000_000 < before,
            "{before} → {after} bytes of own memory"
        );
        assert_eq!(kept.len(), 625);
    }
}
