//! `enrichd export JOB`: one row per person, page by page, the input columns first.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::{ApiClient, Format};
use crate::core::csv_map::{
    ENRICHED_COLUMNS, SOURCE_COLUMNS_KEY, enriched_cells, export_object, input_cells, input_columns,
};
use crate::models::Person;

/// Calls `each` with every page of the job's people, in input order.
async fn pages(
    api: &ApiClient,
    job: &str,
    mut each: impl FnMut(&[Person]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = api.people(job, after.as_deref()).await?;
        each(&page.data)?;
        match page.next_after {
            Some(a) => after = Some(a),
            None => return Ok(()),
        }
    }
}

/// Writes the export to `output` (standard output when `None`).
pub async fn run(
    api: &ApiClient,
    job: &str,
    format: Format,
    with_input: bool,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let meta = api.job(job).await?.metadata;
    let from_file = meta.as_ref().and_then(|m| m.get(SOURCE_COLUMNS_KEY)).is_some();
    // Without the file's header row, the input columns are the fields the people use: one pass to find them.
    let columns = if with_input && !from_file {
        let mut used = Vec::new();
        pages(api, job, |people| {
            for c in input_columns(None, people) {
                if !used.contains(&c) {
                    used.push(c);
                }
            }
            Ok(())
        })
        .await?;
        rules::PersonField::names().map(str::to_owned).filter(|f| used.contains(f)).collect()
    } else {
        input_columns(meta.as_ref(), &[])
    };
    let sink: Box<dyn Write> = match output {
        Some(p) => Box::new(std::fs::File::create(p)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = std::io::BufWriter::new(sink);
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut sink);
            let mut header: Vec<String> = if with_input { columns.clone() } else { vec!["index".into()] };
            header.extend(ENRICHED_COLUMNS.iter().map(|c| c.to_string()));
            w.write_record(&header)?;
            pages(api, job, |people| {
                for p in people {
                    let mut row =
                        if with_input { input_cells(&columns, from_file, p) } else { vec![p.index.to_string()] };
                    row.extend(enriched_cells(p));
                    w.write_record(&row)?;
                }
                Ok(())
            })
            .await?;
            w.flush()?;
        }
        Format::Jsonl => {
            pages(api, job, |people| {
                for p in people {
                    serde_json::to_writer(&mut sink, &export_object(&columns, from_file, p, with_input))?;
                    sink.write_all(b"\n")?;
                }
                Ok(())
            })
            .await?;
        }
    }
    sink.flush()?;
    Ok(ExitCode::SUCCESS)
}
