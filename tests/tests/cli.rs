//! The command-line client (the real `enrichd` binary) against a real service, simulator and
//! database: a messy spreadsheet (BOM, header aliases, quoted commas and quotes, CRLF, non-ASCII
//! names, one bad row) → `submit` → `watch` → `export`; every valid row comes back in order with
//! its own cells first and enriched values equal to the simulator's truth.

use std::path::Path;
use std::process::Output;

use apollo_client::PersonDetail;
use e2e_tests::{ADMIN_KEY, Backend, CLIENT_KEY, TestApp, enrichd_binary, fast_sim, on_both_backends};
use enrichd::core::csv_map::ENRICHED_COLUMNS;
use serde_json::Value;

const HEADERS: [&str; 7] =
    ["First Name", "last_name", "Email Address", "Company", "Company Domain", "LinkedIn", "Notes"];

/// The file's rows (after the header); row 3 (file line 4) has a broken email and nothing else to go on.
const ROWS: [[&str; 7]; 6] = [
    [
        "Zoë",
        "Ångström",
        "zoe.angstrom@northwind-labs.com",
        "Northwind Labs, Inc.",
        "northwind-labs.com",
        "",
        "met at expo, booth 4",
    ],
    ["Łukasz", "Nowak", "", "Kestrel Robotics", "kestrel-robotics.io", "", ""],
    ["José", "Müller", "not-an-email", "", "", "", "bad row"],
    ["Dana", "Smith", "dana.smith@acme-corp.com", "", "", "https://www.linkedin.com/in/dana-smith", "said \"call me\""],
    ["Renée", "O'Brien", "", "", "", "https://www.linkedin.com/in/renee-obrien-42", ""],
    ["Søren", "Kierkegaard", "soren@copenhagen-works.dk", "Copenhagen Works", "copenhagen-works.dk", "", "née, \"Ø\""],
];
const BAD_ROW: usize = 2;

fn quote(cell: &str) -> String {
    if cell.contains([',', '"']) { format!("\"{}\"", cell.replace('"', "\"\"")) } else { cell.to_string() }
}

