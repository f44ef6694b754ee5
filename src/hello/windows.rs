//! Hellos per key per tumbling event-time window: the windowed fold, its byte layouts, and
//! the rules of stream time. Pure code, no I/O, like [`crate::hello::domain`].
//!
//! Time is the record timestamp. Each partition keeps its *stream time*: the largest
//! timestamp it has processed. A window `[start, start + size)` accepts records until stream
//! time reaches `end + grace`; a record for a window already closed is late and goes to the
//! dead-letter topic (Kafka Streams drops it with a metric). A window is deleted once stream
//! time passes `end + retention`. Stream time is itself a changelog record, so a restored
//! partition judges lateness exactly as the one that crashed would have.

use std::time::Duration;

use serde::Serialize;

use crate::hello::domain::Outcome;

/// The window settings of `[windows]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub grace_ms: i64,
    pub retention_ms: i64,
    pub emit: Emit,
}

/// When a window reaches `hello-windows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Emit {
    /// Every change of a window (Kafka Streams' default).
    Update,
    /// Once, when stream time passes its end plus grace (`suppress(untilWindowCloses)`).
    Close,
}

impl Emit {
    pub fn as_str(self) -> &'static str {
        match self {
            Emit::Update => "update",
            Emit::Close => "close",
        }
    }
}

impl WindowSpec {
    pub fn size(&self) -> Duration {
        Duration::from_millis(self.size_ms as u64)
    }

    /// The start of the window holding `timestamp`.
    pub fn start_of(&self, timestamp: i64) -> i64 {
        timestamp - timestamp.rem_euclid(self.size_ms)
    }

    /// A window that ends at or before this no longer accepts records.
    pub fn closed_before_end(&self, stream_time: i64) -> i64 {
        stream_time.saturating_sub(self.grace_ms)
    }

    /// Windows whose start lies below this are closed.
    pub fn closed_before_start(&self, stream_time: i64) -> i64 {
        self.closed_before_end(stream_time)
            .saturating_sub(self.size_ms)
            .saturating_add(1)
    }

    /// Windows whose start lies below this have expired and are deleted.
    pub fn expired_before_start(&self, stream_time: i64) -> i64 {
        stream_time
            .saturating_sub(self.retention_ms)
            .saturating_sub(self.size_ms)
            .saturating_add(1)
    }
}

/// What one window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WindowCounts {
    /// Hellos that counted (outcome `counted`).
    pub hellos: u64,
    /// Events applied to the key in the window, whatever their outcome.
    pub events: u64,
    /// Input offset of the last event folded in; replays at or below it are skipped.
    #[serde(skip)]
    pub last_offset: i64,
    /// Largest event timestamp folded in.
    #[serde(skip)]
    pub updated_at_ms: i64,
}

/// A window update on `hello-windows`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowUpdated<'a> {
    pub key: &'a str,
    pub window_start: i64,
    pub window_end: i64,
    pub hellos: u64,
    pub events: u64,
    /// True when the window has closed (emit-on-close): this is its last record.
    #[serde(rename = "final")]
    pub closed: bool,
}

/// The `hello-windows` record of a window's counts.
pub fn window_updated(
    key: &str,
    start: i64,
    size_ms: i64,
    counts: &WindowCounts,
    closed: bool,
) -> Vec<u8> {
    let event = WindowUpdated {
        key,
        window_start: start,
        window_end: start.saturating_add(size_ms),
        hellos: counts.hellos,
        events: counts.events,
        closed,
    };
    // A flat struct of numbers and a string: serialising cannot fail.
    serde_json::to_vec(&event).unwrap_or_default()
}

/// The stream-time bookkeeping of one partition, kept in the window changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClock {
    /// Largest record timestamp processed; `i64::MIN` before the first.
    pub stream_time: i64,
    /// Emit-on-close: every window starting below this has been emitted.
    pub emitted_before: i64,
}

impl Default for StreamClock {
    fn default() -> Self {
        StreamClock {
            stream_time: i64::MIN,
            emitted_before: i64::MIN,
        }
    }
}

/// How a record meets the window store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Fold it into the window starting here.
    Window(i64),
    /// Its window closed: end `window_end` is at or before `closed_before_end`.
    Late { window_end: i64, stream_time: i64 },
}

