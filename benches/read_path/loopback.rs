//! The loopback rows: one `GET` at a time over a synchronous `redis` connection, against
//! hello-streams' RESP server and against a `redis-server` of the bench's own holding the same
//! values, so that the client's and the loopback's share of a request is visible.

use std::hint::black_box;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::timing::{case, Case};
use crate::{Data, KEYS, KEY_LEN};

fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// A redis-server of our own, stopped by its pid (SIGTERM) when dropped.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
}

impl RedisServer {
    pub(crate) fn start(dir: &Path) -> Option<RedisServer> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", dir.to_str().unwrap()])
            .args(["--logfile", dir.join("redis.log").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                eprintln!("redis-server not started ({error}); skipping the Redis row");
                return None;
            }
        };
        let server = RedisServer { child, port };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
        for _ in 0..100 {
            if let Ok(mut con) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return Some(server);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("redis-server did not answer on port {port}; skipping the Redis row");
        None
    }
}

impl RedisServer {
    /// SETs every key to its `helloCount`, what hello-streams answers a `GET` with; returns
    /// the server's version.
    pub(crate) fn load(&self, data: &Data) -> Option<String> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
        let mut con = client.get_connection().expect("connect to redis");
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(10_000) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                pipe.cmd("SET")
                    .arg(&data.keys[i])
                    .arg(data.states[i].hello_count)
                    .ignore();
            }
            pipe.query::<()>(&mut con).expect("load redis");
        }
        let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request at a time over a synchronous connection: GET `keys[i]`, expecting a number.
pub(crate) fn get_case(name: String, addr: SocketAddr, keys: &[[u8; KEY_LEN]]) -> Case<'_> {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut con = client.get_connection().expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    case("loopback", &name.clone(), move |i| {
        let value: Option<u64> = redis::cmd("GET")
            .arg(&keys[i][..])
            .query(&mut con)
            .expect("GET");
        assert!(
            value.is_some(),
            "{name}: key {} not found",
            keys[i].escape_ascii()
        );
        black_box(value);
    })
}
