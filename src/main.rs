//! The command line: parse, load the configuration, set up logging, call the library, map the
//! result to an exit code (0 ok, 1 runtime failure, 75 locked, 78 configuration).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use docker_image_cleaner::config::{self, EXIT_CONFIG, Env};
use docker_image_cleaner::daemon::{Answers, Inputs, Reloader};
use docker_image_cleaner::notify::Notifier;
use docker_image_cleaner::policy::Outcome;
use docker_image_cleaner::{daemon, docs, error_chain, logging, status};
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
    /// Environment file read under the process's environment, as the unit's EnvironmentFile=
    /// (an empty path: none)
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = config::DEFAULT_ENV_FILE,
        value_parser = clap::builder::OsStringValueParser::new()
    )]
    env_file: std::ffi::OsString,
    /// Where logs go: the journal under systemd, else stderr (auto); or always one of these.
    #[arg(long, global = true, value_enum, default_value_t = logging::Target::Auto)]
    log: logging::Target,
    /// How each log line is written: text, or one JSON object a line for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
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
    /// Validate the configuration, print it with the source of each value, and check what it
    /// needs of the node (kubeconfig, watched paths, engines); exit 78 when it cannot work.
    CheckConfig,
    /// Check the configuration as the daemon will read it, then ask the daemon (SIGHUP) to
    /// reload it and wait for its answer; the unit's ExecReload=. Exit 78, and change nothing,
    /// when the configuration is invalid.
    Reload {
        /// The daemon's process id [default: $MAINPID, as systemd sets it for ExecReload=].
        #[arg(long)]
        pid: Option<i32>,
    },
    /// The reference of every key and exit code, for the README (markdown) and the man page
    /// (man: help2man include sections). For the build; reads no configuration.
    #[command(hide = true)]
    Docs {
        /// What to print.
        #[arg(value_enum)]
        format: DocsFormat,
    },
}

/// The forms of `docs`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DocsFormat {
    /// The README's configuration and exit-code tables.
    Markdown,
    /// The man page's CONFIGURATION and EXIT STATUS sections.
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run { dry_run: false });
    if let Command::Docs { format } = command {
        match format {
            DocsFormat::Markdown => {
                print!("{}\n{}", docs::markdown_keys(), docs::markdown_exit_codes())
            }
            DocsFormat::Man => print!("{}", docs::man_sections()),
        }
        return ExitCode::SUCCESS;
    }
    let dry_run = matches!(
        command,
        Command::Run { dry_run: true } | Command::Once { dry_run: true }
    );
    let env_file = Path::new(&cli.env_file);
    let env_file = (!env_file.as_os_str().is_empty()).then(|| env_file.to_path_buf());
    // vars_os: a variable that is not UTF-8 (a Latin-1 EnvironmentFile) must not panic here;
    // the configuration refuses it only when it is one of ours.
    let process: Env = std::env::vars_os().collect();
    let inputs = match Inputs::new(cli.config.clone(), process, env_file, dry_run) {
        Ok(i) => i,
        Err(e) => {
            eprintln!(
                "docker-image-cleaner: invalid configuration: {}",
                error_chain(&e)
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let loaded = match inputs.load() {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "docker-image-cleaner: invalid configuration: {}",
                error_chain(&e)
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("docker-image-cleaner: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::CheckConfig => return runtime.block_on(check_config(&loaded)),
        Command::Reload { pid } => return runtime.block_on(reload(&loaded, pid)),
        _ => {}
    }
    logging::init(cli.log, cli.log_format, loaded.config.log_level.filter());
    for w in &loaded.warnings {
        log::warn!("{w}");
    }

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
    let reloader = Reloader::new(
        inputs,
        reload_tx,
        Answers::from_env(std::env::var_os("RUNTIME_DIRECTORY").as_deref()),
    );
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
                    for w in kubeconfig_warnings(&config).await {
                        log::warn!("{w}");
                    }
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
            Command::CheckConfig | Command::Reload { .. } | Command::Docs { .. } => {
                ExitCode::SUCCESS
            }
        }
    });
    handle.close();
    drop(entered);
    code
}

/// The kubeconfig warnings a command run from a shell should repeat: one under /root or /home
/// is seen here but hidden from the service.
async fn kubeconfig_warnings(config: &config::Config) -> Vec<String> {
    if config.node_name.is_none() {
        return Vec::new();
    }
    match docker_image_cleaner::node::check_kubeconfig(
        config.kubeconfig.as_deref(),
        config.kubeconfig_env.as_deref(),
    )
    .await
    {
        Ok(check) => check.warnings,
        Err(e) => vec![error_chain(&e)],
    }
}

/// `check-config`: the effective configuration with the source of each value, then what it
/// needs of the node. Exit 78 when it cannot work.
async fn check_config(loaded: &config::Loaded) -> ExitCode {
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
    let checked = daemon::preflight(&loaded.config).await;
    println!("# checks");
    for note in &checked.notes {
        println!("#   ok: {note}");
    }
    for w in &checked.warnings {
        eprintln!("warning: {w}");
    }
    for e in &checked.fatal {
        eprintln!("error: {e}");
    }
    if checked.ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "docker-image-cleaner: the configuration cannot work on this node ({} error{})",
            checked.fatal.len(),
            if checked.fatal.len() == 1 { "" } else { "s" }
        );
        ExitCode::from(EXIT_CONFIG)
    }
}

/// `reload`: check what the daemon will read, signal it, wait for its answer.
async fn reload(loaded: &config::Loaded, pid: Option<i32>) -> ExitCode {
    let pid = pid.or_else(|| std::env::var("MAINPID").ok().and_then(|p| p.parse().ok()));
    let answers = Answers::from_env(std::env::var_os("RUNTIME_DIRECTORY").as_deref());
    match daemon::request_reload(loaded, pid, answers.as_ref()).await {
        Ok(said) => {
            for w in &said.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}", said.message);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docker-image-cleaner: {e}");
            if e.is_config() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// SIGTERM or SIGINT: ask everything to stop (a removal in flight finishes, the node is
/// released; a second signal does not cut that short). SIGHUP: reload.
async fn on_signals(
    mut signals: signal_hook_tokio::Signals,
    shutdown: CancellationToken,
    mut reloader: Reloader,
) {
    // Reloads run in a task of their own, in order (the last SIGHUP's file is the one that
    // counts): reading the files and checking the engines (bounded, but up to a few seconds on
    // a hung filesystem) must not hold up a SIGTERM.
    let (reloads, mut requested) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while requested.recv().await.is_some() {
            reloader.reload().await;
        }
    });
    while let Some(signal) = signals.next().await {
        match signal {
            SIGHUP => {
                log::info!("SIGHUP received: reloading the configuration");
                // Not here: see the reload task above.
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
