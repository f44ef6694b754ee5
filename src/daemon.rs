//! `hello-streams run`: wires the stream thread, the query servers and the ownership reader
//! together, and stops them in order on SIGINT/SIGTERM (a second signal exits at once).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::engine::application::Application;
use crate::engine::local::LocalState;
use crate::engine::processor::{self, ProcessorError, Setup};
use crate::hello::queries::HelloQueries;
use crate::hello::HelloApp;
use crate::kafka::admin::{self, AdminError};
use crate::kafka::connect::{self, ConnectError, Progress};
use crate::liveness::{self, Liveness};
use crate::ownership::{self, Announcer, OwnerTable};
use crate::query::http_forward::HttpForwarder;
use crate::query::resp_forward::RespForwarder;
use crate::query::tls::{Tls, TlsError};
use crate::query::{self, Owner, StateQuery};
use crate::shutdown;
use crate::startup;
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {path} is not writable")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Topics(#[from] AdminError),
    #[error("kafka client failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("stream thread failed")]
    Processor(#[from] ProcessorError),
    #[error("stream thread panicked")]
    Panicked,
    #[error("config field `{}`: {source}", source.file().field())]
    Tls {
        #[source]
        source: TlsError,
    },
}

/// The instance id: configured, or generated once and kept beside the stores so a restart
/// reuses the transactional id and fences its previous incarnation immediately.
pub fn instance_id(config: &Config) -> Result<String, DaemonError> {
    let dir = config.state_dir.join(&config.application_id);
    let state_err = |source| DaemonError::StateDir {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(state_err)?;
    check_writable(&dir).map_err(state_err)?;
    if let Some(id) = &config.instance_id {
        return Ok(id.clone());
    }
    let file = dir.join("instance.id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = format!("{:016x}", random_u64());
    std::fs::write(&file, &id).map_err(state_err)?;
    Ok(id)
}

fn check_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".write-probe");
    std::fs::File::create(&probe)?.write_all(b"ok")?;
    std::fs::remove_file(probe)
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn advertised(configured: &str, bound: SocketAddr) -> String {
    if configured.is_empty() {
        bound.to_string()
    } else {
        configured.to_owned()
    }
}

pub fn run(config: Config) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let instance_id = instance_id(&config)?;
    tracing::info!(file = %config.file, "configuration");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("query")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(serve(config, instance_id))
}

