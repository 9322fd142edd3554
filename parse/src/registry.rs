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

/// `text` (a registry) with `tenant`'s row pointed at `url` (and `schema`):
/// only that record is rewritten; every other byte (comments and blank
/// lines above it, quoting, spacing, line ends) stays as the operator
/// wrote it.
pub fn rewrite(
    text: &[u8],
    tenant: &str,
    url: &str,
    schema: Option<&str>,
) -> Result<Vec<u8>, LineError> {
    let bad = |line: u64, message: String| LineError { line, message };
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .from_reader(text);
    let headers = reader.headers().map_err(|e| bad(1, e.to_string()))?.clone();
    let headers: Vec<String> = headers.iter().map(|h| h.trim().to_string()).collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(id_col), Some(url_col)) = (col("id"), col("url")) else {
        return Err(bad(1, "the header has no `id` or `url` column".into()));
    };
    let schema_col = col("schema");
    if schema.is_some() && schema_col.is_none() {
        return Err(bad(
            1,
            "the header has no `schema` column for the new location's schema".into(),
        ));
    }
    // only the tenant's record is rewritten: every other byte (comments,
    // quoting, spacing) stays as the operator wrote it
    let mut record = csv::StringRecord::new();
    let mut span = None;
    loop {
        let more = reader
            .read_record(&mut record)
            .map_err(|e| bad(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        if !more {
            break;
        }
        if record.get(id_col).map(str::trim) == Some(tenant) {
            // the reader's position of a record is where it began reading
            // it: comment and blank lines above it are not the record's
            let start = record_start(text, record.position().map_or(0, |p| p.byte()) as usize);
            let mut end = reader.position().byte() as usize;
            // the reader may stop between a line's `\r` and its `\n`
            if end > 0 && text.get(end - 1) == Some(&b'\r') && text.get(end) == Some(&b'\n') {
                end += 1;
            }
            span = Some((start, end, record.clone()));
            break;
        }
    }
    let Some((start, end, found)) = span else {
        return Err(bad(0, format!("no row for tenant {tenant}")));
    };
    let row = render(
        &found,
        (url_col, url),
        schema_col.map(|c| (c, schema)),
        &text[start..end.min(text.len())],
    )
    .map_err(|e| bad(0, e))?;
    let mut bytes = text[..start].to_vec();
    bytes.extend_from_slice(&row);
    bytes.extend_from_slice(&text[end.min(text.len())..]);
    Ok(bytes)
}

/// The tenant's record `found` with its url (and schema) columns set, as
/// one CSV line that ends as `old` did.
fn render(
    found: &csv::StringRecord,
    url_col: (usize, &str),
    schema_col: Option<(usize, Option<&str>)>,
    old: &[u8],
) -> Result<Vec<u8>, String> {
    let mut fields: Vec<String> = found.iter().map(str::to_string).collect();
    fields[url_col.0] = url_col.1.to_string();
    if let Some((s, schema)) = schema_col {
        while fields.len() <= s {
            fields.push(String::new());
        }
        fields[s] = schema.unwrap_or_default().to_string();
    }
    let mut row = csv::WriterBuilder::new().from_writer(Vec::new());
    row.write_record(&fields).map_err(|e| e.to_string())?;
    let mut row = row.into_inner().map_err(|e| e.to_string())?;
    // the line ends as it did
    if old.ends_with(b"\r\n") {
        row.pop();
        row.extend_from_slice(b"\r\n");
    } else if !old.ends_with(b"\n") {
        row.pop();
    }
    Ok(row)
}

/// The first byte at or after `from` that starts a line which is neither
/// blank nor a `#` comment.
fn record_start(text: &[u8], from: usize) -> usize {
    let mut at = from;
    while at < text.len() {
        let end = text[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| at + i + 1);
        let line = text[at..end].trim_ascii();
        if !line.is_empty() && !line.starts_with(b"#") {
            break;
        }
        at = end;
    }
    at
}
