//! The commands as clients see them: each test talks to a live server over a socket, so the
//! replies are checked byte for byte through the parser, the connection loop and
//! [`crate::query::resp_commands`] together.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::test_server::{array, connect, expect, start, start_with, talk, until_closed, WAIT};
use super::RespLimits;
use crate::query::auth::{RespAuth, Secret};
use crate::query::resp_commands::{CROSSSLOT, DBSIZE, NOAUTH, READ_ONLY, WRONGPASS};
use crate::query::resp_protocol::COMMANDS;

/// `HGETALL alice` in RESP2.
const ALICE_HASH: &str = "*10\r\n$10\r\nhelloCount\r\n$1\r\n3\r\n$15\r\nhelloTotalCount\r\n\
    $1\r\n7\r\n$4\r\nmood\r\n$5\r\nHAPPY\r\n$8\r\nrevision\r\n$2\r\n12\r\n\
    $9\r\nupdatedAt\r\n$13\r\n1700000000123\r\n";

#[tokio::test]
async fn ping_echo_and_quit() {
    let server = start(RespLimits::default()).await;
    let mut client = connect(&server).await;
    talk(
        &mut client,
        &[
            ("PING", "+PONG\r\n"),
            ("ping hi", "$2\r\nhi\r\n"),
            (
                "PING a b",
                "-ERR wrong number of arguments for 'ping' command\r\n",
            ),
            ("ECHO hello", "$5\r\nhello\r\n"),
            ("QUIT", "+OK\r\n"),
        ],
    )
    .await;
    assert_eq!(until_closed(&mut client).await, b"");
}