async fn serve(config: Arc<Config>, instance_id: String) -> Result<(), DaemonError> {
    // Checked by the configuration already; loaded again here, where it is used.
    let tls = match &config.query.tls {
        Some(settings) => Some(Arc::new(
            Tls::load(settings).map_err(|source| DaemonError::Tls { source })?,
        )),
        None => None,
    };
    let bind = |what, addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { what, addr, source })
    };
    let http = bind("query.http_addr", config.query.http_addr).await?;
    let resp = bind("query.resp_addr", config.query.resp_addr).await?;
    let http_addr = http.local_addr().map_err(DaemonError::Runtime)?;
    let resp_addr = resp.local_addr().map_err(DaemonError::Runtime)?;

    // Until the topics are known there is no state to serve, but /healthz answers from the
    // start and /readyz says what the start waits for.
    let progress = Arc::new(Progress::default());
    let starting = startup::serve(
        http,
        config.kafka.bootstrap_servers.clone(),
        progress.clone(),
        tls.clone(),
    );
    tracing::info!(
        bootstrap_servers = %config.kafka.bootstrap_servers,
        security_protocol = config.kafka.security.protocol.as_str(),
        http = %http_addr,
        "connecting to kafka"
    );
    let probe_config = config.clone();
    tokio::task::spawn_blocking(move || connect::wait_for_cluster(&probe_config, &progress))
        .await
        .map_err(|_| DaemonError::Panicked)??;
    let app: Arc<dyn Application> = Arc::new(HelloApp::new(&config));
    let admin = admin::client(&config)?;
    let layout = admin::ensure_topics(&admin, &config, &*app).await?;
    // Dropping the admin client takes up to 100 ms; every restart would wait for it.
    let admin_closer = std::thread::spawn(move || drop(admin));
    let http = starting.finish().await.map_err(DaemonError::Runtime)?;
    let me = Owner {
        instance_id: instance_id.clone(),
        http_addr: advertised(&config.query.advertised_http_addr, http_addr),
        resp_addr: advertised(&config.query.advertised_resp_addr, resp_addr),
    };
    tracing::info!(
        instance = %instance_id,
        http = %http_addr,
        resp = %resp_addr,
        partitions = layout.input,
        guarantee = config.guarantee.as_str(),
        "hello-streams starting"
    );

    let (trigger, _) = shutdown::channel();
    let metrics = Arc::new(Metrics::new(config.stream_threads));
    let owners = Arc::new(OwnerTable::default());
    let owners_reader = ownership::spawn_reader(&config, owners.clone(), trigger.subscribe())?;
    let local = Arc::new(LocalState::new(
        &config,
        &instance_id,
        layout.input,
        owners,
        metrics.clone(),
    ));
    let state: Arc<dyn StateQuery> = Arc::new(HelloQueries::new(&config, local.clone()));

    let q = &config.query;
    let reserved = query::fd_budget::reserved(layout.input);
    let (resp_clients, http_clients) = query::fd_budget::fit_caps(
        q.resp_max_connections,
        q.limits.http_max_connections,
        reserved,
    );
    let limits = query::settings::Limits {
        http_max_connections: http_clients,
        ..q.limits
    };
    let api = query::http::Api {
        query: state.clone(),
        limits,
        auth: q.http_auth.clone(),
        forwarder: q.forwarding.enabled.then(|| {
            let token = q.http_auth.token.clone();
            HttpForwarder::new(&q.forwarding, token, &instance_id, tls.as_deref())
        }),
        tls: tls.clone(),
        stats: metrics.http.clone(),
    };
    let http_task = tokio::spawn(query::http::serve(http, api, trigger.subscribe()));
    let resp_server = query::resp::RespServer {
        query: state,
        limits: query::resp::RespLimits {
            max_connections: resp_clients,
            max_request_bytes: q.limits.resp_max_request_bytes,
            idle_timeout: q.limits.resp_idle_timeout,
            output_buffer_bytes: q.limits.resp_output_buffer_bytes,
            output_timeout: q.limits.resp_output_timeout,
            max_wait: q.limits.max_wait,
            ..query::resp::RespLimits::default()
        },
        auth: q.resp_auth.clone(),
        forwarder: q.forwarding.enabled.then(|| {
            let login = q.resp_auth.credentials(&q.forwarding.user);
            Arc::new(RespForwarder::new(&q.forwarding, login, tls.clone()))
        }),
        tls,
        stats: metrics.resp.clone(),
    };
    let resp_task = tokio::spawn(query::resp::serve(resp, resp_server, trigger.subscribe()));

    let announcer = Arc::new(Announcer::new(&config, me)?);
    let liveness = Arc::new(Liveness::new(config.stream_threads, config.stall_timeout));
    let watchdog = liveness::spawn_watchdog(liveness.clone(), metrics.clone(), trigger.subscribe())
        .map_err(DaemonError::Runtime)?;
    // Any stream thread that ends on its own (an error) stops the whole instance, like an
    // uncaught exception in a Kafka Streams thread with the default SHUTDOWN_CLIENT handler.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream_threads = Vec::with_capacity(config.stream_threads);
    for thread in 0..config.stream_threads {
        let setup = Setup {
            config: config.clone(),
            app: app.clone(),
            layout: layout.clone(),
            instance_id: instance_id.clone(),
            thread,
            local: local.clone(),
            metrics: metrics.clone(),
            announcer: Some(announcer.clone()),
            liveness: liveness.clone(),
        };
        let stream_shutdown = trigger.subscribe();
        let done_tx = done_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("stream-thread-{}", thread + 1))
            .spawn(move || {
                let result = processor::run(setup, stream_shutdown);
                let _ = done_tx.send(());
                result
            })
            .map_err(DaemonError::Runtime)?;
        stream_threads.push(handle);
    }
    drop(done_tx);

    tokio::select! {
        _ = wait_for_signal() => {
            tracing::info!("shutting down: committing and closing tasks (signal again to exit at once)");
            trigger.fire();
            tokio::spawn(async {
                wait_for_signal().await;
                eprintln!("second signal: exiting without a clean shutdown");
                std::process::exit(130);
            });
        }
        _ = done_rx.recv() => {
            // A stream thread ended on its own (an error); stop the others and the servers.
            trigger.fire();
        }
    }
    let results = tokio::task::spawn_blocking(move || {
        stream_threads
            .into_iter()
            .map(|t| t.join())
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| DaemonError::Panicked)?;
    trigger.fire();
    for task in [http_task, resp_task] {
        match task.await {
            Ok(Err(error)) => tracing::warn!(%error, "query server ended with an error"),
            Err(error) => tracing::warn!(%error, "query server task failed"),
            Ok(Ok(())) => {}
        }
    }
    let _ = owners_reader.join();
    let _ = watchdog.join();
    let _ = admin_closer.join();
    // The first failure is the cause; threads stopped by it end cleanly or with its echo.
    for result in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => return Err(DaemonError::Panicked),
        }
    }
    tracing::info!("hello-streams stopped cleanly");
    Ok(())
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
