//! Reads of a partition's state store ([`super::STATES`]) as queries, the drill and the state
//! dump see it: counts from before the partition's last reset read as zero.

use super::codec::{self, EPOCH_KEY};
use super::domain::HelloState;
use super::STATES;
use crate::engine::store::{Store, StoreError};

fn decode_epoch(bytes: &[u8]) -> Result<u64, &'static str> {
    codec::decode_u64(bytes).ok_or("an epoch is 8 bytes")
}

/// The punctuation epoch readers apply, through the read cache like the states.
fn epoch(store: &Store) -> Result<u64, StoreError> {
    Ok(store.get_cached(EPOCH_KEY, decode_epoch)?.unwrap_or(0))
}

/// A key's committed state, through the read cache.
pub fn state(store: &Store, key: &[u8]) -> Result<Option<HelloState>, StoreError> {
    if !codec::is_entity_key(key) {
        return Ok(None);
    }
    let Some(state) = store.get_cached(key, codec::decode_state)? else {
        return Ok(None);
    };
    Ok(Some(state.effective(epoch(store)?)))
}

/// A key's committed state as stored, without the epoch (what the fold starts from).
pub fn raw_state(store: &Store, key: &[u8]) -> Result<Option<HelloState>, StoreError> {
    store.get(STATES, key, codec::decode_state)
}

/// Every entity's state, in key order.
pub fn for_each_state(
    store: &Store,
    mut visit: impl FnMut(&str, HelloState),
) -> Result<u64, StoreError> {
    let epoch = committed_epoch(store)?;
    let mut visited = 0;
    store.scan(STATES, &[], None, |key, value| {
        if !codec::is_entity_key(key) {
            return Ok(true);
        }
        let state = codec::decode_state(value).map_err(|e| store.corrupt(STATES, key, e))?;
        visit(&String::from_utf8_lossy(key), state.effective(epoch));
        visited += 1;
        Ok(true)
    })?;
    Ok(visited)
}

/// The punctuation epoch the store holds.
pub fn committed_epoch(store: &Store) -> Result<u64, StoreError> {
    Ok(store.get(STATES, EPOCH_KEY, decode_epoch)?.unwrap_or(0))
}
