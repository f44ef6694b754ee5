//! The hello application on the engine: a key/value fold (counts, mood, resets) and a windowed
//! fold (hellos per key per time window), each with its store, codec, outputs and reads.
//!
//! - [`domain`]: events, per-key state and the fold, pure;
//! - [`codec`]: the state store's byte layout;
//! - [`counts`]: the key/value fold as a processor, and its `hello-counts` output;
//! - [`windows`]: tumbling windows by event time, pure; [`window_task`] folds them in a
//!   partition, [`window_store`] reads them;
//! - [`views`]: what queries, the drill and the state dump read from a partition's store;
//!   [`queries`] answers the query servers from them.

pub mod codec;
pub mod counts;
pub mod domain;
pub mod queries;
pub mod views;
pub mod window_store;
pub mod window_task;
pub mod windows;

use std::time::Duration;

use crate::config::Config;
use crate::engine::application::{
    Application, IndexSpec, OutputId, OutputSpec, Processor, StoreId, StoreSpec,
};
use crate::engine::context::Context;
use crate::engine::sink::InputRecord;
use crate::engine::store::{Store, StoreError};
use crate::engine::task::TaskError;
use crate::kafka::admin::Cleanup;
use counts::CountsFold;
use window_task::WindowTask;
use windows::WindowSpec;

/// The key/value states, with the partition's reset epoch under the empty key.
pub const STATES: StoreId = StoreId(0);
/// The windows, with the stream clock under the empty key (present with windows on).
pub const WINDOWS: StoreId = StoreId(1);
/// `hello-counts`: one count-updated record per applied event.
pub const COUNTS_OUTPUT: OutputId = OutputId(0);
/// `hello-windows`: window updates (present with windows on).
pub const WINDOWS_OUTPUT: OutputId = OutputId(1);

/// A changelog with `cleanup.policy=compact,delete` keeps windows this long past their
/// retention, as Kafka Streams' window changelogs do.
const WINDOW_CHANGELOG_EXTRA_MS: i64 = 86_400_000;

pub struct HelloApp {
    stores: Vec<StoreSpec>,
    outputs: Vec<OutputSpec>,
    windows: Option<WindowSpec>,
    reset_interval: Option<Duration>,
    max_value_bytes: usize,
}

impl HelloApp {
    pub fn new(config: &Config) -> HelloApp {
        let t = &config.topics;
        let mut stores = vec![StoreSpec {
            family: "default",
            changelog: t.changelog.clone(),
            cleanup: Cleanup::Compact,
            index: None,
            folded_offset: Some(codec::folded_offset),
            read_cache: true,
        }];
        let mut outputs = vec![OutputSpec {
            topic: t.output.clone(),
        }];
        if let Some(spec) = &config.windows {
            stores.push(StoreSpec {
                family: "windows",
                changelog: t.windows_changelog.clone(),
                cleanup: Cleanup::CompactDelete {
                    retention_ms: spec.retention_ms.saturating_add(WINDOW_CHANGELOG_EXTRA_MS),
                },
                index: Some(IndexSpec {
                    family: "window-index",
                    key: windows::index_key_of,
                }),
                folded_offset: Some(windows::folded_offset),
                read_cache: false,
            });
            outputs.push(OutputSpec {
                topic: t.windows.clone(),
            });
        }
        HelloApp {
            stores,
            outputs,
            windows: config.windows,
            reset_interval: config.reset_interval,
            max_value_bytes: config.max_value_bytes,
        }
    }

    pub fn windows(&self) -> Option<WindowSpec> {
        self.windows
    }
}

impl Application for HelloApp {
    fn stores(&self) -> &[StoreSpec] {
        &self.stores
    }

    fn outputs(&self) -> &[OutputSpec] {
        &self.outputs
    }

    fn punctuate_every(&self) -> Option<Duration> {
        self.reset_interval
    }

    fn processor(&self, _partition: i32, store: &Store) -> Result<Box<dyn Processor>, StoreError> {
        let windows = match self.windows {
            Some(spec) => Some(WindowTask::new(spec, store)?),
            None => None,
        };
        Ok(Box::new(HelloProcessor {
            counts: CountsFold::new(self.max_value_bytes, store)?,
            windows,
        }))
    }
}

/// A partition's folds: every event the key/value fold applies also goes to its window.
struct HelloProcessor {
    counts: CountsFold,
    windows: Option<WindowTask>,
}

impl Processor for HelloProcessor {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), TaskError> {
        let Some((key, outcome)) = self.counts.process(record, ctx)? else {
            return Ok(());
        };
        if let Some(windows) = &mut self.windows {
            windows.process(record, key, outcome, ctx)?;
        }
        Ok(())
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), TaskError> {
        self.counts.reset(ctx)
    }

    fn before_commit(&mut self, ctx: &mut Context<'_>) -> Result<(), TaskError> {
        match &mut self.windows {
            Some(windows) => windows.before_commit(ctx),
            None => Ok(()),
        }
    }

    fn committed(&mut self) {
        if let Some(windows) = &mut self.windows {
            windows.committed();
        }
    }

    fn rolled_back(&mut self, store: &Store) -> Result<(), StoreError> {
        self.counts.rolled_back(store)?;
        if let Some(windows) = &mut self.windows {
            windows.rolled_back(store)?;
        }
        Ok(())
    }
}
