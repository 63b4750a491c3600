//! `status` with thousands of images: loads them (one `docker load`), primes the state as a
//! daemon would have it (one `once` below the high watermark replays their events and saves
//! their last use), then times the built binary's `status` and `status --json` against
//! `docker image ls -q` and `docker ps -aq`, alternating, and the pieces of a status in-process.
//! Must not: remove anything.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use docker_image_cleaner::clock::{now_ms, now_nanos};
use docker_image_cleaner::config::{self, Flags};
use docker_image_cleaner::cycle;
use docker_image_cleaner::docker::{DockerEngine, Engine};
use docker_image_cleaner::lastuse::Store;
use docker_image_cleaner::policy::{self, Holding, Need};
use docker_image_cleaner::status;
use docker_image_cleaner::usage::tree_usage;

use crate::Args;
use crate::api::{self, Api};
use crate::report::{median, ms};

/// Runs the `status` part.
pub async fn run(
    args: &Args,
    many_tar: &Path,
    api: &Api,
    docker: &DockerEngine,
) -> anyhow::Result<StatusTimes> {
    let tar = api::read_tar(many_tar)?;
    let state = args.work.join("status-state");
    let conf = args.work.join("status.toml");
    write_config(args, &conf, &state)?;
    let conf_s = conf.display().to_string();
    let cleaner = |sub: &[&str]| -> Vec<String> {
        ["--config", conf_s.as_str(), "--log", "stderr"]
            .iter()
            .chain(sub)
            .map(|s| s.to_string())
            .collect()
    };
    // A first start records where the event stream stands; the `once` after the load then
    // replays the load's events into the last-use table and saves it, as a running daemon
    // would have it.
    timed_run(&args.binary, &cleaner(&["once"]))?;
    let start = Instant::now();
    api.load(&tar).context("loading the images for status")?;
    let load = start.elapsed();
    let found = docker.inventory(false).await?.images.len();
    if found != args.many {
        bail!("after loading {} images, dockerd lists {found}", args.many);
    }
    eprintln!(
        "pass_cost: {found} images loaded in {:.1} s",
        load.as_secs_f64()
    );

    let (primed, _) = timed_run(&args.binary, &cleaner(&["once"]))?;
    eprintln!(
        "pass_cost: `once` replayed the load's events and saved last use in {:.0} ms",
        primed.as_secs_f64() * 1000.0
    );

    let cli = |sub: &[&str]| -> Vec<String> {
        let config = args.cli_config.display().to_string();
        ["--config", config.as_str(), "-H", args.docker_host.as_str()]
            .iter()
            .chain(sub)
            .map(|s| s.to_string())
            .collect()
    };
    let commands: Vec<(String, &Path, Vec<String>)> = vec![
        (
            "docker image ls -q".into(),
            args.docker_cli.as_path(),
            cli(&["image", "ls", "-q"]),
        ),
        (
            "docker ps -aq".into(),
            args.docker_cli.as_path(),
            cli(&["ps", "-aq"]),
        ),
        (
            "docker-image-cleaner status".into(),
            args.binary.as_path(),
            cleaner(&["status"]),
        ),
        (
            "docker-image-cleaner status --json".into(),
            args.binary.as_path(),
            cleaner(&["status", "--json"]),
        ),
    ];
    let mut times: Vec<Timed> = commands
        .iter()
        .map(|(what, _, _)| Timed {
            what: what.clone(),
            rounds: Vec::new(),
        })
        .collect();
    for round in 0..args.status_rounds {
        for (i, (what, program, argv)) in commands.iter().enumerate() {
            let (took, stdout) = timed_run(program, argv)?;
            if round == 0 {
                check_output(what, &stdout, args.many)?;
            }
            times[i].rounds.push(took);
        }
    }

    // The pieces, in-process, with the configuration the binary read.
    let env: config::Env = std::iter::empty::<(String, String)>().collect();
    let config = config::load(Some(&conf), &env, Flags { dry_run: false })
        .with_context(|| format!("loading {}", conf.display()))?
        .config;
    let mut pieces: Vec<Timed> = [
        "status::status(), the whole look",
        "  connect: negotiate the API version, version",
        "  replay the events since the last save",
        "  inventory: list images + list containers",
        "  build cache: GET /system/df",
        "  footprint: du -sx of the data root",
        "  last-use state: read and parse",
        "  policy::plan over the inventory",
        "rendering the text (Display)",
        "rendering the JSON (serde_json)",
    ]
    .iter()
    .map(|w| Timed {
        what: w.to_string(),
        rounds: Vec::new(),
    })
    .collect();
    let need = Need {
        bytes: u64::MAX,
        inodes: 0,
    };
    for _ in 0..args.status_rounds {
        let start = Instant::now();
        let s = status::status(&config).await?;
        pieces[0].rounds.push(start.elapsed());

        let start = Instant::now();
        let engine = DockerEngine::connect(Some(&args.docker_host), config.timeout).await?;
        pieces[1].rounds.push(start.elapsed());

        let mut tables = Store::read_only(&state)?.load(now_ms(), now_nanos());
        let last_use = tables.engine_mut(&config.engines[0].name);
        let start = Instant::now();
        cycle::replay(&engine, last_use, now_nanos()).await?;
        pieces[2].rounds.push(start.elapsed());

        let start = Instant::now();
        let inventory = engine.inventory(false).await?;
        pieces[3].rounds.push(start.elapsed());

        let start = Instant::now();
        std::hint::black_box(engine.build_cache().await?);
        pieces[4].rounds.push(start.elapsed());

        let start = Instant::now();
        tree_usage(std::slice::from_ref(&args.data_root))?;
        pieces[5].rounds.push(start.elapsed());

        let start = Instant::now();
        let mut tables = Store::read_only(&state)?.load(now_ms(), now_nanos());
        pieces[6].rounds.push(start.elapsed());

        let last_use = tables.engine_mut(&config.engines[0].name);
        last_use.reconcile(&inventory, now_ms(), false);
        let holding = Holding {
            name: &config.engines[0].name,
            inventory: &inventory,
            last_use,
            floor: None,
            build_cache: None,
        };
        let start = Instant::now();
        let plan = policy::plan(&[holding], &config, need, now_ms(), false);
        pieces[7].rounds.push(start.elapsed());
        if plan.steps.len() != args.many {
            bail!(
                "the plan over {} images has {} steps: are they all eligible?",
                args.many,
                plan.steps.len()
            );
        }

        let start = Instant::now();
        let text = s.to_string();
        pieces[8].rounds.push(start.elapsed());
        let start = Instant::now();
        let json = serde_json::to_string(&s)?;
        pieces[9].rounds.push(start.elapsed());
        std::hint::black_box((text, json));
    }
    Ok(StatusTimes {
        load,
        commands: std::mem::take(&mut times),
        pieces,
    })
}

