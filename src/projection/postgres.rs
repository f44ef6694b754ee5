//! The PostgreSQL target: the seed's Pekko R2DBC tables (`sql/create_tables_postgres.sql`).
//!
//! Rows follow Pekko's conventions so a Pekko or Akka application can read them:
//! - `durable_state`: one row per key, `persistence_id` = `<entity type>|<key>`, `slice`
//!   from Java's `String.hashCode` ([`super::slice`]), `revision` = the state's revision,
//!   `db_timestamp` = the transaction's timestamp, at least 1 µs past the row's previous one
//!   (Pekko's own rule, so it only ever grows per row even if the clock steps back).
//! - `state_ser_id` 31 is `jackson-json` in Pekko's `serialization-identifiers`
//!   (serialization-jackson's reference.conf), `state_ser_manifest` the class name Jackson
//!   puts there (`type-in-manifest = on`), `state_payload` the state as JSON
//!   (`{"helloCount":..,"helloTotalCount":..,"mood":".."}`): uncompressed, as Pekko writes
//!   payloads under its 32 KiB gzip threshold.
//! - `event_journal` (optional): one row per applied event, `seq_nr` = revision, the
//!   `hello-counts` record verbatim as payload.
//! - `pekko_projection_offset_store`: `projection_name` = the group, `projection_key` = the
//!   partition, `current_offset` = the last applied offset (manifest `LNG`, Pekko's Long).
//!
//! A batch is one transaction: lock the partition's offset row, write the rows of records
//! past the stored offset (each guarded by its revision), store the new offset, commit.

use std::collections::HashMap;

use serde::Serialize;
use tokio_postgres::{Client, NoTls, Statement};

use super::batch::Batch;
use super::record::Update;
use super::slice;
use super::{Applied, Target};

pub const DDL: &str = include_str!("../../sql/create_tables_postgres.sql");

