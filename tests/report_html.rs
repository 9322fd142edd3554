//! report.html is checked in a real headless browser (Debian's chromium,
//! installed by .ci/run): the page loads with no network, and its SVG has one
//! bar per tenant, retry marks, the histogram and the failure clusters.

mod common;

use std::process::Command;

use common::*;
use sqlx::{Connection, Executor};

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("which")
            .arg(c)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            return c.to_string();
        }
    }
    panic!("no chromium on this machine: .ci/run installs Debian's chromium");
}

#[tokio::test(flavor = "multi_thread")]
async fn report_html_renders_in_a_headless_browser() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 12, 2);
    for id in ["t0004", "t0007"] {
        let mut c = sqlite(&registry_tenant(dir.path(), id)).await;
        c.execute("CREATE TABLE invoices (legacy TEXT)")
            .await
            .unwrap();
        c.close().await.unwrap();
    }
    // one tenant is held by another connection for a moment: it is retried
    let mut holder = sqlite(&registry_tenant(dir.path(), "t0009")).await;
    holder.execute("BEGIN EXCLUSIVE").await.unwrap();
    holder
        .execute("CREATE TABLE held (x INTEGER)")
        .await
        .unwrap();
    let d = dir.path().to_path_buf();
    let m = demo_migrations();
    let run = tokio::task::spawn_blocking(move || {
        run_in(
            &d,
            &[
                "rollout",
                "--fleet",
                "registry:fleet.csv",
                "--progress-every",
                "0",
                "--migrations",
                m.to_str().unwrap(),
                "--waves",
                "canary=tag:canary,rest",
                "--lock-timeout",
                "100ms",
                "--retry-backoff",
                "300ms",
                "--max-attempts",
                "8",
            ],
        )
    });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    holder.execute("COMMIT").await.unwrap();
    holder.close().await.unwrap();
    let out = run.await.unwrap();
    expect_exit(&out, 1);
    let report = report_dir(dir.path(), &out);
    let html = report.join("report.html");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("http://") || !page.contains("src=\"http"),
        "no network resources"
    );

    let profile = tempfile::tempdir().unwrap();
    let dom = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    // the browser parsed it: the DOM it serialises has the elements
    assert_eq!(
        dom.matches("<rect class=\"bar\"").count(),
        12,
        "one bar per tenant"
    );
    assert_eq!(dom.matches("data-status=\"failed\"").count(), 2);
    assert!(
        dom.matches("<circle class=\"retry\"").count() >= 1,
        "the retried tenant is marked"
    );
    assert!(dom.contains("id=\"histogram\"") && dom.matches("class=\"hbar\"").count() == 20);
    assert_eq!(
        dom.matches("<tr class=\"cluster\">").count(),
        1,
        "two tenants, one failure cluster"
    );
    assert!(dom.contains("duplicate_object"));
    assert_eq!(dom.matches("<tr class=\"wave\">").count(), 2);
    // and it draws: a screenshot has pixels of the failure colour
    let png = dir.path().join("report.png");
    let shot = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(
        std::fs::metadata(&png).unwrap().len() > 10_000,
        "a real screenshot"
    );
    if let Ok(keep) = std::env::var("FLEETMIG_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}
