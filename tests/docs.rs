//! Every `fleetmig …` command line in README.md and docs/ is one fleetmig
//! accepts: each goes through fleetmig's own argument parser (as
//! tests/deploy.rs does for deploy/), so the docs cannot drift from the
//! flags. Shell variables stand for URLs; `cargo run --release --` is
//! fleetmig.

use std::path::{Path, PathBuf};

use clap::Parser;
use fleetmig::cli::Cli;

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("md") {
            v.push(p);
        }
    }
    v.sort();
    v
}

/// The command lines of the shell blocks of `text`: continuation lines
/// joined, comments and prompts taken off.
fn command_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_sh && (t == "```sh" || t == "```bash" || t == "```shell");
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = strip_comment(t);
        let (code, more) = match code.strip_suffix('\\') {
            Some(c) => (c.trim().to_string(), true),
            None => (code.to_string(), false),
        };
        let entry = current.get_or_insert((n + 1, String::new()));
        if !entry.1.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(&code);
        if !more && let Some(done) = current.take() {
            out.push(done);
        }
    }
    out
}

/// `t` without a trailing `# comment` (outside quotes).
fn strip_comment(t: &str) -> &str {
    let (mut single, mut double) = (false, false);
    for (i, c) in t.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || t[..i].ends_with(' ')) => return t[..i].trim(),
            _ => {}
        }
    }
    t.trim()
}

/// Shell words of `line` (quotes removed, `$VAR` kept as a word), cut at
/// the first pipe, redirection or `;`.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut any = false;
    let (mut single, mut double) = (false, false);
    for c in line.chars() {
        match c {
            '\'' if !double => {
                single = !single;
                any = true;
            }
            '"' if !single => {
                double = !double;
                any = true;
            }
            ' ' | '\t' if !single && !double => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            '|' | '>' | ';' | '&' if !single && !double => break,
            c => word.push(c),
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    out
}

#[test]
fn every_fleetmig_command_line_in_the_docs_parses() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in docs() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, cmd) in command_lines(&text) {
            let mut w = words(&cmd);
            // environment assignments before the command
            while w
                .first()
                .is_some_and(|x| x.contains('=') && !x.starts_with('-'))
            {
                w.remove(0);
            }
            let argv: Vec<String> = match w.first().map(String::as_str) {
                Some("fleetmig") => w,
                Some("cargo") if w.get(1).map(String::as_str) == Some("run") => {
                    let Some(i) = w.iter().position(|x| x == "--") else {
                        continue;
                    };
                    std::iter::once("fleetmig".to_string())
                        .chain(w[i + 1..].iter().cloned())
                        .collect()
                }
                _ => continue,
            };
            checked += 1;
            if let Err(e) = Cli::try_parse_from(&argv) {
                failures.push(format!("{}:{line}: {cmd}\n  {}", path.display(), e.kind()));
            }
        }
    }
    eprintln!("{checked} command lines parsed");
    assert!(checked >= 20, "only {checked} command lines found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_readme_is_read_in_ten_minutes() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let size = std::fs::metadata(readme).unwrap().len();
    assert!(size < 15 * 1024, "README.md is {size} bytes");
}
