//! What a processor may do inside the open transaction: read and write its partition's stores
//! (through the overlay, each write also going to the store's changelog) and send records.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;

use super::application::{OutputId, StoreId};
use super::sink::{InputRecord, Sink};
use super::store::Store;
use super::task::TaskError;
use crate::telemetry::Uncommitted;

/// The open transaction's writes, by store; `None` deletes the key.
pub struct Overlay {
    stores: Vec<HashMap<Box<[u8]>, Option<Box<[u8]>>>>,
}

impl Overlay {
    pub fn new(stores: usize) -> Overlay {
        Overlay {
            stores: (0..stores).map(|_| HashMap::new()).collect(),
        }
    }

    fn get(&self, store: StoreId, key: &[u8]) -> Option<Option<&[u8]>> {
        self.stores[store.0].get(key).map(Option::as_deref)
    }

    fn set(&mut self, store: StoreId, key: &[u8], value: Option<&[u8]>) {
        let values = &mut self.stores[store.0];
        match values.get_mut(key) {
            Some(slot) => *slot = value.map(Box::from),
            None => {
                values.insert(key.into(), value.map(Box::from));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stores.iter().all(HashMap::is_empty)
    }

    pub fn writes(&self) -> impl Iterator<Item = (StoreId, &[u8], Option<&[u8]>)> {
        self.stores.iter().enumerate().flat_map(|(id, values)| {
            values
                .iter()
                .map(move |(key, value)| (StoreId(id), &key[..], value.as_deref()))
        })
    }

    pub fn clear(&mut self) {
        self.stores.iter_mut().for_each(HashMap::clear);
    }
}

pub struct Context<'a> {
    partition: i32,
    store: &'a Store,
    overlay: &'a mut Overlay,
    sink: &'a Sink,
    work: &'a mut Uncommitted,
}

impl<'a> Context<'a> {
    pub(super) fn new(
        partition: i32,
        store: &'a Store,
        overlay: &'a mut Overlay,
        sink: &'a Sink,
        work: &'a mut Uncommitted,
    ) -> Self {
        Context {
            partition,
            store,
            overlay,
            sink,
            work,
        }
    }

    /// The input partition this task processes.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The value of `key` as the open transaction left it, decoded by `read`.
    pub fn get<T, E: Display>(
        &self,
        store: StoreId,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Option<T>, TaskError> {
        match self.overlay.get(store, key) {
            Some(None) => Ok(None),
            Some(Some(value)) => Ok(Some(
                read(value).map_err(|e| self.store.corrupt(store, key, e))?,
            )),
            None => Ok(self.store.get(store, key, read)?),
        }
    }

    /// Writes `value` for `key`, to the overlay and to the store's changelog.
    pub fn put(&mut self, store: StoreId, key: &[u8], value: &[u8]) -> Result<(), TaskError> {
        self.sink
            .changelog(store, self.partition, key, Some(value))?;
        self.overlay.set(store, key, Some(value));
        Ok(())
    }

    /// Deletes `key`: a tombstone in the changelog, a delete in the store at commit.
    pub fn delete(&mut self, store: StoreId, key: &[u8]) -> Result<(), TaskError> {
        self.sink.changelog(store, self.partition, key, None)?;
        self.overlay.set(store, key, None);
        Ok(())
    }

    /// The entries of the store's index from `from` up to (not including) `below`, as the
    /// open transaction left them, in index-key order: `visit` gets index keys and values.
    pub fn scan_index(
        &self,
        store: StoreId,
        from: &[u8],
        below: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), TaskError>,
    ) -> Result<(), TaskError> {
        let within = |key: &[u8]| key >= from && key < below;
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (id, key, value) in self.overlay.writes() {
            if id != store {
                continue;
            }
            if let Some(index_key) = self.store.index_key(store, key).filter(|k| within(k)) {
                merged.insert(index_key, value.map(<[u8]>::to_vec));
            }
        }
        self.store
            .scan_index(store, from, Some(below), |index_key, value| {
                merged
                    .entry(index_key.to_vec())
                    .or_insert_with(|| Some(value.to_vec()));
                Ok(true)
            })?;
        for (index_key, value) in &merged {
            if let Some(value) = value {
                visit(index_key, value)?;
            }
        }
        Ok(())
    }

    /// The error for a value the processor cannot decode.
    pub fn corrupt(&self, store: StoreId, key: &[u8], reason: impl Display) -> TaskError {
        TaskError::Store(self.store.corrupt(store, key, reason))
    }

    /// Sends a record to an output topic, in the input's partition when the output has as
    /// many partitions, else by key.
    pub fn send(&self, output: OutputId, key: &[u8], value: &[u8]) -> Result<(), TaskError> {
        Ok(self.sink.send(output, self.partition, key, value)?)
    }

    /// Sends the input record to the dead-letter topic, with `kind` as `error.kind` and the
    /// message as `error.message`.
    pub fn dead_letter(
        &mut self,
        record: &InputRecord<'_>,
        kind: &str,
        message: &str,
    ) -> Result<(), TaskError> {
        self.sink.dead_letter(record, kind, message)?;
        self.work.dead_lettered += 1;
        Ok(())
    }

    /// The open transaction's counters, folded into the metrics if it commits.
    pub fn work(&mut self) -> &mut Uncommitted {
        self.work
    }

    /// Waits until everything produced so far is acknowledged (for a fault hook that crashes
    /// right after).
    #[cfg(feature = "fault-hooks")]
    pub fn deliver_all(&self) {
        self.sink.producer().close();
    }
}
