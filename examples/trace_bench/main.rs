//! The real-binary benchmark's driver: a benchmark, not a test. Run through
//! `scripts/bench-trace.sh`, which makes the traces (`replay --bench --emit`), starts a fresh
//! private dockerd on a loop-mounted filesystem for every run and tears it down; this program
//! never starts or stops a daemon.
//!
//! - `prepare`: the digests of a trace's layers, once per seed (the images' `docker save`
//!   tarballs, the "registry": no image can be pulled here, are made in memory from them when a
//!   pod loads one);
//! - `run`: one cleaner (ours, docuum or the original, as the script spawns it) beside the
//!   trace's pods on the daemon, with a fake Kubernetes API that records the cordons; appends a
//!   row to the CSV;
//! - `table`: the table of a CSV, per disk size and seed.
//!
//! - `trace`: the trace's JSON; `tarball`: the tarballs; `engine`: the pods' Docker client;
//!   `kube`: the fake API; `run`: the pods, the samplers and the counts; `table`: the CSV and
//!   the table.

mod engine;
mod kube;
mod run;
mod table;
mod tarball;
mod trace;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The real-binary benchmark's driver (see the module docs).
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once, and never moved around: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Computes the digests of a trace's layers (kept when they are there already).
    Prepare {
        /// The trace's JSON.
        #[arg(long)]
        trace: PathBuf,
        /// Where the layers' digests go.
        #[arg(long)]
        tars: PathBuf,
        /// A static busybox, put into every base layer.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
    },
    /// Runs a trace beside a cleaner; appends a row to the CSV.
    Run {
        /// The trace's JSON.
        #[arg(long)]
        trace: PathBuf,
        /// Its layers' digests (`prepare`).
        #[arg(long)]
        tars: PathBuf,
        /// The static busybox `prepare` was given.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// The private dockerd, `unix:///…/docker.sock`.
        #[arg(long)]
        docker_host: String,
        /// Its data root (measured).
        #[arg(long)]
        data_root: PathBuf,
        /// The other files: a file on the same filesystem, outside the data root.
        #[arg(long)]
        filler: PathBuf,
        /// A directory for the kubeconfig and the cleaner's log.
        #[arg(long)]
        work: PathBuf,
        /// The policy's name in the CSV.
        #[arg(long)]
        policy: String,
        /// The engine's name in the CSV.
        #[arg(long)]
        engine: String,
        /// The CSV to append to.
        #[arg(long)]
        csv: PathBuf,
        /// VAR=VALUE for the cleaner's environment (KUBECONFIG is set to the fake API's).
        #[arg(long = "env")]
        env: Vec<String>,
        /// Seconds the cleaner runs before the first use.
        #[arg(long, default_value_t = 3.0)]
        head_start: f64,
        /// The cleaner's command line.
        #[arg(last = true, required = true)]
        cleaner: Vec<String>,
    },
    /// Prints the table of a CSV.
    Table {
        /// The CSV.
        #[arg(long)]
        csv: PathBuf,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trace_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Prepare {
            trace,
            tars,
            busybox,
        } => tarball::prepare(&trace::Trace::read(&trace)?, &tars, &busybox),
        Cmd::Run {
            trace,
            tars,
            busybox,
            docker_host,
            data_root,
            filler,
            work,
            policy,
            engine,
            csv,
            env,
            head_start,
            cleaner,
        } => {
            let trace = trace::Trace::read(&trace)?;
            std::fs::create_dir_all(&work)?;
            let api = kube::Server::start("bench-node")?;
            let kubeconfig = work.join("kubeconfig");
            api.kubeconfig(&kubeconfig)?;
            let (program, args) = cleaner.split_first().context("no cleaner command line")?;
            let mut cmd = Command::new(program);
            cmd.args(args).env("KUBECONFIG", &kubeconfig);
            for kv in &env {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--env {kv}: expected VAR=VALUE"))?;
                cmd.env(k, v);
            }
            let load_before = loadavg();
            let outcome = run::run(run::Setup {
                engine: engine::Engine::new(&docker_host)?,
                trace: trace.clone(),
                registry: tarball::Registry::open(&trace, &tars, &busybox)?,
                measure: data_root,
                filler,
                cleaner: cmd,
                log: work.join("cleaner.log"),
                api,
                head_start: Duration::from_secs_f64(head_start),
            })?;
            let row = table::Row::new(&policy, &engine, &trace, &outcome, load_before, loadavg());
            println!("{}", row.summary());
            table::append(&csv, &row)
        }
        Cmd::Table { csv } => {
            print!("{}", table::render(&table::read(&csv)?));
            Ok(())
        }
    }
}

/// The 1-minute load average (the machine is shared: it goes into the CSV).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
