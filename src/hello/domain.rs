//! The hello counter's domain: events, per-key state and the fold. Pure code, no I/O.
//!
//! Everything the processor decides about a record is decided here, so the same function
//! serves live processing, tests and the drill. Decoding never panics: a record that is
//! not a valid event comes back as a [`Poison`] with a stable kind for the dead-letter topic.

use serde::Serialize;

/// Keys are entity ids: UTF-8, 1 to 255 bytes (docs/DESIGN.md).
pub const MAX_KEY_BYTES: usize = 255;

/// The only message that counts (the seed's greeting).
pub const COUNTED_MESSAGE: &str = "Hello";
pub const REPLY_COUNTED: &str = "Kotlin";
pub const REPLY_REFUSED: &str = "Don't talk to me!";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mood {
    #[default]
    Happy,
    Angry,
}

impl Mood {
    pub fn as_str(self) -> &'static str {
        match self {
            Mood::Happy => "HAPPY",
            Mood::Angry => "ANGRY",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Hello { message: String },
    Mood(Mood),
    Reset,
}

/// Why a record is not an event. The `as_str` names are the `error.kind` header values of the
/// dead-letter topic and must stay stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonKind {
    NullKey,
    InvalidKey,
    KeyTooLarge,
    EmptyValue,
    ValueTooLarge,
    InvalidUtf8,
    MalformedJson,
    UnknownType,
    UnknownMood,
    /// Valid, and applied to the key's state, but its time window had closed (see
    /// [`crate::hello::windows`]); only the window store refuses it.
    Late,
}

impl PoisonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PoisonKind::NullKey => "null_key",
            PoisonKind::InvalidKey => "invalid_key",
            PoisonKind::KeyTooLarge => "key_too_large",
            PoisonKind::EmptyValue => "empty_value",
            PoisonKind::ValueTooLarge => "value_too_large",
            PoisonKind::InvalidUtf8 => "invalid_utf8",
            PoisonKind::MalformedJson => "malformed_json",
            PoisonKind::UnknownType => "unknown_type",
            PoisonKind::UnknownMood => "unknown_mood",
            PoisonKind::Late => "late",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub kind: PoisonKind,
    pub message: String,
}

impl Poison {
    pub fn new(kind: PoisonKind, message: impl Into<String>) -> Self {
        Poison {
            kind,
            message: message.into(),
        }
    }
}

/// Checks an entity id. Shared by decoding and by the query servers, so a key that can never
/// hold state is rejected the same way everywhere.
pub fn validate_key(key: Option<&[u8]>) -> Result<&str, Poison> {
    let Some(key) = key else {
        return Err(Poison::new(PoisonKind::NullKey, "record has no key"));
    };
    if key.is_empty() {
        return Err(Poison::new(PoisonKind::InvalidKey, "key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Poison::new(
            PoisonKind::KeyTooLarge,
            format!(
                "key has {} bytes, at most {MAX_KEY_BYTES} allowed",
                key.len()
            ),
        ));
    }
    std::str::from_utf8(key)
        .map_err(|_| Poison::new(PoisonKind::InvalidKey, "key is not valid UTF-8"))
}

/// Decodes a record value: a JSON object when it starts with `{`, otherwise a plain-text hello
/// (what `kafka-console-producer` sends for a line `alice:Hello`).
pub fn decode_event(value: Option<&[u8]>, max_value_bytes: usize) -> Result<Event, Poison> {
    let value = match value {
        Some(v) if !v.is_empty() => v,
        _ => return Err(Poison::new(PoisonKind::EmptyValue, "record has no value")),
    };
    if value.len() > max_value_bytes {
        return Err(Poison::new(
            PoisonKind::ValueTooLarge,
            format!(
                "value has {} bytes, at most {max_value_bytes} allowed",
                value.len()
            ),
        ));
    }
    let text = std::str::from_utf8(value)
        .map_err(|e| Poison::new(PoisonKind::InvalidUtf8, format!("value is not UTF-8: {e}")))?;
    if text.trim_start().starts_with('{') {
        return decode_json(text);
    }
    Ok(Event::Hello {
        message: text.to_owned(),
    })
}

