//! `enrichd submit FILE`: read a CSV or JSONL file twice — once to check every row (and report bad
//! ones by line), once to send it in jobs of `--job-size` people — so at most one job's people are
//! in memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use apollo_client::Flag;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::cli::{ApiClient, SubmitArgs};
use crate::core::csv_map::{Mapping, SOURCE_COLUMNS_KEY, map_headers};
use crate::core::validate::{validate_person, validate_person_text};
use crate::models::{JobRequest, PersonInput};

/// A row: its line in the file and the person, or what is wrong with it.
type Row = (u64, Result<PersonInput, String>);

/// The people of a file, row by row.
enum Rows {
    Csv { mapping: Mapping, records: csv::StringRecordsIntoIter<File>, row: u64 },
    Jsonl { lines: std::io::Lines<BufReader<File>>, line: u64 },
}

fn is_jsonl(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(),
        Some("jsonl" | "ndjson")
    )
}

impl Rows {
    fn open(path: &Path, maps: &[String]) -> anyhow::Result<Rows> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        if is_jsonl(path) {
            return Ok(Rows::Jsonl { lines: BufReader::new(file).lines(), line: 0 });
        }
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let headers: Vec<String> =
            reader.headers().context("reading the header row")?.iter().map(str::to_string).collect();
        let mapping = map_headers(&headers, maps)?;
        Ok(Rows::Csv { mapping, records: reader.into_records(), row: 0 })
    }

    fn mapping(&self) -> Option<&Mapping> {
        match self {
            Rows::Csv { mapping, .. } => Some(mapping),
            Rows::Jsonl { .. } => None,
        }
    }
}

fn problems_text(list: Vec<(String, String)>) -> String {
    list.into_iter().map(|(f, m)| if f.is_empty() { m } else { format!("{f} {m}") }).collect::<Vec<_>>().join("; ")
}

/// The person if the service would accept it.
fn checked(person: PersonInput) -> Result<PersonInput, String> {
    let value = serde_json::to_value(&person).map_err(|e| e.to_string())?;
    validate_person(&value).map(|_| person).map_err(problems_text)
}

impl Iterator for Rows {
    type Item = anyhow::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Rows::Csv { mapping, records, row } => {
                let record = records.next()?;
                // Lines as a spreadsheet numbers them: the header is line 1, one line per row. (The
                // csv crate's own line count is one short on CRLF files.)
                *row += 1;
                let line = *row + 1;
                Some(match record {
                    Ok(r) => {
                        let cells: Vec<&str> = r.iter().collect();
                        Ok((line, checked(mapping.person(&cells))))
                    }
                    // A row that is not text (bad UTF-8) is a bad row, not the end of the file.
                    Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                        Ok((line, Err("is not UTF-8 text".into())))
                    }
                    Err(e) => Err(e.into()),
                })
            }
            Rows::Jsonl { lines, line } => loop {
                let text = match lines.next()? {
                    Ok(t) => t,
                    Err(e) => return Some(Err(e.into())),
                };
                *line += 1;
                if text.trim().is_empty() {
                    continue;
                }
                let person = validate_person_text(&text)
                    .map_err(|e| format!("is not JSON: {e}"))
                    .and_then(|checked| checked.map_err(problems_text))
                    .and_then(|p| serde_json::from_str::<PersonInput>(p.input_json()).map_err(|e| e.to_string()));
                return Some(Ok((*line, person)));
            },
        }
    }
}

/// Hex SHA-256 of the file and the options that change the request.
fn default_key(args: &SubmitArgs) -> anyhow::Result<String> {
    let mut hash = Sha256::new();
    let mut file = File::open(&args.file)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    // The flags first, in table order, then the other options: the same text as before the
    // flags had a table, so the keys of earlier submissions still match.
    let mut options: Vec<Value> = Flag::ALL.iter().map(|f| json!(args.flags.0.get(*f))).collect();
    options.extend([json!(args.callback_url), json!(args.map), json!(args.skip_invalid), json!(args.job_size)]);
    let options = Value::Array(options);
    hash.update(options.to_string().as_bytes());
    let digest: String = hash.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    Ok(format!("file-{digest}"))
}

/// Checks the file, then submits it; prints each job id on its own line.
pub async fn run(api: &ApiClient, args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    let rows = Rows::open(&args.file, &args.map)?;
    if let Some(m) = rows.mapping() {
        eprintln!("columns:");
        for line in m.describe() {
            eprintln!("  {line}");
        }
    }
    let (mut good, mut bad) = (0usize, 0usize);
    for row in rows {
        let (line, person) = row?;
        match person {
            Ok(_) => good += 1,
            Err(why) => {
                bad += 1;
                eprintln!("line {line}: {why}");
            }
        }
    }
    eprintln!("{good} valid row(s), {bad} invalid");
    if bad > 0 && !args.skip_invalid {
        eprintln!("nothing submitted (fix the rows, or pass --skip-invalid)");
        return Ok(ExitCode::from(1));
    }
    if good == 0 {
        eprintln!("nothing to submit");
        return Ok(ExitCode::from(1));
    }
    let key = match &args.idempotency_key {
        Some(k) => k.clone(),
        None => default_key(args)?,
    };
    let size = args.job_size.max(1);
    let parts = good.div_ceil(size);
    let rows = Rows::open(&args.file, &args.map)?;
    let mut metadata = Map::new();
    if let Some(m) = rows.mapping() {
        metadata.insert(SOURCE_COLUMNS_KEY.into(), json!(m.headers));
    }
    let mut batch = Vec::with_capacity(size.min(good));
    let mut part = 0;
    for row in rows {
        if let (_, Ok(person)) = row? {
            batch.push(person);
        }
        if batch.len() == size {
            part += 1;
            send(api, args, std::mem::take(&mut batch), &metadata, &key, part, parts).await?;
        }
    }
    if !batch.is_empty() {
        part += 1;
        send(api, args, batch, &metadata, &key, part, parts).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn send(
    api: &ApiClient,
    args: &SubmitArgs,
    people: Vec<PersonInput>,
    metadata: &Map<String, Value>,
    key: &str,
    part: usize,
    parts: usize,
) -> anyhow::Result<()> {
    let job = JobRequest {
        people,
        callback_url: args.callback_url.clone(),
        metadata: (!metadata.is_empty()).then(|| metadata.clone()),
        max_credits: args.max_credits,
        dry_run: args.dry_run.then_some(true),
        reuse_within: args.reuse_within.clone(),
        ..JobRequest::default()
    }
    .with_flags(args.flags.0);
    if args.dry_run {
        let estimate = api.estimate(&job).await?;
        eprintln!("part {part}/{parts}: {} people, {} calls", estimate.unique, estimate.calls);
        println!("{}", serde_json::to_string(&estimate)?);
        return Ok(());
    }
    let key = if parts == 1 { key.to_string() } else { format!("{key}-{part}") };
    let created = api.submit(&job, Some(&key)).await?;
    eprintln!("part {part}/{parts}: job {} with {} people", created.id, created.total);
    println!("{}", created.id);
    Ok(())
}
