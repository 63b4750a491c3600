//! `du -sxB1` through the library's walk: prints `<bytes>\t<paths>` on stdout, and the inode count
//! (and unreadable entries, if any) on stderr.
//!
//! ```text
//! cargo run --release --example du -- /var/lib/docker
//! ```
//!
//! Several paths add up to one line (an inode reachable from two of them counts once). Exits 1
//! when a path cannot be measured, or, like `du`, when some entries were unreadable (the total
//! is printed anyway); 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use docker_image_cleaner::usage::tree_usage;

fn main() -> ExitCode {
    let roots: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if roots.is_empty() {
        eprintln!("usage: du PATH...");
        return ExitCode::from(2);
    }
    let usage = match tree_usage(&roots) {
        Ok(usage) => usage,
        Err(err) => {
            eprintln!("du: {:#}", anyhow::Error::new(err));
            return ExitCode::FAILURE;
        }
    };
    let paths: Vec<String> = roots.iter().map(|p| p.display().to_string()).collect();
    println!("{}\t{}", usage.bytes, paths.join(" "));
    eprintln!("inodes\t{}", usage.inodes);
    if usage.unreadable > 0 {
        eprintln!("du: {} entries unreadable, not counted", usage.unreadable);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
