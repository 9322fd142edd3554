//! Headless Chromium (Debian's package) driven through the DevTools
//! protocol: pages opened, real mouse clicks at an element's place and
//! typed text, the DOM read, screenshots taken. What a person does, not
//! requests sent by the test.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

pub struct Browser {
    child: Child,
    ws: WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next: u64,
    _profile: tempfile::TempDir,
}

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!("no chromium on this machine: .ci/run installs Debian's chromium");
}

impl Browser {
    /// A headless browser with a fresh profile, on its one page.
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        let err = child.stderr.take().unwrap();
        let mut port = None;
        for line in BufReader::new(err).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                port = rest.split('/').next().map(str::to_string);
                break;
            }
        }
        let port = port.expect("chromium said where DevTools listen");
        let t0 = Instant::now();
        let page = loop {
            let list: Value = ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            if let Some(p) = list
                .as_array()
                .and_then(|l| l.iter().find(|t| t["type"] == "page"))
            {
                break p["webSocketDebuggerUrl"].as_str().unwrap().to_string();
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no page target");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (ws, _) = tungstenite::connect(page).unwrap();
        let mut b = Browser {
            child,
            ws,
            next: 0,
            _profile: profile,
        };
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    /// Sends `method` and waits for its answer (events in between skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        match self.send(method, params) {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    fn send(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(msg)).unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// The value of the JavaScript expression `js` in the page (null while
    /// a page is being replaced).
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.send(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        );
        r.map(|r| r["result"]["value"].clone())
            .unwrap_or(Value::Null)
    }

    /// Opens `url` and waits until it has loaded.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        std::thread::sleep(Duration::from_millis(100));
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        );
    }

    /// Waits until the expression `js` is true in the page.
    pub fn wait_for(&mut self, js: &str, within: Duration) {
        let t0 = Instant::now();
        while self.eval(js) != Value::Bool(true) {
            assert!(
                t0.elapsed() < within,
                "never true in the page: {js}\n{}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The text of the first element `selector` matches ("" when none).
    pub fn text(&mut self, selector: &str) -> String {
        let js = format!(
            "(document.querySelector({}) || {{ textContent: '' }}).textContent",
            json!(selector)
        );
        self.eval(&js).as_str().unwrap_or_default().to_string()
    }

    /// Whether an element matches `selector`.
    pub fn has(&mut self, selector: &str) -> bool {
        self.eval(&format!(
            "document.querySelector({}) !== null",
            json!(selector)
        )) == Value::Bool(true)
    }

    /// A left click at the middle of the element `selector` matches, as
    /// the mouse does it (pressed, released).
    pub fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; e.scrollIntoView(); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        );
        let at = self.eval(&js);
        let (x, y) = match at.as_array() {
            Some(a) => (a[0].as_f64().unwrap(), a[1].as_f64().unwrap()),
            None => panic!("nothing to click at {selector}: {}", self.text("body")),
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Types `text` into the element `selector` matches (clicked first).
    pub fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        self.call("Input.insertText", json!({ "text": text }));
    }

    /// Clicks `selector`, then waits for the page it leads to to load.
    pub fn click_and_load(&mut self, selector: &str) {
        self.eval("window.__fleetmig_before = 1");
        self.click(selector);
        self.wait_for(
            "window.__fleetmig_before === undefined && document.readyState === 'complete'",
            Duration::from_secs(20),
        );
    }

    /// A PNG of the page as it is drawn.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Forgets every cookie (a person who never signed in).
    pub fn clear_cookies(&mut self) {
        self.call("Network.clearBrowserCookies", json!({}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