fn decode_json(text: &str) -> Result<Event, Poison> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Poison::new(PoisonKind::MalformedJson, format!("invalid JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(Poison::new(
            PoisonKind::MalformedJson,
            "JSON value is not an object",
        ));
    };
    let kind = match object.get("type") {
        Some(serde_json::Value::String(kind)) => kind.as_str(),
        Some(_) => {
            return Err(Poison::new(
                PoisonKind::MalformedJson,
                "field `type` must be a string",
            ))
        }
        None => return Err(Poison::new(PoisonKind::UnknownType, "missing field `type`")),
    };
    match kind {
        "hello" => match object.get("message") {
            Some(serde_json::Value::String(message)) => Ok(Event::Hello {
                message: message.clone(),
            }),
            _ => Err(Poison::new(
                PoisonKind::MalformedJson,
                "hello event needs a string field `message`",
            )),
        },
        "mood" => match object.get("mood").and_then(|m| m.as_str()) {
            Some("HAPPY") => Ok(Event::Mood(Mood::Happy)),
            Some("ANGRY") => Ok(Event::Mood(Mood::Angry)),
            Some(other) => Err(Poison::new(
                PoisonKind::UnknownMood,
                format!("unknown mood `{other}`, expected HAPPY or ANGRY"),
            )),
            None => Err(Poison::new(
                PoisonKind::UnknownMood,
                "mood event needs a string field `mood`",
            )),
        },
        "reset" => Ok(Event::Reset),
        other => Err(Poison::new(
            PoisonKind::UnknownType,
            format!("unknown event type `{other}`, expected hello, mood or reset"),
        )),
    }
}

/// The state of one key. `reset_epoch` ties `hello_count` to the partition's punctuation
/// epoch: a wall-clock reset bumps the partition's epoch once instead of rewriting every key,
/// and a count written under an older epoch reads as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HelloState {
    pub hello_count: u64,
    pub hello_total_count: u64,
    pub mood: Mood,
    /// Number of events applied to this key.
    pub revision: u64,
    /// Input offset of the last applied event; replays at or below it are skipped.
    pub last_offset: i64,
    /// Event timestamp (ms since the epoch) of the last applied event.
    pub updated_at_ms: i64,
    pub reset_epoch: u64,
}

