//! The parent runs each section in a child process (this same binary) and writes the markdown;
//! a child runs one section and prints its report as one `BENCH_RESULT` line on stdout.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::Backend;
use serde_json::Value;

use crate::procfs::loadavg;
use crate::report::Section;
use crate::{credits, ingest, matrix, overhead, post_breakdown, rate_use, render, replicas, size, small_jobs};

/// The environment variable that makes the process a child running the section it names.
pub const SECTION_VAR: &str = "ENRICHD_BENCH_SECTION";
/// The sections, in the order they run and appear.
const SECTIONS: [&str; 11] =
    ["1", "1x2", "matrix", "2", "3-sqlite", "3-postgres", "4", "5", "5-post", "replicas", "credits"];
/// A child that runs longer than this is stopped and its section reported as failed.
const SECTION_TIMEOUT: Duration = Duration::from_secs(240);
/// The same for the rate matrix: 64 cells of about 15 s.
const MATRIX_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// How a child marks its result line on stdout.
const RESULT_MARK: &str = "BENCH_RESULT ";

/// Runs one section and prints its result line, a failure included; never returns.
pub fn child(section: &str) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let out = rt.block_on(async {
        let timeout = if section == "matrix" { MATRIX_TIMEOUT } else { SECTION_TIMEOUT };
        match tokio::time::timeout(timeout, run_section(section)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => Section::failed(section, format!("{e:#}")),
            Err(_) => Section::failed(section, format!("did not finish in {timeout:?}")),
        }
    });
    println!("{RESULT_MARK}{}", serde_json::to_string(&out.to_json()).expect("JSON"));
    // Leftover tasks (a stopped app's in-flight calls) must not hold the process.
    std::process::exit(0);
}

async fn run_section(key: &str) -> anyhow::Result<Section> {
    match key {
        "1" => rate_use::run(false).await,
        "1x2" => rate_use::run(true).await,
        "matrix" => matrix::run().await,
        "2" => small_jobs::run().await,
        "3-sqlite" => overhead::run(Backend::Sqlite).await,
        "3-postgres" => overhead::run(Backend::Postgres).await,
        "4" => ingest::run().await,
        "5" => size::run().await,
        "5-post" => post_breakdown::run().await,
        "replicas" => replicas::run().await,
        "credits" => credits::run().await,
        other => anyhow::bail!("unknown section {other:?}; known: {SECTIONS:?}"),
    }
}

/// Reads `--only` and `--out`, runs the sections chosen, one child each, and writes the file.
pub fn parent() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let out = arg("--out").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("BENCHMARKS.md"));
    let only: Vec<String> =
        arg("--only").map(|s| s.split(',').map(|p| p.trim().to_string()).collect()).unwrap_or_default();
    let previous = render::previous_results(&out);
    let machine = render::machine();
    let load_before = loadavg();
    let started = Instant::now();
    let exe = std::env::current_exe().expect("own path");
    let mut sections = Vec::new();
    for key in SECTIONS.iter().filter(|k| only.is_empty() || only.iter().any(|o| o == *k)) {
        eprintln!("== section {key} ==");
        let t = Instant::now();
        let load = loadavg();
        let mut child = Command::new(&exe)
            .env(SECTION_VAR, key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run a section");
        let mut stdout = String::new();
        child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read the section's output");
        let status = child.wait().expect("wait for the section");
        let mut section = stdout
            .lines()
            .find_map(|l| l.strip_prefix(RESULT_MARK))
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .map(|v| Section::from_json(&v))
            .unwrap_or_else(|| Section::failed(key, format!("the child exited with {status} and no result")));
        section.seconds = t.elapsed().as_secs_f64();
        section.load = load;
        eprintln!("   {key}: {:.0} s", section.seconds);
        for r in &section.rows {
            eprintln!("   {} {}: {} (target {})", r.id, r.figure, r.value, r.target);
        }
        sections.push(section);
    }
    let total = started.elapsed();
    let doc = render::render(&machine, &sections, &previous, total, &load_before, &loadavg());
    std::fs::write(&out, doc).expect("write BENCHMARKS.md");
    eprintln!("wrote {} in {:.0} s", out.display(), total.as_secs_f64());
}
