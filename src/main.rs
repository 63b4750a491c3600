//! The command line: parse, load the configuration, set up logging, call the library, map the
//! result to an exit code (0 ok, 1 runtime failure, 78 configuration).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use docker_image_cleaner::config::{self, EXIT_CONFIG, Flags};
use docker_image_cleaner::cycle::Outcome;
use docker_image_cleaner::{daemon, error_chain, logging, status};
use tokio_util::sync::CancellationToken;

/// Keeps a Kubernetes node's Docker storage below a high watermark: removes stopped containers
/// and the least recently used images, cordoning the node meanwhile.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file [default: $DOCKER_IMAGE_CLEANER_CONFIG, else /etc/docker-image-cleaner.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Where logs go.
    #[arg(long, global = true, value_enum, default_value_t = logging::Target::Auto)]
    log: logging::Target,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run as a daemon: a pass every interval (the default).
    Run {
        /// Remove nothing; log the plan of each pass.
        #[arg(long)]
        dry_run: bool,
    },
    /// One measure-and-clean pass, then exit (non-zero when the pass failed).
    Once {
        /// Remove nothing; print the plan that would run.
        #[arg(long)]
        dry_run: bool,
    },
    /// Usage against the watermarks and the eviction order; deletes nothing.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and print it with the source of each value.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run { dry_run: false });
    let dry_run = matches!(command, Command::Run { dry_run: true } | Command::Once { dry_run: true });
    let env: HashMap<String, String> = std::env::vars().collect();
    let loaded = match config::load(cli.config.as_deref(), &env, Flags { dry_run }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("docker-image-cleaner: invalid configuration: {}", error_chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::CheckConfig = command {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        match &loaded.file {
            Some(f) => println!("# configuration file {}", f.display()),
            None => println!("# no configuration file ({} is absent): defaults and environment", config::DEFAULT_PATH),
        }
        print!("{}", loaded.render());
        return ExitCode::SUCCESS;
    }
    logging::init(cli.log, loaded.config.log_level.filter());
    for w in &loaded.warnings {
        log::warn!("{w}");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = loaded.config;
    let shutdown = CancellationToken::new();
    runtime.block_on(async {
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let failed = |e: daemon::Error| {
            log::error!("{}", error_chain(&e));
            if e.is_config() { ExitCode::from(EXIT_CONFIG) } else { ExitCode::FAILURE }
        };
        match command {
            Command::Run { .. } => match daemon::run(&config, &shutdown, &()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(e),
            },
            Command::Once { .. } => match daemon::once(&config, &shutdown).await {
                Ok(report) => {
                    if report.outcome == Outcome::DryRun {
                        if let Some(plan) = &report.plan {
                            print!("{plan}");
                        }
                    }
                    println!("{}", report.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            },
            Command::Status { json } => match status::status(&config).await {
                Ok(s) if json => match serde_json::to_string_pretty(&s) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        log::error!("cannot encode the status: {e}");
                        ExitCode::FAILURE
                    }
                },
                Ok(s) => {
                    print!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            },
            Command::CheckConfig => ExitCode::SUCCESS,
        }
    })
}

/// SIGTERM or SIGINT: ask everything to stop (a removal in flight finishes).
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        log::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM received"),
        _ = int.recv() => log::info!("SIGINT received"),
    }
    shutdown.cancel();
}
