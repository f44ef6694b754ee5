//! The key/value fold as a partition processor: decode, fold into the key's state, write the
//! state to the store (and so its changelog), and send a count-updated record.

use serde::Serialize;

use super::codec;
use super::domain::{self, HelloState, Outcome, Provenance};
use super::{views, COUNTS_OUTPUT, STATES};
use crate::engine::context::Context;
use crate::engine::sink::InputRecord;
use crate::engine::store::{Store, StoreError};
use crate::engine::task::TaskError;

/// The count-updated event on `hello-counts`, one per applied input event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountUpdated<'a> {
    pub key: &'a str,
    pub hello_count: u64,
    pub hello_total_count: u64,
    pub mood: &'static str,
    pub outcome: Outcome,
    pub reply: Option<&'static str>,
    pub revision: u64,
    pub source_partition: i32,
    pub source_offset: i64,
    pub event_timestamp: i64,
    pub processed_at: i64,
}

pub struct CountsFold {
    max_value_bytes: usize,
    /// The partition's punctuation epoch as the open transaction left it; read from the store
    /// once, not per event.
    epoch: u64,
}

impl CountsFold {
    pub fn new(max_value_bytes: usize, store: &Store) -> Result<CountsFold, StoreError> {
        Ok(CountsFold {
            max_value_bytes,
            epoch: views::committed_epoch(store)?,
        })
    }

    /// Folds a record into its key's state. Returns the key and what the event did, or `None`
    /// for a record that was dead-lettered or replayed.
    pub fn process<'r>(
        &mut self,
        record: &InputRecord<'r>,
        ctx: &mut Context<'_>,
    ) -> Result<Option<(&'r str, Outcome)>, TaskError> {
        let decoded = domain::validate_key(record.key).and_then(|key| {
            domain::decode_event(record.value, self.max_value_bytes).map(|event| (key, event))
        });
        let (key, event) = match decoded {
            Ok(decoded) => decoded,
            Err(poison) => {
                ctx.dead_letter(record, poison.kind.as_str(), &poison.message)?;
                return Ok(None);
            }
        };
        let previous = ctx.get(STATES, key.as_bytes(), codec::decode_state)?;
        if previous.is_some_and(|p| p.last_offset >= record.offset) {
            ctx.work().skipped_replayed += 1;
            return Ok(None);
        }
        let at = Provenance {
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
        };
        let (state, outcome) = domain::fold(previous, self.epoch, &event, at);
        ctx.put(STATES, key.as_bytes(), &codec::encode_state(&state))?;
        #[cfg(feature = "fault-hooks")]
        crate::fault::after_changelog(|| ctx.deliver_all());
        ctx.send(
            COUNTS_OUTPUT,
            key.as_bytes(),
            &count_updated(record, key, &state, outcome),
        )?;
        if outcome == Outcome::Counted {
            ctx.work().counted += 1;
        }
        Ok(Some((key, outcome)))
    }

    /// Resets every count by moving the partition to the next epoch: one changelog record,
    /// whatever the number of keys.
    pub fn reset(&mut self, ctx: &mut Context<'_>) -> Result<(), TaskError> {
        let next = self.epoch + 1;
        ctx.put(STATES, codec::EPOCH_KEY, &codec::encode_u64(next))?;
        self.epoch = next;
        Ok(())
    }

    pub fn rolled_back(&mut self, store: &Store) -> Result<(), StoreError> {
        self.epoch = views::committed_epoch(store)?;
        Ok(())
    }
}

fn count_updated(
    record: &InputRecord<'_>,
    key: &str,
    state: &HelloState,
    outcome: Outcome,
) -> Vec<u8> {
    let event = CountUpdated {
        key,
        hello_count: state.hello_count,
        hello_total_count: state.hello_total_count,
        mood: state.mood.as_str(),
        outcome,
        reply: outcome.reply(),
        revision: state.revision,
        source_partition: record.partition,
        source_offset: record.offset,
        event_timestamp: record.timestamp_ms,
        processed_at: crate::engine::now_ms(),
    };
    // Serialising a flat struct of numbers and short strings cannot fail.
    serde_json::to_vec(&event).unwrap_or_default()
}
