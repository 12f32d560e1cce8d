//! Writes the seed corpora of `checks/seeds.rs` as files, one directory per
//! fuzz target: `cargo run --example write_seeds -- DIR [TARGET...]` writes
//! `DIR/<target>/seed-<name>` for the targets named, or for all of them.
//! Rewriting a seed that is already there changes nothing.

#[path = "../checks/seeds.rs"]
mod seeds;

use std::path::PathBuf;
use std::process::ExitCode;

const TARGETS: [&str; 4] = ["decode", "name", "session", "manifest"];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: write_seeds DIR [TARGET...]");
        return ExitCode::FAILURE;
    };
    let mut targets: Vec<String> = args.collect();
    if targets.is_empty() {
        targets = TARGETS.map(String::from).to_vec();
    }
    for target in &targets {
        let Some(seeds) = seeds::for_target(target) else {
            eprintln!("write_seeds: no fuzz target named {target:?}");
            return ExitCode::FAILURE;
        };
        let target_dir = dir.join(target);
        for (name, bytes) in seeds {
            let path = target_dir.join(format!("seed-{name}"));
            let written =
                std::fs::create_dir_all(&target_dir).and_then(|()| std::fs::write(&path, bytes));
            if let Err(e) = written {
                eprintln!("write_seeds: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
