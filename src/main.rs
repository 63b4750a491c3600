//! The command line: parse, load the configuration, set up logging, call the library, map the
//! result to an exit code (0 ok, 1 runtime failure, 78 configuration).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use docker_image_cleaner::config::{self, EXIT_CONFIG, Flags};
use docker_image_cleaner::notify::Notifier;
use docker_image_cleaner::policy::Outcome;
use docker_image_cleaner::{daemon, error_chain, logging, status};
use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::mpsc;
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
    let dry_run = matches!(
        command,
        Command::Run { dry_run: true } | Command::Once { dry_run: true }
    );
    // vars_os: a variable that is not UTF-8 (a Latin-1 EnvironmentFile) must not panic here;
    // the configuration refuses it only when it is one of ours.
    let env: config::Env = std::env::vars_os().collect();
    let loaded = match config::load(cli.config.as_deref(), &env, Flags { dry_run }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "docker-image-cleaner: invalid configuration: {}",
                error_chain(&e)
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::CheckConfig = command {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        match &loaded.file {
            Some(f) => println!("# configuration file {}", f.display()),
            None => println!(
                "# no configuration file ({} is absent): defaults and environment",
                config::DEFAULT_PATH
            ),
        }
        print!("{}", loaded.render());
        return ExitCode::SUCCESS;
    }
    logging::init(cli.log, loaded.config.log_level.filter());
    for w in &loaded.warnings {
        log::warn!("{w}");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = loaded.config;
    let shutdown = CancellationToken::new();
    // The signal stream registers with the runtime's reactor.
    let entered = runtime.enter();
    let signals = match signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = signals.handle();
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    let reloader = Reloader {
        path: cli.config.clone(),
        dry_run,
        tx: reload_tx,
    };
    let code = runtime.block_on(async {
        tokio::spawn(on_signals(signals, shutdown.clone(), reloader));
        let failed = |e: daemon::Error| {
            log::error!("{}", error_chain(&e));
            if e.is_config() {
                ExitCode::from(EXIT_CONFIG)
            } else if matches!(e, daemon::Error::Locked { .. }) {
                ExitCode::from(daemon::EXIT_LOCKED)
            } else {
                ExitCode::FAILURE
            }
        };
        match command {
            Command::Run { .. } => {
                let notifier = Notifier::from_env();
                let control = daemon::Control {
                    shutdown: shutdown.clone(),
                    reload: reload_rx,
                };
                match daemon::run(config, control, &notifier).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => failed(e),
                }
            }
            Command::Once { .. } => match daemon::once(&config, &shutdown).await {
                Ok(report) => {
                    if let (Outcome::DryRun, Some(plan)) = (report.outcome, &report.plan) {
                        print!("{plan}");
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
                Err(e) => {
                    log::error!("{}", error_chain(&e));
                    if e.is_config() {
                        ExitCode::from(EXIT_CONFIG)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            },
            Command::CheckConfig => ExitCode::SUCCESS,
        }
    });
    handle.close();
    drop(entered);
    code
}

/// Loads the configuration again on SIGHUP, the same way as at start.
struct Reloader {
    path: Option<PathBuf>,
    dry_run: bool,
    tx: mpsc::UnboundedSender<config::Config>,
}

impl Reloader {
    fn reload(&self) {
        let env: config::Env = std::env::vars_os().collect();
        match config::load(
            self.path.as_deref(),
            &env,
            Flags {
                dry_run: self.dry_run,
            },
        ) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    log::warn!("{w}");
                }
                // The daemon is gone when this fails: nothing left to reload.
                let _ = self.tx.send(loaded.config);
            }
            Err(e) => log::error!(
                "SIGHUP: keeping the running configuration, the new one is invalid: {}",
                error_chain(&e)
            ),
        }
    }
}

/// SIGTERM or SIGINT: ask everything to stop (a removal in flight finishes, the node is
/// released; a second signal does not cut that short). SIGHUP: reload.
async fn on_signals(
    mut signals: signal_hook_tokio::Signals,
    shutdown: CancellationToken,
    reloader: Reloader,
) {
    let (reloads, requested) = std::sync::mpsc::channel::<()>();
    // Ends when this loop does (the sender dropped), or with the process.
    let spawned = std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            while requested.recv().is_ok() {
                reloader.reload();
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the reload thread: {e}; SIGHUP will not reload");
    }
    while let Some(signal) = signals.next().await {
        match signal {
            SIGHUP => {
                log::info!("SIGHUP received: reloading the configuration");
                // Not here: reading the file (bounded, but up to a few seconds on a hung
                // filesystem) must not hold up a SIGTERM. One thread, in order: the last
                // SIGHUP's file is the one that counts.
                let _ = reloads.send(());
            }
            _ if shutdown.is_cancelled() => {
                log::warn!(
                    "already stopping: finishing the removal in flight and releasing the node"
                );
            }
            _ => {
                log::info!(
                    "{} received: stopping",
                    if signal == SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    }
                );
                shutdown.cancel();
            }
        }
    }
}
