//! A `hello-counts` record as the projection reads it: the key's state after one applied
//! event. Decoding never panics; a record that is not what [`crate::engine::sink::CountUpdated`]
//! writes is a [`Poison`] and never reaches a target.

use serde::Deserialize;

use crate::hello::domain::{validate_key, Mood};

/// One key's state after an applied event, and where the record sits in the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub key: String,
    pub hello_count: u64,
    pub hello_total_count: u64,
    pub mood: Mood,
    pub revision: u64,
    pub offset: i64,
    /// The record's value as produced: the journal keeps it verbatim.
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable hello-counts record: {0}")]
pub struct Poison(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    hello_count: u64,
    hello_total_count: u64,
    #[serde(borrow)]
    mood: std::borrow::Cow<'a, str>,
    revision: u64,
}

pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>, offset: i64) -> Result<Update, Poison> {
    let record_key = validate_key(key).map_err(|p| Poison(p.message))?;
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err(Poison("record has no value".into()));
    };
    let wire: Wire<'_> =
        serde_json::from_slice(value).map_err(|e| Poison(format!("invalid JSON: {e}")))?;
    if wire.key != record_key {
        return Err(Poison(format!(
            "record key {record_key:?} differs from the value's key {:?}",
            wire.key
        )));
    }
    let mood = match wire.mood.as_ref() {
        "HAPPY" => Mood::Happy,
        "ANGRY" => Mood::Angry,
        other => return Err(Poison(format!("unknown mood {other:?}"))),
    };
    if wire.revision == 0 {
        return Err(Poison(
            "revision 0 (the first applied event is revision 1)".into(),
        ));
    }
    if wire.hello_count > wire.hello_total_count {
        return Err(Poison(format!(
            "helloCount {} above helloTotalCount {}",
            wire.hello_count, wire.hello_total_count
        )));
    }
    Ok(Update {
        key: record_key.to_owned(),
        hello_count: wire.hello_count,
        hello_total_count: wire.hello_total_count,
        mood,
        revision: wire.revision,
        offset,
        value: value.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"key":"alice","helloCount":2,"helloTotalCount":3,"mood":"ANGRY","outcome":"mood","reply":null,"revision":5,"sourcePartition":1,"sourceOffset":9,"eventTimestamp":1,"processedAt":2}"#;

    #[test]
    fn decodes_what_the_sink_writes() {
        let update = decode(Some(b"alice"), Some(GOOD.as_bytes()), 7).unwrap();
        assert_eq!(
            (update.hello_count, update.hello_total_count, update.mood),
            (2, 3, Mood::Angry)
        );
        assert_eq!((update.revision, update.offset), (5, 7));
        assert_eq!(update.value, GOOD.as_bytes());
    }

    #[test]
    fn garbage_is_poison() {
        for (key, value) in [
            (None, Some(GOOD.as_bytes())),
            (Some(&b"bob"[..]), Some(GOOD.as_bytes())),
            (Some(b"alice"), None),
            (Some(b"alice"), Some(b"Hello")),
            (Some(b"alice"), Some(&[0xff, 0x00])),
            (Some(b"alice"), Some(br#"{"key":"alice"}"#)),
            (
                Some(b"alice"),
                Some(br#"{"key":"alice","helloCount":1,"helloTotalCount":1,"mood":"SAD","revision":1}"#),
            ),
            (
                Some(b"alice"),
                Some(br#"{"key":"alice","helloCount":1,"helloTotalCount":1,"mood":"HAPPY","revision":0}"#),
            ),
            (
                Some(b"alice"),
                Some(br#"{"key":"alice","helloCount":-1,"helloTotalCount":1,"mood":"HAPPY","revision":1}"#),
            ),
        ] {
            assert!(decode(key, value, 0).is_err(), "{key:?} {value:?}");
        }
    }
}
