//! The `hello-streams` binary: parse flags, load the configuration, run the command, and turn
//! errors into one-line messages and exit codes. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use hello_streams::cli::{Cli, Command, StateCommand};
use hello_streams::{config, daemon, drill, inspect, query, telemetry};

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
            telemetry::init_logging(&config.log_filter);
            daemon::run(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
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
        Command::Drill {
            partitions,
            scratch,
        } => {
            telemetry::init_logging("warn");
            let options = drill::DrillOptions {
                partitions: (!partitions.is_empty()).then_some(partitions),
                scratch,
            };
            let reports = drill::run(&config, &options)?;
            let (mut keys, mut records, mut seconds, mut bad) = (0, 0, 0.0, 0);
            println!("partition  keys  records  seconds  records/s  mismatches");
            for r in &reports {
                println!(
                    "{:>9}  {:>4}  {:>7}  {:>7.2}  {:>9.0}  {:>10}",
                    r.partition,
                    r.keys,
                    r.records,
                    r.seconds,
                    r.rate(),
                    r.mismatches.len()
                );
                for m in r.mismatches.iter().take(20) {
                    println!("    mismatch {m}");
                }
                keys += r.keys;
                records += r.records;
                seconds += r.seconds;
                bad += r.mismatches.len();
            }
            let rate = if seconds > 0.0 {
                records as f64 / seconds
            } else {
                0.0
            };
            println!("total: {keys} keys, {records} records replayed in {seconds:.2}s ({rate:.0} records/s), {bad} mismatches");
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
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
