//! The `hello-streams` binary: parse flags, load the configuration, run the command, and turn
//! errors into one-line messages and exit codes. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use hello_streams::cli::{Cli, Command, ProjectionCommand, ProjectionFlags, StateCommand};
use hello_streams::projection::{self, postgres, redis, verify};
use hello_streams::{config, daemon, drill, inspect, query, telemetry};

/// jemalloc for everything in the process: Rust, and through its unprefixed `malloc`, RocksDB
/// and librdkafka too; with glibc's, librdkafka's delivery thread and the stream thread fought
/// over one arena lock (BENCHMARKS.md, "Why the code is the way it is").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Two arenas and freed pages returned after 1 s: jemalloc's defaults cost peak RSS and bought
/// no speed (BENCHMARKS.md). `MALLOC_CONF` in the environment still wins.
#[export_name = "malloc_conf"]
static MALLOC_CONF: ConfString =
    ConfString(c"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// jemalloc reads `malloc_conf` as a `const char *`; a raw pointer is not `Sync` by itself.
#[repr(transparent)]
struct ConfString(*const std::ffi::c_char);

// SAFETY: it points to an immutable, 'static C string.
unsafe impl Sync for ConfString {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line names the flag; the usage block would bury it.
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see hello-streams --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line: "a: b: c".
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = config::load(&cli.config.sources())?;
    match cli.command {
        Command::Run => {
            telemetry::init_logging(&config.log_filter, config.log_format);
            daemon::run(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            println!("configuration file: {}", config.file);
            println!("{config:#?}");
            println!("config ok");
            Ok(ExitCode::SUCCESS)
        }
        Command::State {
            command: StateCommand::Get { key },
        } => {
            if inspect::get(&config, &key, &mut std::io::stdout().lock())? {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("key {key:?} not found in the local stores");
                Ok(ExitCode::from(1))
            }
        }
        Command::State {
            command: StateCommand::Dump,
        } => {
            let keys = inspect::dump(&config, &mut std::io::stdout().lock())?;
            eprintln!("{keys} keys");
            Ok(ExitCode::SUCCESS)
        }
        Command::State {
            command: StateCommand::Windows,
        } => {
            let windows = inspect::dump_windows(&config, &mut std::io::stdout().lock())?;
            eprintln!("{windows} windows");
            Ok(ExitCode::SUCCESS)
        }
        Command::Drill {
            partitions,
            scratch,
        } => {
            telemetry::init_logging("warn", config.log_format);
            let options = drill::DrillOptions {
                partitions: (!partitions.is_empty()).then_some(partitions),
                scratch,
            };
            let reports = drill::run(&config, &options)?;
            let (mut keys, mut windows, mut records, mut seconds, mut bad) = (0, 0, 0, 0.0, 0);
            println!("partition  keys  windows  records  seconds  records/s  mismatches");
            for r in &reports {
                println!(
                    "{:>9}  {:>4}  {:>7}  {:>7}  {:>7.2}  {:>9.0}  {:>10}",
                    r.partition,
                    r.keys,
                    r.windows,
                    r.records,
                    r.seconds,
                    r.rate(),
                    r.mismatches.len()
                );
                for m in r.mismatches.iter().take(20) {
                    println!("    mismatch {m}");
                }
                keys += r.keys;
                windows += r.windows;
                records += r.records;
                seconds += r.seconds;
                bad += r.mismatches.len();
            }
            let rate = if seconds > 0.0 {
                records as f64 / seconds
            } else {
                0.0
            };
            println!("total: {keys} keys, {windows} windows, {records} records replayed in {seconds:.2}s ({rate:.0} records/s), {bad} mismatches");
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Projection { command } => {
            telemetry::init_logging(&config.log_filter, config.log_format);
            run_projection(&config, command)
        }
        Command::Query { key, url } => {
            let base = url.unwrap_or_else(|| format!("http://{}", config.query.http_addr));
            let (status, body) = query::client::get_state(&base, &key)?;
            println!("{}", body.trim_end());
            Ok(if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn settings(
    config: &config::Config,
    target: &str,
    flags: ProjectionFlags,
) -> Result<projection::Settings, projection::ProjectionError> {
    let mut settings = projection::Settings::new(config, target, flags.group)?;
    settings.batch_records = flags.batch_records as usize;
    settings.batch_interval = std::time::Duration::from_millis(flags.batch_interval_ms);
    settings.metrics_addr = flags.metrics_addr;
    Ok(settings)
}

fn run_projection(
    config: &config::Config,
    command: ProjectionCommand,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        ProjectionCommand::Postgres {
            url,
            create_tables,
            event_journal,
            entity_type,
            flags,
        } => {
            projection::check_entity_type(&entity_type)?;
            let settings = settings(config, "postgres", flags)?;
            let options = postgres::PostgresOptions {
                url,
                create_tables,
                event_journal,
                entity_type,
            };
            let open = postgres::PostgresTarget::open(&options, &settings.group);
            projection::run_command(config, &settings, open)?;
        }
        ProjectionCommand::Redis { url, prefix, flags } => {
            let settings = settings(config, "redis", flags)?;
            let options = redis::RedisOptions { url, prefix };
            projection::run_command(config, &settings, redis::RedisTarget::open(&options))?;
        }
        ProjectionCommand::Verify {
            postgres,
            entity_type,
            redis,
            prefix,
            wait_secs,
        } => {
            let options = verify::VerifyOptions {
                postgres,
                entity_type,
                redis,
                redis_prefix: prefix,
                wait: std::time::Duration::from_secs(wait_secs),
            };
            let report = verify::run(config, &options)?;
            for mismatch in report.mismatches.iter().take(50) {
                println!("mismatch {mismatch}");
            }
            let count = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
            println!(
                "verified {} store keys: postgres rows {}, redis hashes {}, {} mismatches",
                report.keys,
                count(report.postgres_rows),
                count(report.redis_hashes),
                report.mismatches.len()
            );
            if !report.mismatches.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
