//! Per-partition batches: the records consumed since the partition's last write, which a
//! target applies in one transaction together with the batch's last offset.

use std::collections::HashMap;
use std::time::Instant;

use super::record::Update;

#[derive(Debug)]
pub struct Batch {
    pub partition: i32,
    /// Offset of the first record consumed into the batch (poison included).
    pub first_offset: i64,
    /// Offset of the last record consumed into the batch: what the target stores.
    pub last_offset: i64,
    /// The decodable records, in offset order.
    pub updates: Vec<Update>,
    /// Undecodable records consumed into the batch; only their offsets are written.
    pub poison: u64,
    pub opened: Instant,
}

impl Batch {
    pub fn new(partition: i32, offset: i64) -> Self {
        Batch {
            partition,
            first_offset: offset,
            last_offset: offset,
            updates: Vec::new(),
            poison: 0,
            opened: Instant::now(),
        }
    }

    pub fn records(&self) -> usize {
        self.updates.len() + self.poison as usize
    }

    pub fn push(&mut self, offset: i64, update: Option<Update>) {
        self.last_offset = offset;
        match update {
            Some(update) => self.updates.push(update),
            None => self.poison += 1,
        }
    }

    /// Each key's newest update in the batch.
    pub fn latest(&self) -> Vec<&Update> {
        latest(self.updates.iter())
    }
}

/// Each key's newest update, in the order the keys first appear. A key's updates all come
/// from one partition in revision order, so the last one holds its state.
pub fn latest<'a>(updates: impl Iterator<Item = &'a Update>) -> Vec<&'a Update> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut newest: Vec<&Update> = Vec::new();
    for update in updates {
        match index.get(update.key.as_str()) {
            Some(&i) if newest[i].revision < update.revision => newest[i] = update,
            Some(_) => {}
            None => {
                index.insert(&update.key, newest.len());
                newest.push(update);
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hello::domain::Mood;

    fn update(key: &str, revision: u64, offset: i64) -> Update {
        Update {
            key: key.into(),
            hello_count: revision,
            hello_total_count: revision,
            mood: Mood::Happy,
            revision,
            offset,
            value: Vec::new(),
        }
    }

    #[test]
    fn latest_keeps_the_highest_revision_per_key() {
        let mut batch = Batch::new(3, 10);
        batch.push(10, Some(update("a", 1, 10)));
        batch.push(11, Some(update("b", 4, 11)));
        batch.push(12, None);
        batch.push(13, Some(update("a", 2, 13)));
        let latest: Vec<(&str, u64)> = batch
            .latest()
            .iter()
            .map(|u| (u.key.as_str(), u.revision))
            .collect();
        assert_eq!(latest, [("a", 2), ("b", 4)]);
        assert_eq!((batch.first_offset, batch.last_offset), (10, 13));
        assert_eq!((batch.records(), batch.poison), (4, 1));
    }
}
