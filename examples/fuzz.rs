//! Runs etl's fuzz targets (`src/fuzz.rs`) on mutated inputs for a bounded
//! time: `cargo run --example fuzz -- [TARGET|all] [--secs N] [--seed N]`
//! (`scripts/fuzz.sh` runs every target for 60 s). Seeds come from
//! `fuzz/corpus/TARGET/` (and, for `pipeline`, the shipped pipelines);
//! an input that panics is saved into `fuzz/corpus/TARGET/` under a name
//! starting `crash-`, where the tests replay it once it is fixed.
//!
//! A mutation fuzzer without coverage feedback, written here because the
//! coverage-guided ones (cargo-fuzz, AFL) need a nightly toolchain or a
//! compiler plugin this project does not build with.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etl::fuzz::TARGETS;

/// xorshift64*: reproducible from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens worth splicing in: the syntax the targets read.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"'",
    b",",
    b"\n",
    b"\r\n",
    b"=",
    b"[",
    b"]",
    b"{",
    b"}",
    b"(",
    b")",
    b".",
    b"\\",
    b"${",
    b"part ",
    b"1970-01-01 00:00:00",
    b"9999-12-31 23:59:59.999999",
    b"-",
    b"%",
    b"?",
    b"&",
    b"sslmode=",
    b"verify-full",
    b"[[sinks]]",
    b"[[transforms]]",
    b"[chunks]",
    b"type = \"pivot\"",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"\xb0\xa1",
    b"\xff",
    b"\xfe",
];

/// Changes 1 to 6 places of `input`. `in_place`: bytes changed where they
/// are, the length kept (a file of fixed-size pages, where one inserted
/// byte moves every page and the reader stops at the header); else
/// anything, the result cut to 64 KiB.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>], in_place: bool) {
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(input.len() + 1);
        let op = if in_place { rng.below(2) } else { rng.below(8) };
        match op {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = [0, 1, 0x7f, 0x80, 0xff, b'"', b',', b'\n'][rng.below(8)];
            }
            2 => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            4 if !input.is_empty() => {
                // Repeat a piece.
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(32)).min(input.len());
                let piece = input[start..end].to_vec();
                input.splice(at..at, piece);
            }
            5 if !seeds.is_empty() => {
                // Splice in part of another seed.
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(64)).min(other.len());
                    input.splice(at..at, other[start..end].iter().copied());
                }
            }
            6 => input.truncate(at),
            _ => {
                let byte = rng.next() as u8;
                input.insert(at, byte);
            }
        }
    }
    if !in_place {
        input.truncate(1 << 16);
    }
}

/// What a panic said.
fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The seeds, with the files they come from.
fn seeds(root: &Path, target: &str) -> Vec<(Vec<u8>, PathBuf)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("fuzz/corpus").join(target))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    if target == "pipeline" {
        if let Ok(d) = std::fs::read_dir(root.join("pipelines")) {
            files.extend(d.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    // Real Access files are the seeds worth mutating; the shared samples
    // are read where they are (not ours to copy into the corpus).
    if target == "access" {
        let fixtures = std::env::var_os("ETL_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../shared/fixtures"));
        if let Ok(d) = std::fs::read_dir(fixtures.join("access")) {
            files.extend(d.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    files.sort();
    let mut seeds: Vec<(Vec<u8>, PathBuf)> = files
        .into_iter()
        .filter_map(|f| Some((std::fs::read(&f).ok()?, f)))
        .collect();
    if seeds.is_empty() {
        seeds.push((Vec::new(), PathBuf::from("(empty)")));
    }
    seeds
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut which, mut secs, mut seed) = ("all".to_string(), 60u64, 0x5eed_u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().and_then(|s| s.parse().ok()).expect("--secs N"),
            "--seed" => seed = args.next().and_then(|s| s.parse().ok()).expect("--seed N"),
            name => which = name.to_string(),
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let targets: Vec<_> = TARGETS
        .iter()
        .filter(|(name, _)| which == "all" || *name == which)
        .collect();
    if targets.is_empty() {
        let names: Vec<_> = TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("fuzz: no target {which:?}; the targets are {names:?} or all");
        std::process::exit(2);
    }
    // Panics are findings: kept quiet here, reported below.
    std::panic::set_hook(Box::new(|_| {}));
    let mut found = 0;
    for (name, target) in targets {
        let seeds = seeds(&root, name);
        let mut rng = Rng(seed | 1);
        let until = Instant::now() + Duration::from_secs(secs);
        let mut runs = 0u64;
        // One input kept per distinct panic message.
        let mut seen = std::collections::HashSet::new();
        // The seeds as they are, first.
        for (s, file) in &seeds {
            if let Err(panic) = std::panic::catch_unwind(|| target(s)) {
                eprintln!(
                    "fuzz {name}: {} panics ({})",
                    file.display(),
                    message(&*panic)
                );
                found += 1;
            }
        }
        let seeds: Vec<Vec<u8>> = seeds.into_iter().map(|(s, _)| s).collect();
        while Instant::now() < until {
            let mut input = seeds[rng.below(seeds.len())].clone();
            mutate(&mut rng, &mut input, &seeds, *name == "access");
            runs += 1;
            let result = std::panic::catch_unwind(|| target(&input));
            if let Err(panic) = result {
                let why = message(&*panic);
                found += 1;
                if !seen.insert(why.lines().next().unwrap_or("").to_string()) {
                    continue;
                }
                let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
                });
                // An Access finding is a changed copy of a shared sample:
                // kept out of the corpus (and the repository), in
                // fuzz/findings/, to be cut down to a case of our own.
                let folder = if *name == "access" {
                    "fuzz/findings"
                } else {
                    "fuzz/corpus"
                };
                let path = root
                    .join(folder)
                    .join(name)
                    .join(format!("crash-{hash:016x}"));
                let _ = std::fs::create_dir_all(path.parent().expect("a folder"));
                std::fs::write(&path, &input).expect("save the input");
                eprintln!(
                    "fuzz {name}: panic ({why}); input saved as {}",
                    path.display()
                );
            }
        }
        println!(
            "fuzz {name}: {runs} inputs in {secs} s ({} seeds), {found} findings so far",
            seeds.len()
        );
    }
    if found > 0 {
        std::process::exit(1);
    }
}
