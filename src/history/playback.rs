//! The one clock's playback: live (following now), paused at an instant, or playing
//! the recording forwards or backwards at a speed. Plain state, moved by the frame's
//! elapsed time; the window's timeline draws it and the views read [`Playback::shown_ms`].

/// What the clock is doing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Following now: the city as it is.
    Live,
    /// Stopped at an instant of the past.
    Paused,
    /// Moving through the past at `speed` times real time (negative: backwards).
    Playing { speed: f64 },
}

/// The speeds offered, each forwards and backwards.
pub const SPEEDS: [f64; 6] = [1.0, 10.0, 60.0, 600.0, 1800.0, 3600.0];

/// Where the clock stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Playback {
    mode: Mode,
    /// The instant shown when not live (ms, fractional so slow speeds add up).
    at_ms: f64,
}

impl Default for Playback {
    fn default() -> Self {
        Self::live()
    }
}

impl Playback {
    pub fn live() -> Self {
        Self {
            mode: Mode::Live,
            at_ms: 0.0,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// True while the past is shown (paused or playing): the views say so and
    /// commands are disabled.
    pub fn is_past(&self) -> bool {
        self.mode != Mode::Live
    }

    /// The instant the views show.
    pub fn shown_ms(&self, now_ms: i64) -> i64 {
        match self.mode {
            Mode::Live => now_ms,
            _ => self.at_ms.round() as i64,
        }
    }

    /// Stops at the instant shown (now, when live).
    pub fn pause(&mut self, now_ms: i64) {
        self.at_ms = self.shown_ms(now_ms) as f64;
        self.mode = Mode::Paused;
    }

    /// Plays at `speed` from the instant shown. Forwards from live is live already.
    pub fn play(&mut self, speed: f64, now_ms: i64) {
        if !speed.is_finite() || speed == 0.0 {
            self.pause(now_ms);
            return;
        }
        if self.mode == Mode::Live && speed > 0.0 {
            return;
        }
        self.at_ms = self.shown_ms(now_ms) as f64;
        self.mode = Mode::Playing { speed };
    }

    /// Back to now.
    pub fn go_live(&mut self) {
        self.mode = Mode::Live;
    }

    /// Jumps to `t_ms`, kept within `[earliest_ms, now_ms]`; playing goes on from
    /// there, live stops there. At now or after, it is live again.
    pub fn seek(&mut self, t_ms: i64, earliest_ms: i64, now_ms: i64) {
        if t_ms >= now_ms {
            self.go_live();
            return;
        }
        self.at_ms = t_ms.max(earliest_ms.min(now_ms)) as f64;
        if self.mode == Mode::Live {
            self.mode = Mode::Paused;
        }
    }

    /// Moves the clock on by `dt_s` seconds of real time. Playing forwards into now
    /// goes live; playing backwards to `earliest_ms` stops there.
    pub fn tick(&mut self, dt_s: f64, earliest_ms: i64, now_ms: i64) {
        let Mode::Playing { speed } = self.mode else {
            return;
        };
        self.at_ms += dt_s.max(0.0) * 1000.0 * speed;
        if self.at_ms >= now_ms as f64 {
            self.go_live();
        } else if self.at_ms <= earliest_ms as f64 {
            self.at_ms = earliest_ms as f64;
            self.mode = Mode::Paused;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const EARLIEST: i64 = NOW - 3_600_000;

    #[test]
    fn live_shows_now_and_pausing_stops_there() {
        let mut p = Playback::live();
        assert!(!p.is_past());
        assert_eq!(p.shown_ms(NOW), NOW);
        p.pause(NOW);
        assert_eq!(p.mode(), Mode::Paused);
        assert!(p.is_past());
        // Time goes on; the paused view does not.
        p.tick(5.0, EARLIEST, NOW + 5_000);
        assert_eq!(p.shown_ms(NOW + 5_000), NOW);
    }

    #[test]
    fn playing_moves_at_its_speed_both_ways() {
        let mut p = Playback::live();
        p.seek(NOW - 600_000, EARLIEST, NOW);
        assert_eq!(p.mode(), Mode::Paused);
        p.play(60.0, NOW);
        p.tick(1.0, EARLIEST, NOW);
        assert_eq!(p.shown_ms(NOW), NOW - 600_000 + 60_000);
        p.play(-600.0, NOW);
        p.tick(0.5, EARLIEST, NOW);
        assert_eq!(p.shown_ms(NOW), NOW - 540_000 - 300_000);
        // Slow speeds add up over many short frames.
        p.play(1.0, NOW);
        for _ in 0..60 {
            p.tick(1.0 / 60.0, EARLIEST, NOW);
        }
        assert_eq!(p.shown_ms(NOW), NOW - 840_000 + 1_000);
    }

    #[test]
    fn forwards_into_now_goes_live_and_backwards_stops_at_the_start() {
        let mut p = Playback::live();
        p.seek(NOW - 10_000, EARLIEST, NOW);
        p.play(3600.0, NOW);
        p.tick(1.0, EARLIEST, NOW);
        assert_eq!(p.mode(), Mode::Live);
        // Backwards from live plays from now.
        p.play(-3600.0, NOW);
        assert_eq!(p.mode(), Mode::Playing { speed: -3600.0 });
        p.tick(2.0, EARLIEST, NOW);
        assert_eq!(p.mode(), Mode::Paused);
        assert_eq!(p.shown_ms(NOW), EARLIEST);
        // Forwards from live is live.
        p.go_live();
        p.play(10.0, NOW);
        assert_eq!(p.mode(), Mode::Live);
    }

    #[test]
    fn seeking_stays_within_the_recording_and_now_is_live() {
        let mut p = Playback::live();
        p.seek(EARLIEST - 99_000, EARLIEST, NOW);
        assert_eq!(p.shown_ms(NOW), EARLIEST);
        p.play(10.0, NOW);
        p.seek(NOW - 1_000, EARLIEST, NOW);
        assert_eq!(p.mode(), Mode::Playing { speed: 10.0 });
        p.seek(NOW + 1, EARLIEST, NOW);
        assert_eq!(p.mode(), Mode::Live);
        p.play(f64::NAN, NOW);
        assert_eq!(p.mode(), Mode::Paused);
    }
}
