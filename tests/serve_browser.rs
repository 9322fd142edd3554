//! `fleetmig serve` as an operator uses it, in a real browser (headless
//! Chromium driven through the DevTools protocol: clicks at the buttons'
//! places, typed text): a PostgreSQL rollout with two processes on it
//! advances on the page without a reload; Pause stops both; Resume lets
//! the waiting worker finish it; a failed tenant's error is in its cluster
//! and on its page; a click on another site's form while signed in is
//! refused and changes nothing; without a token no control is shown.
//! FLEETMIG_SCREENSHOTS=DIR keeps screenshots of the pages there.

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::web::Watched;
use common::workers::*;

const TOKEN: &str = "alice-0123456789abcdef";

async fn status(c: &mut sqlx::PgConnection, id: &str) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT status || '/' || COALESCE(requested, '-') FROM fleetmig_rollouts WHERE id = '{id}'"
    )))
    .fetch_one(c)
    .await
    .unwrap()
}

fn shot(b: &mut Browser, name: &str) {
    if let Ok(dir) = std::env::var("FLEETMIG_SCREENSHOTS") {
        b.screenshot(&std::path::Path::new(&dir).join(name));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_watches_pauses_and_resumes_a_rollout_in_a_real_browser() {
    let s = Setup::new("browser", 80, 0.4).await;
    // the last tenant fails: its table is there already
    s.db.exec("CREATE TABLE tenant_079.t (x int)").await;
    let Watched {
        web,
        rollout: a,
        worker: w,
        id,
        mut c,
    } = Watched::start(&s, "alice", TOKEN).await;
    let page = format!("{}/rollouts/{id}", web.base);

    let mut b = Browser::start();
    b.open(&format!("{}/login", web.base));
    b.type_into("#token", TOKEN);
    b.click_and_load("#sign-in");
    assert_eq!(b.text("#operator"), "alice");

    // the progress advances on the page without a reload
    b.open(&page);
    b.eval("window.__same_page = true");
    let before = b.text("#counts");
    b.wait_for(
        &format!(
            "document.querySelector('#counts').textContent !== {}",
            serde_json::json!(before)
        ),
        Duration::from_secs(20),
    );
    assert_eq!(
        b.eval("window.__same_page === true"),
        serde_json::Value::Bool(true),
        "the page was reloaded"
    );
    shot(&mut b, "serve-rollout.png");

    // Pause: both processes stop starting tenants
    b.click_and_load("#pause");
    b.wait_for(
        "document.querySelector('#status').textContent === 'paused'",
        Duration::from_secs(40),
    );
    assert!(status(&mut c, &id).await.starts_with("paused/"));
    let (a, late) = wait_until(a, Instant::now() + Duration::from_secs(30));
    assert!(!late, "the rollout process did not stop: {}", said(&a));
    let at_pause = count(&mut c, "SELECT count(*) FROM public.ran").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM public.ran").await,
        at_pause,
        "ran while paused"
    );
    assert!(at_pause < 158, "it had finished before the pause");

    // Resume: the waiting worker takes it up
    b.click_and_load("#resume");
    b.wait_for(
        "['running', 'completed', 'halted'].includes(document.querySelector('#status').textContent)",
        Duration::from_secs(20),
    );

    // signed in, a click on another site's form is refused (the cookie is
    // SameSite=Strict) and changes nothing
    let base = &web.base;
    b.open(&format!(
        "data:text/html,<form method=post action='{base}/rollouts/{id}/abort'><button id=go>Win a prize</button></form>"
    ));
    b.click("#go");
    b.wait_for(
        "document.body.textContent.includes('sign in first')",
        Duration::from_secs(10),
    );
    assert!(!status(&mut c, &id).await.contains("abort"));

    // it ends; the failed tenant is in its cluster and on its page
    let (w, late) = wait_until(w, Instant::now() + Duration::from_secs(120));
    assert!(!late, "the worker did not finish: {}", said(&w));
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.ran").await, 158);
    ran_once(&mut c).await;
    b.open(&page);
    b.wait_for(
        "document.querySelector('#clusters') !== null",
        Duration::from_secs(10),
    );
    let clusters = b.text("#clusters");
    assert!(
        clusters.contains("tenant_079") && clusters.contains("already exists"),
        "{clusters}"
    );
    shot(&mut b, "serve-failures.png");
    b.click_and_load("#clusters a[href$='/tenants/tenant_079']");
    assert!(b.text("#tenant-error").contains("already exists"));
    shot(&mut b, "serve-tenant.png");
    b.open(&format!("{page}/tenants?status=succeeded"));
    assert!(
        b.text("#matched").starts_with("79 tenant(s)"),
        "{}",
        b.text("#matched")
    );
    b.open(&format!("{}/", web.base));
    assert!(b.text("#rollouts").contains(&id));
    shot(&mut b, "serve-rollouts.png");

    // without a token: no control at all
    b.clear_cookies();
    b.open(&page);
    for control in ["#pause", "#resume", "#abort", "#retry", "#operator"] {
        assert!(!b.has(control), "{control} shown without a token");
    }
    let actions: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT string_agg(operator || ':' || action, ',' ORDER BY at) FROM fleetmig_actions WHERE rollout_id = '{id}'"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(actions, "alice:pause,alice:resume");
    drop(b);
    drop(web);
    c.close_conn().await;
    s.db.drop_now().await;
}
