//! A RESP server on a loopback port over [`FakeQuery`]'s keys, and a client that speaks to it
//! byte for byte, for the tests of every part of the server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{serve, RespLimits, RespServer};
use crate::query::auth::RespAuth;
use crate::query::http::fake::FakeQuery;
use crate::query::resp_protocol::bulk;
use crate::shutdown::{self, Trigger};

pub(super) const WAIT: Duration = Duration::from_secs(5);

pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) trigger: Trigger,
    pub(super) task: JoinHandle<io::Result<()>>,
}

pub(super) async fn start(limits: RespLimits) -> Server {
    start_with(limits, RespAuth::default()).await
}

pub(super) async fn start_with(limits: RespLimits, auth: RespAuth) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = shutdown::channel();
    let query = Arc::new(FakeQuery::new());
    let server = RespServer {
        auth,
        ..RespServer::open(query, limits)
    };
    let task = tokio::spawn(serve(listener, server, shutdown));
    Server {
        addr,
        trigger,
        task,
    }
}

pub(super) async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.addr).await.unwrap()
}

/// Encodes a space-separated command as a RESP array, as client libraries send it.
pub(super) fn array(command: &str) -> Vec<u8> {
    let words: Vec<&str> = command.split(' ').collect();
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    words
        .iter()
        .for_each(|word| bulk(&mut out, word.as_bytes()));
    out
}

/// Sends `request` and asserts that exactly `reply` comes back.
pub(super) async fn expect(stream: &mut TcpStream, request: &[u8], reply: &[u8]) {
    stream.write_all(request).await.unwrap();
    let mut got = vec![0; reply.len()];
    timeout(WAIT, stream.read_exact(&mut got))
        .await
        .expect("reply in time")
        .unwrap();
    let (got, want) = (
        got.escape_ascii().to_string(),
        reply.escape_ascii().to_string(),
    );
    assert_eq!(got, want, "request {}", request.escape_ascii());
}

/// Sends each command as a RESP array and checks its reply, in order.
pub(super) async fn talk(stream: &mut TcpStream, script: &[(&str, &str)]) {
    for (command, reply) in script {
        expect(stream, &array(command), reply.as_bytes()).await;
    }
}

/// Everything the server sends until it closes (a reset counts as closed).
pub(super) async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = timeout(WAIT, stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "server closed in time");
    got
}
