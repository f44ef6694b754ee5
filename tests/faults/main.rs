//! The fault suite: crashes, broker outages, fencing, corrupted and unwritable state, reads
//! during rebalances. Slow on purpose and separate from the fast tests; run it with
//! `scripts/faults` (all cases, on a separate 3-node Kafka cluster) or `scripts/faults --quick`.
//!
//! Every case ends with the same exact checks (`support::check_everything`): the committed
//! output equals the model record by record per key and the changelog's last value per key
//! (`common::verify`), no transaction is left open, the query API agrees
//! (`common::verify_queries`), and the dead-letter topic holds exactly the injected poison.
//! Each case prints `FAULT-CASE <name> <result> <seconds>s <records verified>`.
//!
//! Case names start with their number (`c01_` ... `c18_`) so filters can pick them;
//! `campaign::campaign_schedule` (ignored unless asked for) is one schedule of the seeded
//! fault campaign (`scripts/faults --campaign`).

#[path = "../it/common.rs"]
#[allow(dead_code)]
mod common;
mod support;

mod at_least_once;
mod broker;
mod campaign;
mod crash;
mod group;
mod overlap;
mod proxy;
mod state;
mod windows;
