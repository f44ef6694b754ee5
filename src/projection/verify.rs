//! `hello-streams projection verify`: every key of the daemon's local stores against its
//! `durable_state` row and its Redis hash, value by value and revision by revision.
//!
//! The stores are read the way `hello-streams state dump` reads them (RocksDB read-only,
//! safe beside a running daemon). A projection trails the daemon by a batch or two, so the
//! comparison is repeated until it matches or `wait` has passed; what still differs then is
//! reported.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::Config;
use crate::hello::domain::HelloState;
use crate::inspect::{self, InspectError};

use super::postgres::{self, PostgresError};
use super::redis::{self as redis_target, RedisError};
use super::slice;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the local stores")]
    Store(#[from] InspectError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("nothing to verify: give --postgres and/or --redis")]
    NoTarget,
}

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub postgres: Option<String>,
    pub entity_type: String,
    pub redis: Option<String>,
    pub redis_prefix: String,
    pub wait: Duration,
}

/// One key's values as each side holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Values {
    pub hello_count: u64,
    pub hello_total_count: u64,
    pub mood: &'static str,
    pub revision: u64,
}

impl Values {
    fn of(state: &HelloState) -> Self {
        Values {
            hello_count: state.hello_count,
            hello_total_count: state.hello_total_count,
            mood: state.mood.as_str(),
            revision: state.revision,
        }
    }
}

impl std::fmt::Display for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "helloCount={} helloTotalCount={} mood={} revision={}",
            self.hello_count, self.hello_total_count, self.mood, self.revision
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub target: &'static str,
    pub key: String,
    /// `None`: the key is not in the store (or not in the target, for `found`).
    pub store: Option<Values>,
    pub found: Option<Values>,
    /// Set when the target's value could not be read as a state at all.
    pub unreadable: Option<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Values>| v.map_or("missing".to_owned(), |v| v.to_string());
        write!(
            f,
            "{} {:?}: store {}, ",
            self.target,
            self.key,
            show(&self.store)
        )?;
        match &self.unreadable {
            Some(why) => write!(f, "{} unreadable ({why})", self.target),
            None => write!(f, "{} {}", self.target, show(&self.found)),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub keys: u64,
    pub postgres_rows: Option<u64>,
    pub redis_hashes: Option<u64>,
    pub mismatches: Vec<Mismatch>,
    pub attempts: u32,
}

pub fn run(config: &Config, options: &VerifyOptions) -> Result<Report, VerifyError> {
    if options.postgres.is_none() && options.redis.is_none() {
        return Err(VerifyError::NoTarget);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(VerifyError::Runtime)?;
    runtime.block_on(async {
        let mut pg = match &options.postgres {
            Some(url) => Some(postgres::connect(url).await?),
            None => None,
        };
        let mut redis = match &options.redis {
            Some(url) => Some(redis_target::connect(url).await?),
            None => None,
        };
        let deadline = Instant::now() + options.wait;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut store = BTreeMap::new();
            inspect::for_each_state(config, |key, state| {
                store.insert(key.to_owned(), Values::of(state));
            })?;
            let mut report = Report {
                keys: store.len() as u64,
                attempts,
                ..Report::default()
            };
            if let Some(client) = &mut pg {
                let rows = postgres_rows(client, &options.entity_type).await?;
                report.postgres_rows = Some(rows.len() as u64);
                compare("postgres", &store, rows, true, &mut report.mismatches);
            }
            if let Some(connection) = &mut redis {
                let hashes = redis_hashes(connection, &options.redis_prefix, &store).await?;
                report.redis_hashes = Some(hashes.values().filter(|v| v.is_ok()).count() as u64);
                compare("redis", &store, hashes, false, &mut report.mismatches);
            }
            if report.mismatches.is_empty() || Instant::now() >= deadline {
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// A target's view: key → values, or why they could not be read.
type Found = HashMap<String, Result<Values, String>>;

fn compare(
    target: &'static str,
    store: &BTreeMap<String, Values>,
    mut found: Found,
    extra_keys_count: bool,
    out: &mut Vec<Mismatch>,
) {
    for (key, want) in store {
        let (got, unreadable) = match found.remove(key) {
            Some(Ok(values)) if values == *want => continue,
            Some(Ok(values)) => (Some(values), None),
            Some(Err(why)) => (None, Some(why)),
            None => (None, None),
        };
        out.push(Mismatch {
            target,
            key: key.clone(),
            store: Some(*want),
            found: got,
            unreadable,
        });
    }
    if !extra_keys_count {
        return;
    }
    let mut extra: Vec<_> = found.into_iter().collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, values) in extra {
        out.push(Mismatch {
            target,
            key,
            store: None,
            found: values.as_ref().ok().copied(),
            unreadable: values.err(),
        });
    }
}

fn mood(text: &str) -> Option<&'static str> {
    match text {
        "HAPPY" => Some("HAPPY"),
        "ANGRY" => Some("ANGRY"),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    hello_count: u64,
    hello_total_count: u64,
    mood: String,
}

async fn postgres_rows(
    client: &mut tokio_postgres::Client,
    entity_type: &str,
) -> Result<Found, PostgresError> {
    let rows = client
        .query(
            "SELECT persistence_id, revision, state_payload FROM durable_state WHERE entity_type = $1",
            &[&entity_type],
        )
        .await
        .map_err(|source| PostgresError::Query {
            what: "durable_state read",
            source,
        })?;
    let prefix = slice::persistence_id(entity_type, "");
    let mut found = Found::with_capacity(rows.len());
    for row in rows {
        let id: &str = row.get(0);
        let Some(key) = id.strip_prefix(&prefix) else {
            continue;
        };
        let revision: i64 = row.get(1);
        let payload: &[u8] = row.get(2);
        let values = serde_json::from_slice::<Payload>(payload)
            .map_err(|e| format!("state_payload: {e}"))
            .and_then(|p| {
                Ok(Values {
                    hello_count: p.hello_count,
                    hello_total_count: p.hello_total_count,
                    mood: mood(&p.mood).ok_or_else(|| format!("mood {:?}", p.mood))?,
                    revision: revision as u64,
                })
            });
        // Two rows for one key would be a broken upsert: say so rather than pick one.
        if found.insert(key.to_owned(), values).is_some() {
            found.insert(key.to_owned(), Err("more than one row".into()));
        }
    }
    Ok(found)
}

async fn redis_hashes(
    connection: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    store: &BTreeMap<String, Values>,
) -> Result<Found, RedisError> {
    let keys: Vec<&String> = store.keys().collect();
    let mut found = Found::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("HGETALL").arg(format!("{prefix}{key}"));
        }
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(connection)
                .await
                .map_err(|source| RedisError::Command {
                    what: "HGETALL",
                    source,
                })?;
        for (key, hash) in chunk.iter().zip(hashes) {
            if hash.is_empty() {
                continue;
            }
            found.insert((*key).clone(), hash_values(&hash));
        }
    }
    Ok(found)
}

fn hash_values(hash: &HashMap<String, String>) -> Result<Values, String> {
    let number = |field: &str| -> Result<u64, String> {
        hash.get(field)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("field {field} missing or not a number"))
    };
    let mood_text = hash.get("mood").map(String::as_str).unwrap_or_default();
    Ok(Values {
        hello_count: number("helloCount")?,
        hello_total_count: number("helloTotalCount")?,
        mood: mood(mood_text).ok_or_else(|| format!("mood {mood_text:?}"))?,
        revision: number("revision")?,
    })
}