/// The configuration of the binary: the private daemon, below the high watermark (so `once`
/// only records last use), every image eligible, cordoning off.
fn write_config(args: &Args, conf: &Path, state: &Path) -> anyhow::Result<()> {
    let text = format!(
        "# The benchmark's status configuration.\n\
         path_to_check = [{}]\n\
         docker_host = {}\n\
         state_dir = {}\n\
         threshold_high = 99\n\
         threshold_low = 98\n\
         min_age_seconds = 0\n\
         node_name = \"\"\n",
        toml_string(&args.data_root.display().to_string()),
        toml_string(&args.docker_host),
        toml_string(&state.display().to_string()),
    );
    std::fs::write(conf, text).with_context(|| format!("writing {}", conf.display()))
}

/// Runs `program argv`, which must exit 0; returns its wall time and its stdout.
fn timed_run(program: &Path, argv: &[String]) -> anyhow::Result<(Duration, Vec<u8>)> {
    let shown = || format!("{} {}", program.display(), argv.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(argv);
    for var in [
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH",
    ] {
        cmd.env_remove(var);
    }
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("running {}", shown()))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((took, out.stdout))
}

/// The first round's output must show every image (and no container).
fn check_output(what: &str, stdout: &[u8], images: usize) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(stdout);
    let ok = match what {
        "docker image ls -q" => text.lines().count() == images,
        "docker ps -aq" => text.trim().is_empty(),
        w if w.ends_with("--json") => {
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["plan"]["steps"].as_array().map(Vec::len))
                == Some(images)
        }
        _ => text.contains(&format!("{images} images")),
    };
    if !ok {
        bail!(
            "{what}: its output does not show {images} images: {:.300}",
            text
        );
    }
    Ok(())
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// One timed thing of the `status` part, every round.
#[derive(Debug, Clone)]
pub struct Timed {
    /// What was timed.
    pub what: String,
    /// Each round.
    pub rounds: Vec<Duration>,
}

impl Timed {
    /// The median, ms.
    pub fn median_ms(&self) -> f64 {
        median(&self.rounds.iter().map(|d| ms(*d)).collect::<Vec<_>>())
    }
}

/// What the `status` part measured: the commands, then the in-process breakdown.
#[derive(Debug, Clone, Default)]
pub struct StatusTimes {
    /// Preparing the images (one `docker load`).
    pub load: Duration,
    /// The commands: status, status --json, image ls -q, ps -aq.
    pub commands: Vec<Timed>,
    /// In-process: the pieces of a status.
    pub pieces: Vec<Timed>,
}

/// Prints the `status` table and writes every round to `csv`.
pub fn print(t: &StatusTimes, images: usize, csv: &Path) -> anyhow::Result<()> {
    let find = |what: &str| {
        t.commands
            .iter()
            .find(|c| c.what.starts_with(what))
            .map_or(f64::NAN, Timed::median_ms)
    };
    let reference = find("docker image ls -q") + find("docker ps -aq");
    println!();
    println!(
        "== 3. status with {images} images (prepared with one docker load in {:.1} s): medians of {} rounds",
        t.load.as_secs_f64(),
        t.commands.first().map_or(0, |c| c.rounds.len())
    );
    println!(
        "{:<52} {:>10} {:>14}",
        "command", "median ms", "vs reference"
    );
    println!(
        "{:<52} {:>10.1} {:>14}",
        "reference: docker image ls -q + docker ps -aq", reference, "1.00x"
    );
    for c in &t.commands {
        let m = c.median_ms();
        let vs = if c.what.starts_with("docker-image-cleaner") {
            format!("{:.2}x", m / reference)
        } else {
            String::new()
        };
        println!("{:<52} {:>10.1} {:>14}", format!("  {}", c.what), m, vs);
    }
    println!();
    println!(
        "{:<52} {:>10} {:>14}",
        "in-process (same daemon)", "median ms", "of status()"
    );
    let whole = t.pieces.first().map_or(f64::NAN, Timed::median_ms);
    for p in &t.pieces {
        let m = p.median_ms();
        println!(
            "{:<52} {:>10.2} {:>13.0}%",
            format!("  {}", p.what),
            m,
            100.0 * m / whole
        );
    }
    let mut out = String::from("part,what,round,ms\n");
    for (part, list) in [("command", &t.commands), ("in_process", &t.pieces)] {
        for c in list {
            for (i, d) in c.rounds.iter().enumerate() {
                let _ = writeln!(out, "{part},\"{}\",{},{:.3}", c.what, i + 1, ms(*d));
            }
        }
    }
    std::fs::write(csv, out).with_context(|| format!("writing {}", csv.display()))?;
    println!("(every round: {})", csv.display());
    Ok(())
}
