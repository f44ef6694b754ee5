//! A loopback TCP proxy the test controls, between daemons and the 3-node cluster, and the
//! case that cuts the daemon's broker connections while its commits are in flight.
//!
//! kafka/local-kafka gives each node of the 3-node cluster a second client listener,
//! PROXIED, on client port + 1500, advertised as client port + 2500. The proxy listens on
//! client port + 2500 and forwards to client port + 1500. A daemon bootstrapped through
//! the proxy is told the proxy's addresses in every metadata answer, so all its traffic
//! (group coordinator, transaction coordinator, partition leaders) goes through the proxy;
//! the test's own clients keep using the normal listener.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

/// At most this many proxied connections at once (each costs two threads); more are
/// refused.
const MAX_CONNECTIONS: usize = 200;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    refuse_until: Mutex<Option<Instant>>,
    /// Both sockets of every live connection, to cut them from outside.
    connections: Mutex<HashMap<u64, [TcpStream; 2]>>,
    next_id: AtomicU64,
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

impl Shared {
    fn refusing(&self) -> bool {
        self.refuse_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    fn close_all(&self) -> usize {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for pair in connections.values() {
            for s in pair {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        connections.len()
    }
}

/// The proxy; stops (closing every connection) when dropped.
pub struct Proxy {
    shared: Arc<Shared>,
    ports: Vec<u16>,
    acceptors: Vec<JoinHandle<()>>,
}

/// The client ports of the cluster under test (from the bootstrap servers).
fn broker_ports() -> Vec<u16> {
    bootstrap()
        .split(',')
        .filter_map(|a| a.trim().rsplit_once(':')?.1.parse().ok())
        .collect()
}

impl Proxy {
    /// Listens on client port + 2500 of every node, forwarding to client port + 1500.
    pub fn start() -> Proxy {
        let shared = Arc::new(Shared::default());
        let mut ports = Vec::new();
        let mut acceptors = Vec::new();
        for port in broker_ports() {
            let (listen, upstream) = (port + 2_500, port + 1_500);
            let target: SocketAddr = ([127, 0, 0, 1], upstream).into();
            assert!(
                TcpStream::connect_timeout(&target, Duration::from_secs(2)).is_ok(),
                "no PROXIED listener on {target}: the 3-node cluster was started before \
                 kafka/local-kafka had it; restart it (kafka/local-kafka --cluster three-node \
                 stop, then scripts/faults starts it again)"
            );
            let listener = bind(listen);
            listener
                .set_nonblocking(true)
                .expect("nonblocking listener");
            let shared = shared.clone();
            acceptors.push(
                std::thread::Builder::new()
                    .name(format!("proxy-{listen}"))
                    .spawn(move || accept_loop(listener, target, shared))
                    .expect("proxy thread"),
            );
            ports.push(listen);
        }
        assert!(!ports.is_empty(), "no brokers in {}", bootstrap());
        Proxy {
            shared,
            ports,
            acceptors,
        }
    }

    /// The bootstrap servers through the proxy.
    pub fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A daemon setting that sends all its Kafka traffic through the proxy.
    pub fn setting(&self) -> String {
        format!("kafka.bootstrap_servers=\"{}\"", self.bootstrap())
    }

    /// Closes every proxied connection and refuses new ones for `refuse`; returns how many
    /// connections were cut.
    pub fn cut(&self, refuse: Duration) -> usize {
        *self
            .shared
            .refuse_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + refuse);
        self.shared.close_all()
    }

    /// (connections accepted, connections refused) so far.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.shared.accepted.load(Ordering::Relaxed),
            self.shared.refused.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.close_all();
        for a in self.acceptors.drain(..) {
            let _ = a.join();
        }
    }
}

/// Binds 127.0.0.1:port, retrying for a while: a previous case's proxy may still be closing.
fn bind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return listener,
            Err(e) if Instant::now() > deadline => panic!("proxy: bind 127.0.0.1:{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Acquire) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let full = shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            >= MAX_CONNECTIONS;
        if shared.refusing() || full {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            // The node is down: the client sees the connection close, as with the node.
            shared.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        connect(client, upstream, &shared);
    }
}

/// Registers a connection and starts its two pumps; the last pump to finish unregisters it.
fn connect(client: TcpStream, upstream: TcpStream, shared: &Arc<Shared>) {
    let clones = || -> std::io::Result<[TcpStream; 2]> {
        client.set_nonblocking(false)?;
        client.set_nodelay(true)?;
        upstream.set_nodelay(true)?;
        Ok([client.try_clone()?, upstream.try_clone()?])
    };
    let (Ok(registered), Ok(c2), Ok(u2)) = (clones(), client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    shared
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, registered);
    let pumps = Arc::new(AtomicUsize::new(2));
    for (from, to) in [(client, u2), (upstream, c2)] {
        let (registry, pumps) = (shared.clone(), pumps.clone());
        let spawned = std::thread::Builder::new()
            .name("proxy-pump".into())
            .spawn(move || {
                pump(&from, &to);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                if pumps.fetch_sub(1, Ordering::AcqRel) == 1 {
                    registry
                        .connections
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                }
            });
        if spawned.is_err() {
            shared.close_all();
        }
    }
}

fn pump(mut from: &TcpStream, mut to: &TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Case 16: all of the daemon's broker connections go through the proxy, which cuts them
/// (and refuses new ones for up to 3 s) eight times while input arrives and transactions
/// commit every 100 ms, so some commits have an unknown outcome. The daemon rides it out
/// (same process) and everything is exact.
#[test]
fn c16_broker_connections_cut_during_commits() {
    let case = case(
        "c16_broker_connections_cut_during_commits",
        Duration::from_secs(300),
    );
    let app = App::new("f16", 4);
    let events = workload(48_000, 480, 1616);
    let proxy = Proxy::start();
    case.step(format!(
        "proxy up: daemon bootstraps via {}",
        proxy.bootstrap()
    ));
    let mut d = case.start(daemon(&app, "a").set(&proxy.setting()));
    d.wait_ready(Duration::from_secs(90));
    let pid = pid_of(&d);
    let feeder = feed(&app.input, raw(&events), 300, Duration::from_millis(100));
    let refuse_ms = [0u64, 500, 2_000, 0, 1_000, 3_000, 0, 200];
    for (i, refuse) in refuse_ms.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(1_200 + 300 * (i as u64 % 4)));
        let commits = metric_or_nan(&d, "hello_streams_commit_total");
        let cut = proxy.cut(Duration::from_millis(*refuse));
        case.step(format!(
            "cut #{}: {cut} connections closed, new ones refused for {refuse} ms \
             ({commits} commits so far, feeder running: {})",
            i + 1,
            !feeder.is_finished()
        ));
    }
    let fed = join_feeder(feeder);
    let (accepted, refused) = proxy.counts();
    case.step(format!(
        "fed {fed} events; proxy accepted {accepted} connections, refused {refused}"
    ));
    assert!(
        alive(pid),
        "the daemon exited after its connections were cut; log:\n{}",
        log_tail(&d, 120)
    );
    d.wait_ready(Duration::from_secs(90));
    check_everything(&case, &app, &events, &[], d.http_port);
    assert!(alive(pid), "the daemon is still the same process");
    let log = plain(&d.log());
    case.step(format!(
        "rode it out: {} aborts, {} producers recreated, {} 'commit failed' lines",
        metric_or_nan(&d, "hello_streams_abort_total"),
        metric_or_nan(&d, "hello_streams_producer_recreated_total"),
        log.matches("commit failed").count()
    ));
}