/// Advances the clock by the record's timestamp and says where the record goes. Stream time
/// moves before the lateness check, as in Kafka Streams, so a record is never late for its own
/// timestamp.
pub fn place(spec: &WindowSpec, clock: &mut StreamClock, timestamp: i64) -> Placement {
    clock.stream_time = clock.stream_time.max(timestamp);
    let start = spec.start_of(timestamp);
    let end = start.saturating_add(spec.size_ms);
    if end <= spec.closed_before_end(clock.stream_time) {
        return Placement::Late {
            window_end: end,
            stream_time: clock.stream_time,
        };
    }
    Placement::Window(start)
}

/// Folds one applied event into its window.
pub fn fold(
    previous: Option<WindowCounts>,
    outcome: Outcome,
    offset: i64,
    timestamp: i64,
) -> WindowCounts {
    let mut counts = previous.unwrap_or(WindowCounts {
        last_offset: -1,
        updated_at_ms: i64::MIN,
        ..WindowCounts::default()
    });
    counts.events += 1;
    if outcome == Outcome::Counted {
        counts.hellos += 1;
    }
    counts.last_offset = offset;
    counts.updated_at_ms = counts.updated_at_ms.max(timestamp);
    counts
}

// ---- byte layouts ----
//
// A window's key is `[key length][key][start]`: one key's windows sit together in start
// order, so a range read is one seek. The start is big-endian with the sign bit flipped, so
// byte order is time order for negative timestamps too. The time index (local to the store,
// rebuilt by a restore) turns it round, `[start][key length][key]`, for what goes by time:
// closing, expiry and the top keys of a window. The empty key holds the [`StreamClock`].

pub const CLOCK_KEY: &[u8] = b"";
const FORMAT_V1: u8 = 1;
pub const COUNTS_LEN: usize = 1 + 8 * 4;
const CLOCK_LEN: usize = 1 + 8 * 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("window value has {len} bytes, expected {expected} of format {FORMAT_V1}")]
pub struct DecodeError {
    len: usize,
    expected: usize,
}

fn order_bytes(time: i64) -> [u8; 8] {
    ((time as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_order_bytes(bytes: &[u8]) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    (u64::from_be_bytes(word) ^ (1 << 63)) as i64
}

pub fn window_key(key: &[u8], start: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len() + 8);
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    out.extend_from_slice(&order_bytes(start));
    out
}

/// `(key, start)` of a window key; `None` for the clock or garbage.
pub fn split_window_key(bytes: &[u8]) -> Option<(&[u8], i64)> {
    let len = *bytes.first()? as usize;
    if len == 0 || bytes.len() != 1 + len + 8 {
        return None;
    }
    Some((&bytes[1..1 + len], from_order_bytes(&bytes[1 + len..])))
}

pub fn index_key(key: &[u8], start: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 1 + key.len());
    out.extend_from_slice(&order_bytes(start));
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    out
}

/// The first index key of windows starting at `start` or later.
/// The index key of a window store key ([`crate::engine::application::IndexSpec`]); `None`
/// for the clock.
pub fn index_key_of(store_key: &[u8]) -> Option<Vec<u8>> {
    let (key, start) = split_window_key(store_key)?;
    Some(index_key(key, start))
}

/// The input offset a window changelog value folded last; `None` for the clock, which is
/// always applied.
pub fn folded_offset(key: &[u8], value: &[u8]) -> Option<i64> {
    split_window_key(key)?;
    decode_counts(value).ok().map(|counts| counts.last_offset)
}

pub fn index_from(start: i64) -> [u8; 8] {
    order_bytes(start)
}

/// `(key, start)` of an index key.
pub fn split_index_key(bytes: &[u8]) -> Option<(&[u8], i64)> {
    if bytes.len() < 10 {
        return None;
    }
    let len = bytes[8] as usize;
    if bytes.len() != 9 + len {
        return None;
    }
    Some((&bytes[9..], from_order_bytes(&bytes[..8])))
}

pub fn encode_counts(counts: &WindowCounts) -> [u8; COUNTS_LEN] {
    let mut out = [0u8; COUNTS_LEN];
    out[0] = FORMAT_V1;
    let fields = [
        counts.hellos,
        counts.events,
        counts.last_offset as u64,
        counts.updated_at_ms as u64,
    ];
    for (i, field) in fields.iter().enumerate() {
        out[1 + i * 8..9 + i * 8].copy_from_slice(&field.to_be_bytes());
    }
    out
}

fn word(bytes: &[u8], i: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[1 + i * 8..9 + i * 8]);
    u64::from_be_bytes(word)
}