/// Pekko's `jackson-json` serializer id.
pub const JACKSON_JSON_SER_ID: i32 = 31;
pub const STATE_MANIFEST: &str = "dev.hellostreams.HelloState";
pub const EVENT_MANIFEST: &str = "dev.hellostreams.HelloCountUpdated";
/// Pekko's manifest for a `Long` offset.
const LONG_MANIFEST: &str = "LNG";

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// libpq-style: `host=127.0.0.1 port=5432 user=postgres` or `postgresql://...`.
    pub url: String,
    pub create_tables: bool,
    pub event_journal: bool,
    pub entity_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("cannot connect to PostgreSQL")]
    Connect(#[source] tokio_postgres::Error),
    #[error("cannot create the tables of sql/create_tables_postgres.sql")]
    CreateTables(#[source] tokio_postgres::Error),
    #[error("cannot prepare the projection's statements (are the tables there? run with --create-tables)")]
    Prepare(#[source] tokio_postgres::Error),
    #[error("PostgreSQL {what} failed")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("stored offset {value:?} of {group}/{key} is not a number")]
    BadOffset {
        group: String,
        key: String,
        value: String,
    },
}

fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PostgresError {
    move |source| PostgresError::Query { what, source }
}

struct Statements {
    lock_offset: Statement,
    store_offset: Statement,
    stored_offsets: Statement,
    upsert_states: Statement,
    insert_events: Statement,
}

pub struct PostgresTarget {
    client: Client,
    statements: Statements,
    entity_type: String,
    event_journal: bool,
    writer: String,
}

/// The row lock serialises two instances that both believe they own the partition (one
/// of them after its session expired); the upsert creates the row on first use.
const LOCK_OFFSET: &str = "INSERT INTO pekko_projection_offset_store \
     (projection_name, projection_key, current_offset, manifest, mergeable, last_updated) \
     VALUES ($1, $2, '-1', 'LNG', false, $3) \
     ON CONFLICT (projection_name, projection_key) \
     DO UPDATE SET projection_name = EXCLUDED.projection_name \
     RETURNING current_offset";

const STORE_OFFSET: &str = "UPDATE pekko_projection_offset_store \
     SET current_offset = $3, manifest = $4, mergeable = false, last_updated = $5 \
     WHERE projection_name = $1 AND projection_key = $2";

const STORED_OFFSETS: &str = "SELECT projection_key, current_offset \
     FROM pekko_projection_offset_store WHERE projection_name = $1";

/// One statement for the whole batch. The seed's primary key is (persistence_id, revision),
/// so there is no unique key to upsert on: a key's row is updated in place when the new
/// revision is higher, and inserted when the key has no row. Both halves read the snapshot
/// from before the statement, so a key is either updated, inserted, or left alone.
const UPSERT_STATES: &str = "WITH input AS ( \
       SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[], $4::bytea[]) \
         AS i(persistence_id, slice, revision, payload) \
     ), updated AS ( \
       UPDATE durable_state d SET revision = i.revision, \
         db_timestamp = GREATEST(transaction_timestamp(), d.db_timestamp + interval '1 microsecond'), \
         state_ser_id = $6, state_ser_manifest = $7, state_payload = i.payload \
       FROM input i \
       WHERE d.persistence_id = i.persistence_id AND d.revision < i.revision \
       RETURNING 1 \
     ), inserted AS ( \
       INSERT INTO durable_state (slice, entity_type, persistence_id, revision, db_timestamp, \
         state_ser_id, state_ser_manifest, state_payload, tags) \
       SELECT i.slice, $5, i.persistence_id, i.revision, transaction_timestamp(), $6, $7, i.payload, NULL \
       FROM input i \
       WHERE NOT EXISTS (SELECT 1 FROM durable_state d WHERE d.persistence_id = i.persistence_id) \
       RETURNING 1 \
     ) \
     SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted)";

/// Events of one key in one batch get timestamps 1 µs apart in offset order, so
/// `db_timestamp` grows with `seq_nr`, as Pekko's slice queries expect.
const INSERT_EVENTS: &str = "INSERT INTO event_journal (slice, entity_type, persistence_id, \
       seq_nr, db_timestamp, event_ser_id, event_ser_manifest, event_payload, deleted, writer, \
       adapter_manifest, tags) \
     SELECT i.slice, $5, i.persistence_id, i.seq_nr, \
       transaction_timestamp() + i.ord * interval '1 microsecond', $6, $7, i.payload, false, $8, '', NULL \
     FROM unnest($1::text[], $2::int4[], $3::int8[], $4::bytea[]) WITH ORDINALITY \
       AS i(persistence_id, slice, seq_nr, payload, ord) \
     ON CONFLICT (persistence_id, seq_nr) DO NOTHING";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatePayload {
    hello_count: u64,
    hello_total_count: u64,
    mood: &'static str,
}

pub fn state_payload(update: &Update) -> Vec<u8> {
    // A flat struct of numbers and a fixed string cannot fail to serialise.
    serde_json::to_vec(&StatePayload {
        hello_count: update.hello_count,
        hello_total_count: update.hello_total_count,
        mood: update.mood.as_str(),
    })
    .unwrap_or_default()
}

/// Connects and keeps the connection driven on the current runtime.
pub async fn connect(url: &str) -> Result<Client, PostgresError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(PostgresError::Connect)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "postgres connection closed");
        }
    });
    Ok(client)
}

impl PostgresTarget {
    pub async fn open(options: &PostgresOptions, group: &str) -> Result<Self, PostgresError> {
        let client = connect(&options.url).await?;
        if options.create_tables {
            client
                .batch_execute(DDL)
                .await
                .map_err(PostgresError::CreateTables)?;
            tracing::info!("tables of sql/create_tables_postgres.sql are in place");
        }
        let prepare = |sql| client.prepare(sql);
        let statements = Statements {
            lock_offset: prepare(LOCK_OFFSET).await.map_err(PostgresError::Prepare)?,
            store_offset: prepare(STORE_OFFSET)
                .await
                .map_err(PostgresError::Prepare)?,
            stored_offsets: prepare(STORED_OFFSETS)
                .await
                .map_err(PostgresError::Prepare)?,
            upsert_states: prepare(UPSERT_STATES)
                .await
                .map_err(PostgresError::Prepare)?,
            insert_events: prepare(INSERT_EVENTS)
                .await
                .map_err(PostgresError::Prepare)?,
        };
        Ok(PostgresTarget {
            client,
            statements,
            entity_type: options.entity_type.clone(),
            event_journal: options.event_journal,
            writer: format!("hello-streams:{group}"),
        })
    }
}