#[tokio::test]
async fn reads_counters_and_hashes() {
    let server = start(RespLimits::default()).await;
    let mut client = connect(&server).await;
    let alice = ALICE_HASH;
    talk(
        &mut client,
        &[
            ("GET alice", "$1\r\n3\r\n"),
            ("gEt nobody", "$-1\r\n"),
            (
                "MGET alice bob nobody",
                "*3\r\n$1\r\n3\r\n$2\r\n12\r\n$-1\r\n",
            ),
            ("HGETALL alice", alice),
            ("hgetall nobody", "*0\r\n"),
            ("HGET bob mood", "$5\r\nANGRY\r\n"),
            ("HGET bob helloTotalCount", "$2\r\n20\r\n"),
            ("HGET alice nope", "$-1\r\n"),
            ("HGET nobody helloCount", "$-1\r\n"),
            ("EXISTS alice bob nobody", ":2\r\n"),
            (
                "GET",
                "-ERR wrong number of arguments for 'get' command\r\n",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn keys_owned_elsewhere_or_restoring_answer_like_a_cluster() {
    let server = start(RespLimits::default()).await;
    let mut client = connect(&server).await;
    let moved = "-MOVED 1 10.0.0.2:6380\r\n";
    let crossslot = std::str::from_utf8(CROSSSLOT).unwrap();
    let restoring = "-TRYAGAIN partition 2 is restoring (40/100 records)\r\n";
    talk(
        &mut client,
        &[
            ("GET remote-1", moved),
            ("HGETALL far", "-MOVED 5 10.0.0.3:6380\r\n"),
            ("GET restoring", restoring),
            (
                "GET orphan",
                "-TRYAGAIN partition 4 has no owner right now\r\n",
            ),
            ("GET broken", "-ERR store read failed: disk on fire\r\n"),
            ("MGET remote-1 remote-2", moved),
            ("MGET alice remote-1", crossslot),
            ("MGET remote-1 far", crossslot),
            ("MGET alice restoring", restoring),
            ("EXISTS remote-1", moved),
        ],
    )
    .await;
    let invalid = b"-ERR invalid key: key is not valid UTF-8\r\n";
    expect(&mut client, b"*2\r\n$3\r\nGET\r\n$1\r\n\xff\r\n", invalid).await;
    talk(&mut client, &[("GET alice", "$1\r\n3\r\n")]).await;
}

#[tokio::test]
async fn writes_and_unknown_commands_are_refused() {
    let server = start(RespLimits::default()).await;
    let mut client = connect(&server).await;
    let read_only = std::str::from_utf8(READ_ONLY).unwrap();
    for write in [
        "SET k v",
        "del k",
        "INCR k",
        "HSET k f v",
        "EXPIRE k 1",
        "FLUSHALL",
        "flushdb",
    ] {
        talk(&mut client, &[(write, read_only)]).await;
    }
    talk(
        &mut client,
        &[("FOO bar", "-ERR unknown command 'FOO'\r\n")],
    )
    .await;
    talk(
        &mut client,
        &[("B\r\nD", "-ERR unknown command 'B??D'\r\n")],
    )
    .await;
}

#[tokio::test]
async fn server_commands_satisfy_redis_tools() {
    let server = start(RespLimits::default()).await;
    let mut client = connect(&server).await;
    client.write_all(&array("INFO")).await.unwrap();
    let mut info = vec![0; 1024];
    let len = timeout(WAIT, client.read(&mut info))
        .await
        .unwrap()
        .unwrap();
    let info = String::from_utf8_lossy(&info[..len]);
    for line in [
        "# Server",
        "redis_version:7.0.0",
        "instance_id:node-a",
        "role:master",
    ] {
        assert!(info.contains(line), "{line} in {info}");
    }
    assert!(info.contains("connected_clients:1") && info.ends_with("# Keyspace\r\n\r\n"));
    let hello = "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n\
        $5\r\nproto\r\n:2\r\n$2\r\nid\r\n:1\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
        $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
    let get_info = "*2\r\n*6\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n\
        :1\r\n:1\r\n:1\r\n$-1\r\n";
    let dbsize = std::str::from_utf8(DBSIZE).unwrap();
    talk(
        &mut client,
        &[
            ("INFO keyspace", "$12\r\n# Keyspace\r\n\r\n"),
            ("COMMAND COUNT", ":17\r\n"),
            ("COMMAND DOCS", "*0\r\n"),
            ("COMMAND INFO get nope", get_info),
            ("HELLO", hello),
            ("HELLO 2", hello),
            ("HELLO 4", "-NOPROTO unsupported protocol version\r\n"),
            ("CLIENT GETNAME", "$-1\r\n"),
            ("CLIENT SETNAME me", "+OK\r\n"),
            ("client getname", "$2\r\nme\r\n"),
            ("CLIENT ID", ":1\r\n"),
            ("CLIENT SETINFO LIB-NAME x", "+OK\r\n"),
            (
                "CLIENT KILL",
                "-ERR unknown or malformed CLIENT subcommand 'KILL'\r\n",
            ),
            ("SELECT 0", "+OK\r\n"),
            ("SELECT 1", "-ERR DB index is out of range\r\n"),
            (
                "SELECT x",
                "-ERR value is not an integer or out of range\r\n",
            ),
            ("CONFIG GET save", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
            (
                "CONFIG GET appendonly",
                "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
            ),
            ("CONFIG GET maxmemory", "*0\r\n"),
            (
                "CLIENT SETNAME a\tb",
                std::str::from_utf8(BAD_NAME_REPLY).unwrap(),
            ),
            ("CONFIG SET a b", "-ERR only CONFIG GET is supported\r\n"),
            ("DBSIZE", dbsize),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_redis_client_library_reads_state() {
    let server = start(RespLimits::default()).await;
    let client = redis::Client::open(format!("redis://{}/", server.addr)).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    let get = redis::cmd("GET").arg("alice").query_async(&mut con).await;
    assert_eq!(get, Ok(Some(3_u64)));
    let mut mget = redis::cmd("MGET");
    mget.arg("alice").arg("bob").arg("nobody");
    let counts: Vec<Option<u64>> = mget.query_async(&mut con).await.unwrap();
    assert_eq!(counts, [Some(3), Some(12), None]);
    let hgetall = redis::cmd("HGETALL")
        .arg("alice")
        .query_async(&mut con)
        .await;
    let hash: std::collections::HashMap<String, String> = hgetall.unwrap();
    assert_eq!(
        (hash["helloCount"].as_str(), hash["mood"].as_str()),
        ("3", "HAPPY")
    );
    assert_eq!(hash["updatedAt"], "1700000000123");

    let moved = redis::cmd("GET")
        .arg("remote-1")
        .query_async::<u64>(&mut con)
        .await;
    let moved = moved.unwrap_err();
    assert_eq!(moved.code(), Some("MOVED"));
    assert_eq!(moved.redirect_node(), Some(("10.0.0.2:6380", 1)));
    let refused = redis::cmd("SET")
        .arg("a")
        .arg("b")
        .query_async::<()>(&mut con)
        .await;
    assert!(refused.unwrap_err().to_string().contains("read-only"));
    let commands: redis::Value = redis::cmd("COMMAND").query_async(&mut con).await.unwrap();
    assert!(matches!(commands, redis::Value::Array(v) if v.len() == COMMANDS.len()));
}

const BAD_NAME_REPLY: &[u8] = b"-ERR Client names cannot contain spaces, newlines or special \
    characters, and are at most 256 bytes.\r\n";

#[tokio::test]
async fn resp3_after_hello_3() {
    let server = start(RespLimits::default()).await;
    let mut client = connect(&server).await;
    let hello3 = "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n\
        $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:1\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
        $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
    let alice = "%5\r\n$10\r\nhelloCount\r\n$1\r\n3\r\n$15\r\nhelloTotalCount\r\n$1\r\n7\r\n\
        $4\r\nmood\r\n$5\r\nHAPPY\r\n$8\r\nrevision\r\n$2\r\n12\r\n\
        $9\r\nupdatedAt\r\n$13\r\n1700000000123\r\n";
    talk(
        &mut client,
        &[
            ("GET nobody", "$-1\r\n"),
            ("HELLO 3 SETNAME py", hello3),
            ("CLIENT GETNAME", "$2\r\npy\r\n"),
            ("GET nobody", "_\r\n"),
            ("MGET alice nobody", "*2\r\n$1\r\n3\r\n_\r\n"),
            ("HGETALL alice", alice),
            ("HGETALL nobody", "%0\r\n"),
            ("HGET alice nope", "_\r\n"),
            ("CONFIG GET save", "%1\r\n$4\r\nsave\r\n$0\r\n\r\n"),
            ("HELLO 2", &hello3.replace("%7", "*14").replace(":3", ":2")),
            ("GET nobody", "$-1\r\n"),
        ],
    )
    .await;
}

fn users() -> RespAuth {
    RespAuth {
        password: Secret::new("pw"),
        users: BTreeMap::from([("app".to_owned(), Secret::new("apppw"))]),
    }
}

#[tokio::test]
async fn auth_with_password_users_and_hello() {
    let server = start_with(RespLimits::default(), users()).await;
    let noauth = std::str::from_utf8(NOAUTH).unwrap();
    let wrongpass = std::str::from_utf8(WRONGPASS).unwrap();
    let mut client = connect(&server).await;
    talk(
        &mut client,
        &[
            ("GET alice", noauth),
            ("PING", noauth),
            ("SET a b", noauth),
            ("AUTH nope", wrongpass),
            ("AUTH app pw", wrongpass),
            ("AUTH pw", "+OK\r\n"),
            ("GET alice", "$1\r\n3\r\n"),
        ],
    )
    .await;
    let mut named = connect(&server).await;
    talk(
        &mut named,
        &[("AUTH app apppw", "+OK\r\n"), ("GET bob", "$2\r\n12\r\n")],
    )
    .await;

    let mut hello = connect(&server).await;
    talk(
        &mut hello,
        &[("HELLO 3 AUTH app wrong", wrongpass), ("GET alice", noauth)],
    )
    .await;
    hello
        .write_all(&array("HELLO 3 AUTH app apppw"))
        .await
        .unwrap();
    let mut head = [0; 2];
    timeout(WAIT, hello.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"%7");

    // Guessing closes the connection after a few tries.
    let mut guesser = connect(&server).await;
    let mut guesses = Vec::new();
    for _ in 0..20 {
        guesses.extend_from_slice(&array("AUTH guess"));
    }
    guesser.write_all(&guesses).await.unwrap();
    let answer = until_closed(&mut guesser).await;
    assert_eq!(answer, wrongpass.repeat(10).as_bytes());
}

#[tokio::test]
async fn auth_without_a_password_is_an_error_like_redis() {
    let server = start(RespLimits::default()).await;
    let mut client = connect(&server).await;
    client.write_all(&array("AUTH x")).await.unwrap();
    let mut reply = [0; 5];
    timeout(WAIT, client.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"-ERR ");
}

#[tokio::test]
async fn reads_after_an_offset_answer_or_say_not_yet() {
    let server = start(RespLimits {
        max_wait: Duration::from_millis(300),
        ..RespLimits::default()
    })
    .await;
    let mut client = connect(&server).await;
    let bad = "-ERR syntax error: a read's options are AFTER <offset> [WAITMS <milliseconds>]\r\n";
    let alice = ALICE_HASH;
    talk(
        &mut client,
        &[
            // alice's partition has applied offset 11.
            ("GET alice AFTER 11", "$1\r\n3\r\n"),
            ("GET alice waitms 50 after 3", "$1\r\n3\r\n"),
            ("HGET alice mood AFTER 11 WAITMS 10", "$5\r\nHAPPY\r\n"),
            ("HGETALL alice AFTER 0", alice),
            ("GET nobody AFTER 11", "$-1\r\n"),
            (
                "GET alice AFTER 12 WAITMS 50",
                "-NOTYET partition 0 has applied input up to offset 11, not yet 12\r\n",
            ),
            // bob's partition reports no position: never a silent answer.
            (
                "GET bob AFTER 0",
                "-NOTYET the key's partition has applied nothing here yet, not yet 0\r\n",
            ),
            // Owned elsewhere, forwarding off: redirected with the options kept by the
            // client, as any -MOVED.
            ("GET remote-1 AFTER 5", "-MOVED 1 10.0.0.2:6380\r\n"),
            (
                "GET broken AFTER 5",
                "-ERR store read failed: disk on fire\r\n",
            ),
            ("GET alice AFTER", bad),
            ("GET alice AFTER x", bad),
            ("GET alice WAITMS 10", bad),
            ("GET alice LATER 10", bad),
            ("GET alice x", bad),
            // Only the one-key reads take options.
            ("MGET alice AFTER 11", "*3\r\n$1\r\n3\r\n$-1\r\n$-1\r\n"),
            (
                "ECHO a b",
                "-ERR wrong number of arguments for 'echo' command\r\n",
            ),
        ],
    )
    .await;
    // A wait is bounded by max_wait whatever the client asks.
    let started = std::time::Instant::now();
    talk(
        &mut client,
        &[(
            "GET alice AFTER 99 WAITMS 99999999",
            "-NOTYET partition 0 has applied input up to offset 11, not yet 99\r\n",
        )],
    )
    .await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(2));
}
