//! Credentials kept out of everything fleetmig prints: server URLs checked
//! before anything connects with them, and passwords redacted from URLs and
//! free text.

/// Checks a server URL (`postgres://…`, `mysql://…`) before anything
/// connects with it: `scheme://`, a host, and a user part that says one
/// thing. `postgres:/u:pw@h/db` (one slash) and `mysql:u:pw@h` (none) parse
/// as URLs without a host, which the drivers take for the local socket as
/// another user; an unencoded `@` in the password leaves which `@` ends it
/// to guesswork. The error shows the URL with its user part hidden whole.
pub fn check_server_url(url: &str) -> Result<(), String> {
    let hidden = || redact_userinfo(url);
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(format!("{}: not a URL", hidden()));
    };
    let Some(after) = rest.strip_prefix("//") else {
        return Err(format!(
            "{}: a server URL starts with {scheme}:// (a host after two slashes)",
            hidden()
        ));
    };
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    if authority.matches('@').count() > 1 {
        return Err(format!(
            "{}: more than one `@` before the host: write an `@` in a user name or password as %40",
            hidden()
        ));
    }
    // `u:pa?ss@h` or `u:pa/ss@h`: the user part ended early, the rest of it
    // (the password) reads as a path or query and the host as the user; an
    // `@` past the host is refused whatever it is, so that the only `@` of
    // an accepted URL ends its user part
    if after[authority.len()..].contains('@') {
        return Err(format!(
            "{}: an `@` after the host: write an `@` past the host as %40, and a `/`, `?` or `#` in a user name or password as %2F, %3F, %23",
            hidden()
        ));
    }
    match url::Url::parse(url) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err(format!("{}: no host", hidden())),
        Err(e) => Err(format!("{}: {e}", hidden())),
    }
}

/// `text` with everything between its scheme and the last `@` hidden:
/// `postgres://***@host/db`, whatever the user part holds.
pub fn redact_userinfo(text: &str) -> String {
    match (text.find(':'), text.rfind('@')) {
        (Some(colon), Some(at)) if at > colon => {
            let slashes = text[colon + 1..].chars().take_while(|c| *c == '/').count();
            format!(
                "{}{}***@{}",
                &text[..colon + 1],
                "/".repeat(slashes),
                &text[at + 1..]
            )
        }
        _ => text.to_string(),
    }
}

/// Replaces the password of a URL (and any `password=` query parameter) with
/// `***`. Text that does not parse as a URL is returned with everything between
/// `://` and the last `@` hidden, so a malformed URL cannot leak either.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        // no host: the user part was not read as one (`mysql:u:pw@h`)
        Ok(u) if u.host_str().is_none_or(str::is_empty) && url.contains('@') => {
            redact_userinfo(url)
        }
        // an `@` the parser took into the password: which one ends it is a
        // guess, so the whole user part goes
        Ok(_) if check_server_url(url).is_err() && url.contains('@') => redact_userinfo(url),
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let secret = matches!(
                        k.to_ascii_lowercase().as_str(),
                        "password" | "pass" | "pwd" | "sslpassword"
                    );
                    (
                        k.into_owned(),
                        if secret {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        },
                    )
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => redact_userinfo(url),
    }
}

/// Redacts text that may be a malformed URL: everything between the scheme
/// and the last `@` is hidden, so a password cannot leak even when the text
/// does not parse (`postgres:/u:pw@h`).
pub fn redact_loose(text: &str) -> String {
    match (text.find(':'), text.rfind('@')) {
        (Some(colon), Some(at)) if at > colon => {
            format!("{}:***@{}", &text[..colon], &text[at + 1..])
        }
        _ => redact_url(text),
    }
}

/// Redacts every URL password and `password=`-like parameter in free text
/// (a log line, a driver's message): `scheme://user:secret@host` keeps the
/// user, `?sslpassword=secret` keeps the key.
pub fn redact_text(text: &str) -> String {
    let text = &hide_malformed(text);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    // userinfo of every `://user:password@`: the user part runs from the
    // `://` to the last `@` before a blank, so a password holding `/`, `@`,
    // `:` or a quote is hidden whole (a path or query with an `@` in it is
    // hidden too: more than needed, never less)
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let span = &tail[..end];
        match (span.rfind('@'), span.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&span[..colon]);
                out.push_str(":***");
                out.push_str(&span[at..]);
            }
            _ => out.push_str(span),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    // `password=...` style parameters
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find('=') {
        let (head, tail) = rest.split_at(i + 1);
        let key: String = head[..head.len() - 1]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
            .to_ascii_lowercase();
        result.push_str(head);
        if matches!(key.as_str(), "password" | "pass" | "pwd" | "sslpassword") {
            let end = tail
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '\'' | '`' | ','))
                .unwrap_or(tail.len());
            result.push_str("***");
            rest = &tail[end..];
        } else {
            rest = tail;
        }
    }
    result.push_str(rest);
    // a log line's fields: `key=sslpassword value=secret`
    for secret_key in ["key=password", "key=pass", "key=pwd", "key=sslpassword"] {
        let mut from = 0;
        while let Some(i) = result[from..].find(secret_key) {
            let at = from + i + secret_key.len();
            if result[at..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                from = at;
                continue;
            }
            let Some(v) = result[at..].find("value=") else {
                break;
            };
            let start = at + v + "value=".len();
            let end = result[start..]
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '\'' | ','))
                .map(|e| start + e)
                .unwrap_or(result.len());
            result.replace_range(start..end, "***");
            from = start;
        }
    }
    result
}

/// Server URLs written with one slash or none (`postgres:/u:pw@h`,
/// `mysql:u:pw@h`) in free text: everything from the scheme's `:` to the
/// last `@` before a blank is hidden.
fn hide_malformed(text: &str) -> String {
    let mut out = text.to_string();
    for scheme in ["postgresql:", "postgres:", "mysql:", "mariadb:"] {
        let mut from = 0;
        while let Some(i) = out[from..].to_ascii_lowercase().find(scheme) {
            let start = from + i + scheme.len();
            let span_end = out[start..]
                .find(char::is_whitespace)
                .map_or(out.len(), |e| start + e);
            let span = &out[start..span_end];
            match span.rfind('@') {
                Some(at) if !span.starts_with("//") => {
                    out.replace_range(start..start + at, "***");
                    from = start + 3;
                }
                _ => from = span_end.max(start),
            }
        }
    }
    out
}

/// Removes every occurrence of the secrets of `urls` (passwords) from `text`:
/// the last line of defence for driver error messages that echo a URL.
pub fn scrub_secrets<'a>(text: &str, urls: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_string();
    for url in urls {
        if let Ok(u) = url::Url::parse(url)
            && let Some(pw) = u.password().filter(|p| p.len() >= 3)
        {
            out = out.replace(pw, "***");
            if let Ok(decoded) = urlencoding_decode(pw) {
                out = out.replace(&decoded, "***");
            }
        }
    }
    out
}

fn urlencoding_decode(s: &str) -> Result<String, ()> {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or(())
}
