//! A running `fleetmig serve` and plain HTTP to it (no redirects followed:
//! a test sees the 303 and the cookie a login sets).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

pub struct Serve {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    agent: ureq::Agent,
}

/// An answer: its status, body and `Set-Cookie`.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub cookie: Option<String>,
    /// Its `X-Frame-Options`.
    pub frame: Option<String>,
}

impl Serve {
    /// Starts `fleetmig serve --listen 127.0.0.1:0` in `dir` with `args`
    /// and reads where it listens from its first line.
    pub fn start(dir: &Path, args: &[&str]) -> Serve {
        Self::start_on(dir, "127.0.0.1:0", args)
    }

    /// The same, listening on `listen`.
    pub fn start_on(dir: &Path, listen: &str, args: &[&str]) -> Serve {
        let mut child = super::fleetmig_process(dir)
            .arg("serve")
            .args(["--listen", listen])
            .args(args)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(20))
            .build();
        Serve { child, base, agent }
    }

    fn answer(r: Result<ureq::Response, ureq::Error>) -> Answer {
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let status = r.status();
        let cookie = r.header("set-cookie").map(str::to_string);
        let frame = r.header("x-frame-options").map(str::to_string);
        Answer {
            status,
            cookie,
            frame,
            body: r.into_string().unwrap(),
        }
    }

    /// A GET with one header.
    pub fn get_with(&self, path: &str, header: &str, value: &str) -> Answer {
        Self::answer(
            self.agent
                .get(&format!("{}{path}", self.base))
                .set(header, value)
                .call(),
        )
    }

    pub fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut req = self.agent.get(&format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.set("Cookie", c);
        }
        Self::answer(req.call())
    }

    /// A form POST with `cookie` and `origin` as a browser sends them.
    pub fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        form: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.agent.post(&format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.set("Cookie", c);
        }
        if let Some(o) = origin {
            req = req.set("Origin", o);
        }
        Self::answer(req.send_form(form))
    }

    /// Signs in with `token`: the session cookie (`name=value`).
    pub fn sign_in(&self, token: &str) -> String {
        let a = self.post("/login", None, Some(&self.base), &[("token", token)]);
        assert_eq!(a.status, 303, "{}", a.body);
        let c = a.cookie.expect("a session cookie");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(c.contains(attr), "{c}");
        }
        c.split(';').next().unwrap().to_string()
    }

    /// Reads the event stream at `path` until a `changed` event or `within`.
    pub fn changed_within(&self, path: &str, cookie: Option<&str>, within: Duration) -> bool {
        let agent = ureq::AgentBuilder::new().timeout_read(within).build();
        let mut req = agent.get(&format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.set("Cookie", c);
        }
        let Ok(r) = req.call() else { return false };
        let t0 = Instant::now();
        let mut lines = BufReader::new(r.into_reader()).lines();
        while t0.elapsed() < within {
            match lines.next() {
                Some(Ok(l)) if l == "event: changed" => return true,
                Some(Ok(_)) => {}
                _ => return false,
            }
        }
        false
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tokens file (mode 600) in `dir` naming `who` with `token`.
pub fn tokens_file(dir: &Path, who: &str, token: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("tokens");
    std::fs::write(&p, format!("# operators\n{who} {token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A PostgreSQL rollout watched in `serve`: `s`'s schema tenants in two
/// waves (tenant_000 to tenant_007 by name, the rest; a `10%` wave is a
/// shuffle seeded by the rollout id, and took the browser test's failing
/// tenant_079 into the first wave one run in ten, halting the rollout
/// there) run by a `rollout` process and a worker that
/// joined it (2 at a time each), and `serve` over its store with a tokens
/// file naming `who` with `token`.
pub struct Watched {
    pub web: Serve,
    pub rollout: Child,
    pub worker: Child,
    pub id: String,
    pub c: sqlx::PgConnection,
}

impl Watched {
    pub async fn start(s: &super::workers::Setup, who: &str, token: &str) -> Watched {
        let tokens = tokens_file(s.dir.path(), who, token);
        let web = Serve::start(
            s.dir.path(),
            &[
                "--state",
                &s.db.url,
                "--tokens-file",
                tokens.to_str().unwrap(),
            ],
        );
        let m = s.m.path().to_str().unwrap().to_string();
        let first: Vec<String> = (0..8).map(|i| format!("tenant_{i:03}")).collect();
        let waves = format!("first=ids:{},rest", first.join("+"));
        let rollout = s.start(&[
            "rollout",
            "--fleet",
            &s.fleet,
            "--migrations",
            &m,
            "--waves",
            &waves,
            "--concurrency",
            "2",
        ]);
        let mut c = s.db.conn().await;
        let id = s.rollout_id(&mut c).await;
        let worker = s.worker(&id, &["--concurrency", "2"]);
        Watched {
            web,
            rollout,
            worker,
            id,
            c,
        }
    }
}