pub fn decode_counts(bytes: &[u8]) -> Result<WindowCounts, DecodeError> {
    if bytes.len() != COUNTS_LEN || bytes[0] != FORMAT_V1 {
        return Err(DecodeError {
            len: bytes.len(),
            expected: COUNTS_LEN,
        });
    }
    Ok(WindowCounts {
        hellos: word(bytes, 0),
        events: word(bytes, 1),
        last_offset: word(bytes, 2) as i64,
        updated_at_ms: word(bytes, 3) as i64,
    })
}

pub fn encode_clock(clock: &StreamClock) -> [u8; CLOCK_LEN] {
    let mut out = [0u8; CLOCK_LEN];
    out[0] = FORMAT_V1;
    out[1..9].copy_from_slice(&(clock.stream_time as u64).to_be_bytes());
    out[9..17].copy_from_slice(&(clock.emitted_before as u64).to_be_bytes());
    out
}

pub fn decode_clock(bytes: &[u8]) -> Result<StreamClock, DecodeError> {
    if bytes.len() != CLOCK_LEN || bytes[0] != FORMAT_V1 {
        return Err(DecodeError {
            len: bytes.len(),
            expected: CLOCK_LEN,
        });
    }
    Ok(StreamClock {
        stream_time: word(bytes, 0) as i64,
        emitted_before: word(bytes, 1) as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPEC: WindowSpec = WindowSpec {
        size_ms: 60_000,
        grace_ms: 5_000,
        retention_ms: 3_600_000,
        emit: Emit::Update,
    };

    #[test]
    fn records_fall_into_tumbling_windows_by_timestamp() {
        let mut clock = StreamClock::default();
        assert_eq!(place(&SPEC, &mut clock, -1), Placement::Window(-60_000));
        assert_eq!(place(&SPEC, &mut clock, 60_000), Placement::Window(60_000));
        assert_eq!(
            place(&SPEC, &mut clock, 125_000),
            Placement::Window(120_000)
        );
        assert_eq!(clock.stream_time, 125_000);
    }

    #[test]
    fn a_record_past_its_windows_end_plus_grace_is_late() {
        let mut clock = StreamClock::default();
        place(&SPEC, &mut clock, 124_999);
        // Window [60 s, 120 s) closes at 125 s of stream time.
        assert_eq!(place(&SPEC, &mut clock, 119_999), Placement::Window(60_000));
        place(&SPEC, &mut clock, 125_000);
        assert_eq!(
            place(&SPEC, &mut clock, 119_999),
            Placement::Late {
                window_end: 120_000,
                stream_time: 125_000
            }
        );
        assert_eq!(SPEC.closed_before_start(125_000), 60_001);
        assert_eq!(SPEC.closed_before_start(124_999), 60_000);
    }

    #[test]
    fn windows_expire_after_retention() {
        // [0, 60 s) is kept while stream time is below 60 s + 1 h.
        assert_eq!(SPEC.expired_before_start(3_659_999), 0);
        assert_eq!(SPEC.expired_before_start(3_660_000), 1);
    }

    #[test]
    fn fold_counts_hellos_and_events() {
        let a = fold(None, Outcome::Counted, 4, 10);
        let b = fold(Some(a), Outcome::Refused, 5, 9);
        assert_eq!(
            (b.hellos, b.events, b.last_offset, b.updated_at_ms),
            (1, 2, 5, 10)
        );
    }

    #[test]
    fn key_layouts_keep_time_order() {
        let keys: Vec<Vec<u8>> = [-5i64, 0, 7, 1 << 40]
            .iter()
            .map(|s| window_key(b"k", *s))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(split_window_key(&keys[0]), Some((&b"k"[..], -5)));
        let index = index_key("ü".as_bytes(), 42);
        assert_eq!(split_index_key(&index), Some(("ü".as_bytes(), 42)));
        assert!(index_from(42)[..] <= index[..] && index[..] < index_from(43)[..]);
        assert_eq!(split_window_key(CLOCK_KEY), None);
    }

    proptest! {
        #[test]
        fn codecs_round_trip(hellos: u64, events: u64, offset: i64, at: i64, t: i64, e: i64) {
            let counts = WindowCounts { hellos, events, last_offset: offset, updated_at_ms: at };
            prop_assert_eq!(decode_counts(&encode_counts(&counts)), Ok(counts));
            let clock = StreamClock { stream_time: t, emitted_before: e };
            prop_assert_eq!(decode_clock(&encode_clock(&clock)), Ok(clock));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes: Vec<u8>) {
            let _ = decode_counts(&bytes);
            let _ = decode_clock(&bytes);
            let _ = split_window_key(&bytes);
            let _ = split_index_key(&bytes);
        }
    }
}
