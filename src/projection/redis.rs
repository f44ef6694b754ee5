//! The Redis target: a hash per key (`helloCount`, `helloTotalCount`, `mood`, `revision`),
//! so a stateless service reading Redis sees exactly the store's values.
//!
//! A batch is one call of one Lua script (`EVALSHA`), which Redis runs atomically: it sets
//! each key's hash only when the new revision is higher than the stored one, and stores the
//! batch's last offset in the offsets hash. Redis does not undo the writes of a script
//! that fails half way; the offset is written last, so the restarted projection replays the
//! batch and the revision checks turn the replayed half into no-ops.
//!
//! The offsets live in the hash `\xffhello-streams:offsets:<group>` (field: partition,
//! value: last applied offset). A key starting with 0xFF is not UTF-8, so it can never be
//! an entity id, whatever the prefix. All keys of a script must hash to one slot in a Redis
//! Cluster; this target is for a single Redis (or a primary with replicas).

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;

use super::batch::Batch;
use super::{Applied, Target};

const SCRIPT: &str = r"
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local written, unchanged = 0, 0
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 4
  local current = tonumber(redis.call('HGET', KEYS[i], 'revision') or '0')
  if tonumber(ARGV[a]) > current then
    redis.call('HSET', KEYS[i], 'helloCount', ARGV[a + 1], 'helloTotalCount', ARGV[a + 2],
      'mood', ARGV[a + 3], 'revision', ARGV[a])
    written = written + 1
  else
    unchanged = unchanged + 1
  end
end
if tonumber(ARGV[2]) > stored then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return {written, unchanged}
";

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://127.0.0.1:6379/0` (`redis://:password@host:port/db` with AUTH).
    pub url: String,
    /// Prepended to every entity key (empty: the hash is named like the key).
    pub prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot connect to Redis at {url}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis {what} failed")]
    Command {
        what: &'static str,
        #[source]
        source: redis::RedisError,
    },
}

fn command(what: &'static str) -> impl FnOnce(redis::RedisError) -> RedisError {
    move |source| RedisError::Command { what, source }
}

pub fn offsets_key(group: &str) -> Vec<u8> {
    let mut key = b"\xffhello-streams:offsets:".to_vec();
    key.extend_from_slice(group.as_bytes());
    key
}

pub async fn connect(url: &str) -> Result<MultiplexedConnection, RedisError> {
    let connect = |source| RedisError::Connect {
        url: url.to_owned(),
        source,
    };
    let client = redis::Client::open(url).map_err(connect)?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(connect)
}

pub struct RedisTarget {
    connection: MultiplexedConnection,
    prefix: String,
    sha: String,
}

impl RedisTarget {
    pub async fn open(options: &RedisOptions) -> Result<Self, RedisError> {
        let mut connection = connect(&options.url).await?;
        let sha = load_script(&mut connection).await?;
        Ok(RedisTarget {
            connection,
            prefix: options.prefix.clone(),
            sha,
        })
    }

    /// The script's invocation for a batch, with the script's current digest.
    fn invocation(&self, group: &str, batch: &Batch) -> redis::Cmd {
        let latest = batch.latest();
        let mut invocation = redis::cmd("EVALSHA");
        invocation
            .arg(&self.sha)
            .arg(latest.len() + 1)
            .arg(offsets_key(group));
        for update in &latest {
            let mut key = Vec::with_capacity(self.prefix.len() + update.key.len());
            key.extend_from_slice(self.prefix.as_bytes());
            key.extend_from_slice(update.key.as_bytes());
            invocation.arg(key);
        }
        invocation.arg(batch.partition).arg(batch.last_offset);
        for update in &latest {
            invocation
                .arg(update.revision)
                .arg(update.hello_count)
                .arg(update.hello_total_count)
                .arg(update.mood.as_str());
        }
        invocation
    }
}

async fn load_script(connection: &mut MultiplexedConnection) -> Result<String, RedisError> {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SCRIPT)
        .query_async(connection)
        .await
        .map_err(command("SCRIPT LOAD"))
}

impl Target for RedisTarget {
    const NAME: &'static str = "redis";
    type Error = RedisError;

    async fn stored_offsets(
        &mut self,
        group: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, RedisError> {
        let values: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(offsets_key(group))
            .arg(partitions)
            .query_async(&mut self.connection)
            .await
            .map_err(command("offset lookup"))?;
        Ok(partitions
            .iter()
            .zip(values)
            .filter_map(|(p, v)| Some((*p, v?)))
            .filter(|(_, offset)| *offset >= 0)
            .collect())
    }

    async fn apply(&mut self, group: &str, batch: &Batch) -> Result<Applied, RedisError> {
        let result = self
            .invocation(group, batch)
            .query_async(&mut self.connection)
            .await;
        let (written, unchanged): (u64, u64) = match result {
            Ok(counts) => counts,
            // The server lost its script cache (a restart, SCRIPT FLUSH): load it again.
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.sha = load_script(&mut self.connection).await?;
                self.invocation(group, batch)
                    .query_async(&mut self.connection)
                    .await
                    .map_err(command("batch script"))?
            }
            Err(error) => return Err(command("batch script")(error)),
        };
        Ok(Applied {
            written,
            unchanged,
            rejected: 0,
        })
    }
}
