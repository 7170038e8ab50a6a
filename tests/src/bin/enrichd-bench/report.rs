//! What a section reports, and its JSON form on the way from the child to the parent.

use serde_json::{Value, json};

/// One figure: its value beside its target.
#[derive(Clone, Debug)]
pub struct Row {
    /// The summary's `#`, stable across runs so "previous run" can find it.
    pub id: String,
    /// What is measured.
    pub figure: String,
    /// The measured value, as printed.
    pub value: String,
    /// The target, as printed.
    pub target: String,
    /// Whether the target was met; `None` where there is no target.
    pub met: Option<bool>,
}

/// A summary row.
pub fn row(id: &str, figure: &str, value: String, target: &str, met: Option<bool>) -> Row {
    Row { id: id.into(), figure: figure.into(), value, target: target.into(), met }
}

/// What a section reports.
#[derive(Clone, Debug, Default)]
pub struct Section {
    /// The key `--only` selects it by.
    pub key: String,
    /// Its heading.
    pub title: String,
    /// Its summary rows.
    pub rows: Vec<Row>,
    /// Its text under the heading.
    pub details: String,
    /// What limits the section's figures, printed in the closing note when a target is missed.
    pub limits: String,
    /// Wall time of its child process (set by the parent).
    pub seconds: f64,
    /// Load average when it started (set by the parent).
    pub load: String,
}

impl Section {
    /// A section that did not finish: one missed row carrying the error.
    pub fn failed(key: &str, error: String) -> Section {
        Section {
            key: key.into(),
            title: format!("section {key}"),
            rows: vec![row(&format!("{key}.!"), "section failed", error.clone(), "finishes", Some(false))],
            details: format!("**The section failed:** {error}\n"),
            ..Section::default()
        }
    }

    /// The child's result line.
    pub fn to_json(&self) -> Value {
        json!({
            "key": self.key, "title": self.title, "details": self.details, "limits": self.limits,
            "rows": self.rows.iter().map(|r| json!({"id": r.id, "figure": r.figure, "value": r.value, "target": r.target, "met": r.met})).collect::<Vec<_>>(),
        })
    }

    /// The parent's reading of a result line.
    pub fn from_json(v: &Value) -> Section {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Section {
            key: s(&v["key"]),
            title: s(&v["title"]),
            details: s(&v["details"]),
            limits: s(&v["limits"]),
            rows: v["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| Row {
                    id: s(&r["id"]),
                    figure: s(&r["figure"]),
                    value: s(&r["value"]),
                    target: s(&r["target"]),
                    met: r["met"].as_bool(),
                })
                .collect(),
            ..Section::default()
        }
    }
}
