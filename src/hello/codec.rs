//! Byte layout of the state store ([`super::STATES`]) and its changelog. The store and the
//! changelog share one value format, so a restore copies changelog bytes into RocksDB without
//! decoding them.
//!
//! Key space:
//! - an entity id (valid UTF-8, 1..=255 bytes) → encoded [`HelloState`];
//! - the empty key → the partition's punctuation epoch (also a changelog record, so a
//!   wall-clock reset survives recovery like any other change).
//!
//! Entity ids are UTF-8, so they never begin with 0xFF, which the engine keeps for itself.

use crate::hello::domain::{HelloState, Mood};

pub const EPOCH_KEY: &[u8] = b"";

const FORMAT_V1: u8 = 1;
pub const STATE_LEN: usize = 2 + 8 * 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stored value has {len} bytes and format byte {format:?}, expected {STATE_LEN} bytes of format {FORMAT_V1}")]
pub struct DecodeError {
    len: usize,
    format: Option<u8>,
}

/// True for keys that name an entity, false for the epoch.
pub fn is_entity_key(key: &[u8]) -> bool {
    !key.is_empty()
}

/// The input offset a state changelog value folded ([`crate::engine::application::StoreSpec::folded_offset`]);
/// `None` for the epoch, which is always applied.
pub fn folded_offset(key: &[u8], value: &[u8]) -> Option<i64> {
    if !is_entity_key(key) {
        return None;
    }
    decode_state(value).ok().map(|state| state.last_offset)
}

pub fn encode_state(state: &HelloState) -> [u8; STATE_LEN] {
    let mut out = [0u8; STATE_LEN];
    out[0] = FORMAT_V1;
    out[1] = match state.mood {
        Mood::Happy => 0,
        Mood::Angry => 1,
    };
    let fields = [
        state.hello_count,
        state.hello_total_count,
        state.revision,
        state.last_offset as u64,
        state.updated_at_ms as u64,
        state.reset_epoch,
    ];
    for (i, field) in fields.iter().enumerate() {
        out[2 + i * 8..10 + i * 8].copy_from_slice(&field.to_be_bytes());
    }
    out
}

pub fn decode_state(bytes: &[u8]) -> Result<HelloState, DecodeError> {
    if bytes.len() != STATE_LEN || bytes[0] != FORMAT_V1 || bytes[1] > 1 {
        return Err(DecodeError {
            len: bytes.len(),
            format: bytes.first().copied(),
        });
    }
    let field = |i: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[2 + i * 8..10 + i * 8]);
        u64::from_be_bytes(word)
    };
    Ok(HelloState {
        mood: if bytes[1] == 0 {
            Mood::Happy
        } else {
            Mood::Angry
        },
        hello_count: field(0),
        hello_total_count: field(1),
        revision: field(2),
        last_offset: field(3) as i64,
        updated_at_ms: field(4) as i64,
        reset_epoch: field(5),
    })
}

pub fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

/// Decodes an epoch or checkpoint; `None` for anything that is not 8 bytes.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let word: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn state_round_trips(count in any::<u64>(), total in any::<u64>(), angry in any::<bool>(),
                             revision in any::<u64>(), offset in any::<i64>(), at in any::<i64>(), epoch in any::<u64>()) {
            let state = HelloState {
                hello_count: count, hello_total_count: total,
                mood: if angry { Mood::Angry } else { Mood::Happy },
                revision, last_offset: offset, updated_at_ms: at, reset_epoch: epoch,
            };
            prop_assert_eq!(decode_state(&encode_state(&state)), Ok(state));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_state(&bytes);
            let _ = decode_u64(&bytes);
        }
    }

    #[test]
    fn the_epoch_is_not_an_entity() {
        assert!(!is_entity_key(EPOCH_KEY));
        assert!(is_entity_key(b"alice"));
        assert_eq!(folded_offset(EPOCH_KEY, &encode_u64(3)), None);
        let state = HelloState {
            last_offset: 41,
            ..HelloState::default()
        };
        assert_eq!(folded_offset(b"alice", &encode_state(&state)), Some(41));
    }
}