/// The file as a spreadsheet program writes it: BOM, CRLF, quoted cells.
fn messy_csv() -> String {
    let mut out = String::from("\u{feff}");
    for row in std::iter::once(&HEADERS).chain(ROWS.iter()) {
        out.push_str(&row.iter().map(|c| quote(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

/// The detail Apollo gets for a row, built here from the cells (not through the service's code).
fn detail(row: &[&str; 7]) -> PersonDetail {
    let cell = |i: usize| (!row[i].is_empty()).then(|| row[i].to_string());
    PersonDetail {
        first_name: cell(0),
        last_name: cell(1),
        email: cell(2),
        organization_name: cell(3),
        domain: cell(4),
        linkedin_url: cell(5),
        ..Default::default()
    }
}

struct Cli<'a> {
    t: &'a TestApp,
    bin: std::path::PathBuf,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(&self.bin)
            .args(args)
            .env("ENRICHD_URL", self.t.url())
            .env("ENRICHD_KEY", CLIENT_KEY)
            .env_remove("RUST_LOG")
            .output()
            .expect("run enrichd")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn csv_round_trip(backend: Backend) {
    let bin = enrichd_binary();
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let dir = std::env::temp_dir().join(format!("enrichd-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("people.csv");
    std::fs::write(&file, messy_csv()).unwrap();
    let file_arg = file.to_str().unwrap();
    let cli = Cli { t: &t, bin };

    // The bad row stops the whole file, named by its line; nothing is sent.
    let refused = cli.run(&["submit", file_arg, "--run-waterfall-email"]);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("line {}: email is not an email address", BAD_ROW + 2)), "{err}");
    for mapped in [
        "\"First Name\" -> first_name",
        "\"Email Address\" -> email",
        "\"Company Domain\" -> domain",
        "\"LinkedIn\" -> linkedin_url",
        "\"Company\" -> organization_name",
    ] {
        assert!(err.contains(mapped), "mapping not printed: {mapped}\n{err}");
    }
    assert!(t.get_json("/v1/jobs").await["data"].as_array().unwrap().is_empty(), "nothing submitted");

    // --dry-run prints the estimate and stores nothing.
    let dry = cli.run(&["submit", file_arg, "--run-waterfall-email", "--skip-invalid", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let estimate: Value = serde_json::from_str(text(&dry.stdout).trim()).expect("the estimate as JSON");
    assert_eq!(estimate["unique"], ROWS.len() - 1, "{estimate}");
    assert_eq!(estimate["worst_case_credits"]["waterfall_email"], 4.0 * (ROWS.len() - 1) as f64);
    assert!(t.get_json("/v1/jobs").await["data"].as_array().unwrap().is_empty(), "a dry run stores nothing");

    let submitted = cli.run(&["submit", file_arg, "--run-waterfall-email", "--skip-invalid", "--max-credits", "500"]);
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let job_id = text(&submitted.stdout).trim().to_string();
    assert!(uuid::Uuid::parse_str(&job_id).is_ok(), "stdout is the job id: {job_id:?}");
    assert_eq!(t.get_json(&format!("/v1/jobs/{job_id}")).await["max_credits"], 500.0, "--max-credits reaches the job");
    // The same file again is the same job (the default idempotency key is the file's hash).
    let again = cli.run(&["submit", file_arg, "--run-waterfall-email", "--skip-invalid", "--max-credits", "500"]);
    assert_eq!(text(&again.stdout).trim(), job_id, "{}", text(&again.stderr));

    let watched = cli.run(&["watch", &job_id, "--interval", "0.1"]);
    assert_eq!(watched.status.code(), Some(0), "{}{}", text(&watched.stdout), text(&watched.stderr));
    assert!(text(&watched.stdout).contains("completed"), "{}", text(&watched.stdout));

    let out = dir.join("out.csv");
    let exported = cli.run(&["export", &job_id, "--format", "csv", "--with-input", "-o", out.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    check_export(&t, &out).await;

    let jsonl = cli.run(&["export", &job_id, "--format", "jsonl"]);
    let lines: Vec<Value> =
        text(&jsonl.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), ROWS.len() - 1);
    assert!(lines.iter().enumerate().all(|(i, l)| l["index"] == i), "{lines:?}");

    // A file larger than --job-size goes as several jobs, each with its own part of the key.
    let parts = cli.run(&["submit", file_arg, "--skip-invalid", "--job-size", "2", "--idempotency-key", "parts"]);
    assert!(parts.status.success(), "{}", text(&parts.stderr));
    let ids: Vec<String> = text(&parts.stdout).lines().map(str::to_string).collect();
    assert_eq!(ids.len(), 3, "5 valid rows in jobs of 2: {ids:?}");
    let mut totals = Vec::new();
    for id in &ids {
        totals.push(t.get_json(&format!("/v1/jobs/{id}")).await["total"].as_i64().unwrap());
    }
    assert_eq!(totals, [2, 2, 1]);

    // JSONL: one person object a line, bad lines named by number.
    let jsonl_file = dir.join("people.jsonl");
    std::fs::write(
        &jsonl_file,
        "{\"email\": \"ana@northwind-labs.com\"}\n{\"email\": 5}\n\n{\"first_name\": \"Zoë\", \"title\": \"CTO\"}\n",
    )
    .unwrap();
    let refused = cli.run(&["submit", jsonl_file.to_str().unwrap()]);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("line 2: email has the wrong type"), "{err}");
    assert!(err.contains("line 4: title unknown field"), "{err}");
    assert!(err.contains("1 valid row(s), 2 invalid"), "{err}");

    let listed = cli.run(&["jobs"]);
    assert!(text(&listed.stdout).contains(&job_id), "{}", text(&listed.stdout));
    let shown: Value = serde_json::from_slice(&cli.run(&["show", &job_id]).stdout).expect("show prints JSON");
    assert_eq!(shown["id"], job_id.as_str());
    assert_eq!(shown["metadata"]["source_columns"], serde_json::json!(HEADERS));
    let _ = std::fs::remove_dir_all(&dir);
    t.stop().await;
}

async fn check_export(t: &TestApp, out: &Path) {
    let mut reader = csv::Reader::from_path(out).expect("export is CSV");
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    let mut expected_header: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    expected_header.extend(ENRICHED_COLUMNS.iter().map(|c| c.to_string()));
    assert_eq!(header, expected_header);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let valid: Vec<&[&str; 7]> = ROWS.iter().enumerate().filter(|(i, _)| *i != BAD_ROW).map(|(_, r)| r).collect();
    assert_eq!(rows.len(), valid.len());
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut matched = 0;
    for (row, input) in rows.iter().zip(valid) {
        let cells: Vec<&str> = row.iter().collect();
        assert_eq!(&cells[..7], &input[..], "input cells first, as written");
        let get = |name: &str| cells[col(name)];
        let Some(truth) = t.sim.truth_for(&detail(input)) else {
            assert_eq!(get("status"), "not_found", "{cells:?}");
            assert_eq!(get("apollo_id"), "");
            continue;
        };
        matched += 1;
        assert_eq!(get("status"), "complete", "{cells:?}");
        assert_eq!(get("apollo_id"), truth.apollo_id);
        assert_eq!(get("full_name"), truth.name);
        assert_eq!(get("title"), truth.title);
        assert_eq!(get("company"), truth.organization.name);
        assert_eq!(get("company_domain"), truth.organization.domain);
        assert_eq!(get("linkedin"), truth.linkedin_url);
        assert_eq!(
            get("email"),
            truth.waterfall_email.found.as_ref().map(|f| f.value.as_str()).unwrap_or(""),
            "{cells:?}"
        );
        let phones: Vec<&str> =
            get("phones").split("; ").filter(|p| !p.is_empty()).map(|p| p.split(' ').next().unwrap()).collect();
        let expected: Vec<&str> = truth.work_phone.iter().map(|w| w.e164.as_str()).collect();
        assert_eq!(phones, expected, "{cells:?}");
    }
    assert!(matched >= 2, "the simulator matched too few rows to compare ({matched})");
}

on_both_backends!(csv_round_trip);

/// `enrichd suppress add|import|list|remove` against the real service: what each prints, what
/// the service holds after it (through the API), and that a client key cannot touch the global list.
async fn suppress_commands(backend: Backend) {
    let bin = enrichd_binary();
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let dir = std::env::temp_dir().join(format!("enrichd-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cli = Cli { t: &t, bin };
    let listed = async || t.get_json("/v1/suppressions").await["entries"].as_array().unwrap().clone();

    let added = cli.run(&["suppress", "add", "--email", "Opt.Out@Example.com"]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    let out = text(&added.stdout);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!((fields[0], fields[2]), ("added", "email"), "{out}");
    let email_id = fields[1].to_string();
    assert_eq!(fields[3].len(), 12, "a 12-digit hash prefix: {out}");
    let entries = listed().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], email_id.as_str());
    assert_eq!(entries[0]["hash_prefix"], fields[3]);
    // The same address, written differently, is the same entry.
    let again = cli.run(&["suppress", "add", "--email", "opt.out@example.com"]);
    assert!(text(&again.stdout).starts_with(&format!("already present {email_id}")), "{}", text(&again.stdout));
    // Two identifiers at once, or none, are refused by the command line.
    let two = cli.run(&["suppress", "add", "--email", "a@b.com", "--domain", "b.com"]);
    assert_eq!(two.status.code(), Some(2), "{}", text(&two.stderr));
    let bad = cli.run(&["suppress", "add", "--apollo-id", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("422"), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("apollo_id: must be an Apollo person id"), "{}", text(&bad.stderr));

    // CSV import: one new, one already listed, one invalid (named by its file line).
    let csv_file = dir.join("optouts.csv");
    std::fs::write(&csv_file, "email,domain\r\nnew.person@example.org,\r\nOPT.OUT@example.com,\r\nnot-an-email,\r\n")
        .unwrap();
    let imported = cli.run(&["suppress", "import", csv_file.to_str().unwrap()]);
    assert_eq!(imported.status.code(), Some(2), "an invalid row exits 2: {}", text(&imported.stderr));
    assert_eq!(text(&imported.stdout).trim(), "added 1, already present 1, invalid 1");
    assert!(text(&imported.stderr).contains("line 4: email is not an email address"), "{}", text(&imported.stderr));
    // JSON import.
    let json_file = dir.join("optouts.json");
    std::fs::write(
        &json_file,
        r#"[{"domain": "competitor.example"}, {"linkedin_url": "https://www.linkedin.com/in/no-thanks"}]"#,
    )
    .unwrap();
    let imported = cli.run(&["suppress", "import", json_file.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    assert_eq!(text(&imported.stdout).trim(), "added 2, already present 0, invalid 0");
    assert_eq!(listed().await.len(), 4);

    // list prints every entry: id, kind, hash prefix, scope.
    let table = cli.run(&["suppress", "list"]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let table = text(&table.stdout);
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    let expected: Vec<(String, String, String)> = listed()
        .await
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().into(),
                e["kind"].as_str().unwrap().into(),
                e["hash_prefix"].as_str().unwrap().into(),
            )
        })
        .collect();
    let got: Vec<(String, String, String)> = rows.iter().map(|r| (r[0].into(), r[1].into(), r[2].into())).collect();
    assert_eq!(got, expected, "{table}");
    assert!(rows.iter().all(|r| r[3] == "client"), "{table}");
    let kinds: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(kinds, ["email", "email", "domain", "linkedin_url"]);
    assert!(!table.contains("example"), "no plaintext in the list: {table}");

    // remove by id, and by the identifier given again.
    let removed = cli.run(&["suppress", "remove", &email_id]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let removed = cli.run(&["suppress", "remove", "--domain", "Competitor.Example"]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let left: Vec<String> = listed().await.iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, ["email", "linkedin_url"]);
    let gone = cli.run(&["suppress", "remove", &email_id]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(text(&gone.stderr).contains("404"), "{}", text(&gone.stderr));

    // --global: refused with a client key, the global list with an admin key.
    let refused = cli.run(&["suppress", "add", "--global", "--domain", "everyone.example"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("403"), "{}", text(&refused.stderr));
    let admin = |args: &[&str]| {
        std::process::Command::new(&cli.bin)
            .args(args)
            .env("ENRICHD_URL", t.url())
            .env("ENRICHD_KEY", ADMIN_KEY)
            .env_remove("RUST_LOG")
            .output()
            .expect("run enrichd")
    };
    let global = admin(&["suppress", "add", "--global", "--domain", "everyone.example"]);
    assert!(global.status.success(), "{}", text(&global.stderr));
    let global_list = text(&admin(&["suppress", "list", "--global"]).stdout);
    assert_eq!(global_list.lines().count(), 2, "{global_list}");
    assert!(
        global_list.lines().nth(1).unwrap().contains(" domain ") && global_list.contains(" global "),
        "{global_list}"
    );
    assert_eq!(listed().await.len(), 2, "the client's list is untouched");
    let _ = std::fs::remove_dir_all(&dir);
    t.stop().await;
}

on_both_backends!(suppress_commands);