impl HelloState {
    /// The count as readers see it under the partition's current punctuation epoch.
    pub fn effective(mut self, partition_epoch: u64) -> HelloState {
        if self.reset_epoch < partition_epoch {
            self.hello_count = 0;
            self.reset_epoch = partition_epoch;
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Counted,
    Ignored,
    Refused,
    Mood,
    Reset,
}

impl Outcome {
    pub fn reply(self) -> Option<&'static str> {
        match self {
            Outcome::Counted => Some(REPLY_COUNTED),
            Outcome::Refused => Some(REPLY_REFUSED),
            Outcome::Ignored | Outcome::Mood | Outcome::Reset => None,
        }
    }
}

/// Where an event came from; recorded in the state so replays are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// Applies one event to a key's state. `previous` is `None` for a key never seen.
pub fn fold(
    previous: Option<HelloState>,
    partition_epoch: u64,
    event: &Event,
    at: Provenance,
) -> (HelloState, Outcome) {
    let mut state = previous
        .unwrap_or(HelloState {
            last_offset: -1,
            ..HelloState::default()
        })
        .effective(partition_epoch);
    let outcome = match event {
        Event::Hello { message } => match state.mood {
            Mood::Angry => Outcome::Refused,
            Mood::Happy if message == COUNTED_MESSAGE => {
                state.hello_count += 1;
                state.hello_total_count += 1;
                Outcome::Counted
            }
            Mood::Happy => Outcome::Ignored,
        },
        Event::Mood(mood) => {
            state.mood = *mood;
            Outcome::Mood
        }
        Event::Reset => {
            state.hello_count = 0;
            Outcome::Reset
        }
    };
    state.revision += 1;
    state.last_offset = at.offset;
    state.updated_at_ms = at.timestamp_ms;
    (state, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 1024;

    fn at(offset: i64) -> Provenance {
        Provenance {
            offset,
            timestamp_ms: 1_000 + offset,
        }
    }

    fn run(events: &[Event]) -> (HelloState, Vec<Outcome>) {
        let mut state = None;
        let mut outcomes = Vec::new();
        for (offset, event) in events.iter().enumerate() {
            let (next, outcome) = fold(state, 0, event, at(offset as i64));
            state = Some(next);
            outcomes.push(outcome);
        }
        (state.unwrap_or_default(), outcomes)
    }

    fn hello(message: &str) -> Event {
        Event::Hello {
            message: message.into(),
        }
    }

    #[test]
    fn plain_text_is_a_hello() {
        assert_eq!(decode_event(Some(b"Hello"), LIMIT), Ok(hello("Hello")));
        assert_eq!(
            decode_event(Some(b"hi there"), LIMIT),
            Ok(hello("hi there"))
        );
    }

    #[test]
    fn json_events_decode() {
        let decode = |s: &str| decode_event(Some(s.as_bytes()), LIMIT);
        assert_eq!(
            decode(r#"{"type":"hello","message":"Hello"}"#),
            Ok(hello("Hello"))
        );
        assert_eq!(
            decode(r#"{"type":"mood","mood":"ANGRY"}"#),
            Ok(Event::Mood(Mood::Angry))
        );
        assert_eq!(
            decode(r#" {"type":"mood","mood":"HAPPY"}"#),
            Ok(Event::Mood(Mood::Happy))
        );
        assert_eq!(decode(r#"{"type":"reset"}"#), Ok(Event::Reset));
    }

    #[test]
    fn every_poison_kind_is_recognised() {
        let kind = |key: Option<&[u8]>, value: Option<&[u8]>| {
            validate_key(key)
                .err()
                .or_else(|| decode_event(value, LIMIT).err())
                .map(|p| p.kind)
        };
        let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
        let big_value = vec![b'v'; LIMIT + 1];
        let ok: Option<&[u8]> = Some(b"alice");
        assert_eq!(kind(None, Some(b"Hello")), Some(PoisonKind::NullKey));
        assert_eq!(
            kind(Some(b""), Some(b"Hello")),
            Some(PoisonKind::InvalidKey)
        );
        assert_eq!(
            kind(Some(&[0xff, 0xfe]), Some(b"Hello")),
            Some(PoisonKind::InvalidKey)
        );
        assert_eq!(
            kind(Some(&long_key), Some(b"Hello")),
            Some(PoisonKind::KeyTooLarge)
        );
        assert_eq!(kind(ok, None), Some(PoisonKind::EmptyValue));
        assert_eq!(kind(ok, Some(b"")), Some(PoisonKind::EmptyValue));
        assert_eq!(kind(ok, Some(&big_value)), Some(PoisonKind::ValueTooLarge));
        assert_eq!(kind(ok, Some(&[0xc3, 0x28])), Some(PoisonKind::InvalidUtf8));
        assert_eq!(
            kind(ok, Some(b"{not json")),
            Some(PoisonKind::MalformedJson)
        );
        assert_eq!(
            kind(ok, Some(b"{\"type\":\"wave\"}")),
            Some(PoisonKind::UnknownType)
        );
        assert_eq!(
            kind(ok, Some(b"{\"type\":\"mood\",\"mood\":\"SAD\"}")),
            Some(PoisonKind::UnknownMood)
        );
        assert_eq!(kind(ok, Some(b"Hello")), None);
    }

    #[test]
    fn the_seed_conversation() {
        let (state, outcomes) = run(&[
            hello("Hello"),
            hello("Hello"),
            hello("Howdy"),
            Event::Mood(super::Mood::Angry),
            hello("Hello"),
            Event::Mood(super::Mood::Happy),
            hello("Hello"),
            Event::Reset,
            hello("Hello"),
        ]);
        use Outcome::*;
        assert_eq!(
            outcomes,
            [Counted, Counted, Ignored, Mood, Refused, Mood, Counted, Reset, Counted]
        );
        assert_eq!(state.hello_count, 1);
        assert_eq!(state.hello_total_count, 4);
        assert_eq!(state.mood, super::Mood::Happy);
        assert_eq!(state.revision, 9);
        assert_eq!(state.last_offset, 8);
        assert_eq!(Counted.reply(), Some("Kotlin"));
        assert_eq!(Refused.reply(), Some("Don't talk to me!"));
    }

    #[test]
    fn a_punctuation_epoch_zeroes_older_counts_only() {
        let (state, _) = fold(None, 0, &hello("Hello"), at(0));
        assert_eq!(state.effective(0).hello_count, 1);
        assert_eq!(state.effective(1).hello_count, 0);
        assert_eq!(state.effective(1).hello_total_count, 1);
        let (state, _) = fold(Some(state), 1, &hello("Hello"), at(1));
        assert_eq!((state.hello_count, state.reset_epoch), (1, 1));
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            6 => Just(hello("Hello")),
            1 => "[a-zA-Z]{0,6}".prop_map(|m| Event::Hello { message: m }),
            1 => Just(Event::Mood(Mood::Angry)),
            2 => Just(Event::Mood(Mood::Happy)),
            1 => Just(Event::Reset),
        ]
    }

    proptest! {
        #[test]
        fn totals_equal_counted_hellos(events in proptest::collection::vec(any_event(), 0..200)) {
            let (state, outcomes) = run(&events);
            let counted = outcomes.iter().filter(|o| **o == Outcome::Counted).count() as u64;
            prop_assert_eq!(state.hello_total_count, counted);
            prop_assert!(state.hello_count <= state.hello_total_count);
            prop_assert_eq!(run(&events).0, state, "replaying the same events gives the same state");
        }

        #[test]
        fn decoding_never_panics(key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
                                 value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let _ = validate_key(key.as_deref());
            let _ = decode_event(value.as_deref(), 32);
        }
    }
}
