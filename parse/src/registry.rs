//! The registry file's CSV: a header naming at least `id` and `url`
//! (`schema`, `tags` optional), `#` comment lines, cells trimmed. What the
//! cells mean (ids, URLs, tags) is checked by the caller; every problem
//! here names the line.

use std::io::Read;

/// One tenant's row, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Row {
    #[serde(skip)]
    pub line: u64,
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
}

/// A registry that cannot be read: the line (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

/// Every row of a registry.
pub fn rows(input: impl Read) -> Result<Vec<Row>, LineError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(input);
    let bad = |line: u64, message: String| LineError { line, message };
    let headers = reader.headers().map_err(|e| bad(1, e.to_string()))?.clone();
    for required in ["id", "url"] {
        if !headers.iter().any(|h| h == required) {
            return Err(bad(
                1,
                format!("the header has no `{required}` column (expected id,url,schema,tags)"),
            ));
        }
    }
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            bad(line, e.to_string())
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let mut row: Row = record
            .deserialize(Some(&headers))
            .map_err(|e| bad(line, e.to_string()))?;
        row.line = line;
        out.push(row);
    }
    Ok(out)
}
