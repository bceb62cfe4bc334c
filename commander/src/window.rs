//! Time windows: the hours a target may run or an agent may take work
//! (`--window 01:00-06:00`), in the commander's local time. A window may
//! wrap past midnight (`22:00-06:00`); the empty window means any time.
//! Only the scheduler consults them, with the time it is given (so tests
//! inject it).

use crate::{CommanderError, Result};

/// A daily window, as minutes after local midnight: open at `start`, closed
/// from `end` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
}

const DAY_MINUTES: u16 = 24 * 60;

impl Window {
    /// Parses `HH:MM-HH:MM`; `""` or `always` is None (any time).
    pub fn parse(text: &str) -> Result<Option<Self>> {
        let t = text.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("always") {
            return Ok(None);
        }
        let bad = || {
            CommanderError::Invalid(format!(
                "window {text:?} is not HH:MM-HH:MM (e.g. 01:00-06:00, or 22:00-06:00 across midnight; `always` clears it)"
            ))
        };
        let (a, b) = t.split_once('-').ok_or_else(bad)?;
        let minutes = |s: &str| -> Option<u16> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            // Checked before the product: `then_some` would compute it for any
            // hour (a u16 overflow on `99999:00`, found by fuzzing).
            if h < 24 && m < 60 {
                Some(h * 60 + m)
            } else {
                None
            }
        };
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(CommanderError::Invalid(format!(
                "window {text:?} opens and closes at the same minute: give a span, or `always`"
            )));
        }
        Ok(Some(Self { start, end }))
    }

    /// Whether the window is open at `minute` after local midnight.
    pub fn contains(&self, minute: u16) -> bool {
        let m = minute % DAY_MINUTES;
        if self.start < self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// Minutes after local midnight at `now_ms` (Unix ms), in the system's time
/// zone (UTC when it cannot be read).
pub fn local_minute(now_ms: i64) -> u16 {
    let zoned =
        jiff::Timestamp::from_millisecond(now_ms).map(|t| t.to_zoned(jiff::tz::TimeZone::system()));
    match zoned {
        Ok(z) => (z.hour() as u16) * 60 + z.minute() as u16,
        Err(_) => 0,
    }
}

/// Whether a stored window (as text; empty = always) is open at `now_ms`.
/// A window that no longer parses is treated as open, and logged: better a
/// run at the wrong hour than a target that silently never runs.
pub fn open_at(window: &str, now_ms: i64) -> bool {
    match Window::parse(window) {
        Ok(None) => true,
        Ok(Some(w)) => w.contains(local_minute(now_ms)),
        Err(e) => {
            tracing::warn!("{e}; treating it as always open");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `proto` fuzz target (fuzz/regressions/proto/window_hour_overflow):
    /// an hour past u16/60 overflowed before the range check refused it.
    #[test]
    fn regression_fuzz_proto_window_hour_overflow() {
        for text in ["99999:00-01:00", "01:00-1093:00", "65535:65535-0:0"] {
            assert!(Window::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn windows_open_and_close_on_the_minute_and_wrap_past_midnight() {
        let night = Window::parse("22:00-06:00").expect("parse").expect("some");
        let offpeak = Window::parse("01:00-06:30").expect("parse").expect("some");
        for (minute, in_night, in_offpeak) in [
            (0, true, false),
            (59, true, false),
            (60, true, true),
            (359, true, true),
            (360, false, true),
            (389, false, true),
            (390, false, false),
            (1319, false, false),
            (1320, true, false),
            (1439, true, false),
        ] {
            assert_eq!(night.contains(minute), in_night, "22-06 at {minute}");
            assert_eq!(offpeak.contains(minute), in_offpeak, "01-06:30 at {minute}");
        }
        assert_eq!(night.to_string(), "22:00-06:00");
        assert_eq!(Window::parse("always").expect("parse"), None);
        assert_eq!(Window::parse("").expect("parse"), None);
        for bad in ["1-2", "25:00-01:00", "01:00", "01:00-01:00", "ab:cd-01:00"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }
}