fn parse_offset(group: &str, key: &str, value: &str) -> Result<i64, PostgresError> {
    value.parse().map_err(|_| PostgresError::BadOffset {
        group: group.to_owned(),
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// Column arrays for one `unnest`.
#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    slices: Vec<i32>,
    revisions: Vec<i64>,
    payloads: Vec<Vec<u8>>,
}

impl Rows {
    fn push(&mut self, id: String, revision: u64, payload: Vec<u8>) {
        self.slices.push(slice::slice(&id));
        self.ids.push(id);
        self.revisions.push(revision as i64);
        self.payloads.push(payload);
    }
}

impl Target for PostgresTarget {
    const NAME: &'static str = "postgres";
    type Error = PostgresError;

    async fn stored_offsets(
        &mut self,
        group: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, PostgresError> {
        let rows = self
            .client
            .query(&self.statements.stored_offsets, &[&group])
            .await
            .map_err(query("offset lookup"))?;
        let mut stored = HashMap::new();
        for row in rows {
            let key: &str = row.get(0);
            let Ok(partition) = key.parse::<i32>() else {
                continue;
            };
            let offset = parse_offset(group, key, row.get(1))?;
            if partitions.contains(&partition) && offset >= 0 {
                stored.insert(partition, offset);
            }
        }
        Ok(stored)
    }

    async fn apply(&mut self, group: &str, batch: &Batch) -> Result<Applied, PostgresError> {
        let s = &self.statements;
        let key = batch.partition.to_string();
        let txn = self.client.transaction().await.map_err(query("begin"))?;
        let row = txn
            .query_one(&s.lock_offset, &[&group, &key, &super::now_ms()])
            .await
            .map_err(query("offset lock"))?;
        let stored = parse_offset(group, &key, row.get(0))?;
        let mut applied = Applied::default();
        let mut states = Rows::default();
        let mut events = Rows::default();
        let mut too_long: HashMap<&str, ()> = HashMap::new();
        let fresh = batch.updates.iter().filter(|u| u.offset > stored);
        for update in super::batch::latest(fresh.clone()) {
            let id = slice::persistence_id(&self.entity_type, &update.key);
            if id.chars().count() > slice::MAX_ID_CHARS {
                too_long.insert(&update.key, ());
                applied.rejected += 1;
                tracing::warn!(
                    persistence_id = %id.chars().take(40).collect::<String>(),
                    chars = id.chars().count(),
                    "skipping a key: its persistence id is longer than the schema's 255 characters"
                );
                continue;
            }
            states.push(id, update.revision, state_payload(update));
        }
        if self.event_journal {
            for update in fresh {
                if too_long.contains_key(update.key.as_str()) {
                    continue;
                }
                let id = slice::persistence_id(&self.entity_type, &update.key);
                events.push(id, update.revision, update.value.clone());
            }
        }
        if !states.ids.is_empty() {
            let changed: i64 = txn
                .query_one(
                    &s.upsert_states,
                    &[
                        &states.ids,
                        &states.slices,
                        &states.revisions,
                        &states.payloads,
                        &self.entity_type,
                        &JACKSON_JSON_SER_ID,
                        &STATE_MANIFEST,
                    ],
                )
                .await
                .map_err(query("durable_state upsert"))?
                .get(0);
            applied.written = changed as u64;
            applied.unchanged = states.ids.len() as u64 - changed as u64;
        }
        if !events.ids.is_empty() {
            txn.execute(
                &s.insert_events,
                &[
                    &events.ids,
                    &events.slices,
                    &events.revisions,
                    &events.payloads,
                    &self.entity_type,
                    &JACKSON_JSON_SER_ID,
                    &EVENT_MANIFEST,
                    &self.writer,
                ],
            )
            .await
            .map_err(query("event_journal insert"))?;
        }
        if batch.last_offset > stored {
            txn.execute(
                &s.store_offset,
                &[
                    &group,
                    &key,
                    &batch.last_offset.to_string(),
                    &LONG_MANIFEST,
                    &super::now_ms(),
                ],
            )
            .await
            .map_err(query("offset store"))?;
        }
        txn.commit().await.map_err(query("commit"))?;
        Ok(applied)
    }
}
