//! One task per assigned input partition: its store, the application's processor, the
//! uncommitted overlay, and the input offset it has reached inside the open transaction.
//!
//! The overlay is what keeps RocksDB free of uncommitted data: the processor reads the overlay
//! first, then the store; after Kafka commits, the overlay goes to RocksDB in one batch with
//! the changelog checkpoints; on abort it is simply dropped.

use std::sync::Arc;

use super::application::Processor;
use super::context::{Context, Overlay};
use super::sink::{InputRecord, Sink};
use super::store::{Store, StoreError, Write};
use crate::kafka::producer::{DeliveryTracker, ProducerError};
use crate::telemetry::Uncommitted;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Produce(#[from] ProducerError),
}

pub struct Task {
    pub partition: i32,
    store: Arc<Store>,
    processor: Box<dyn Processor>,
    overlay: Overlay,
    /// Offset after the last record processed in the open transaction.
    pending_offset: Option<i64>,
}

impl Task {
    pub fn new(partition: i32, store: Arc<Store>, processor: Box<dyn Processor>) -> Self {
        Task {
            partition,
            overlay: Overlay::new(store.stores()),
            store,
            processor,
            pending_offset: None,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The input offset to commit for this partition, if the open transaction moved it.
    pub fn pending_offset(&self) -> Option<i64> {
        self.pending_offset
    }

    pub fn process(
        &mut self,
        record: &InputRecord<'_>,
        sink: &Sink,
        work: &mut Uncommitted,
    ) -> Result<(), TaskError> {
        self.pending_offset = Some(record.offset + 1);
        let mut ctx = Context::new(self.partition, &self.store, &mut self.overlay, sink, work);
        self.processor.process(record, &mut ctx)
    }

    pub fn punctuate(&mut self, sink: &Sink, work: &mut Uncommitted) -> Result<(), TaskError> {
        let mut ctx = Context::new(self.partition, &self.store, &mut self.overlay, sink, work);
        self.processor.punctuate(&mut ctx)
    }

    /// The processor's last writes of the open transaction, just before it commits.
    pub fn before_commit(&mut self, sink: &Sink, work: &mut Uncommitted) -> Result<(), TaskError> {
        let mut ctx = Context::new(self.partition, &self.store, &mut self.overlay, sink, work);
        self.processor.before_commit(&mut ctx)
    }

    /// Writes the overlay to RocksDB after Kafka committed it, with each changelog's offset
    /// after this transaction's last record for the partition as its checkpoint.
    pub fn committed(&mut self, tracker: &DeliveryTracker) -> Result<(), TaskError> {
        let checkpoints: Vec<Option<u64>> = (0..self.store.stores())
            .map(|id| tracker.next_offset(id, self.partition))
            .collect();
        if checkpoints.iter().any(Option::is_some) || !self.overlay.is_empty() {
            let writes =
                self.overlay
                    .writes()
                    .map(|(store, key, value)| Write { store, key, value });
            self.store.commit(writes, &checkpoints)?;
        }
        self.clear();
        self.processor.committed();
        Ok(())
    }

    /// Drops the uncommitted work (abort). Also after a recovery caught the store up with
    /// its changelogs, so the processor reads what it keeps from the store again.
    pub fn rollback(&mut self) -> Result<(), TaskError> {
        self.clear();
        self.processor.rolled_back(&self.store)?;
        Ok(())
    }

    fn clear(&mut self) {
        self.overlay.clear();
        self.pending_offset = None;
    }
}
