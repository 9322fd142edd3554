//! The command line: broken input gives exit 2 naming the file and touches
//! nothing; plan and status write nothing; config precedence; `new`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn each_broken_migration_folder_gives_exit_2_naming_the_file_and_touches_nothing() {
    type Files<'a> = Vec<(&'a str, &'a [u8])>;
    let cases: Vec<(Files, &str, &str)> = vec![
        (
            vec![("0001_a.sql", b"SELECT 1;"), ("0001_b.sql", b"SELECT 2;")],
            "0001_",
            "duplicate version",
        ),
        (
            vec![("0001_a.up.sql", b"SELECT 1;")],
            "0001_a.up.sql",
            "no matching .down.sql",
        ),
        (
            vec![
                ("0002_a.down.sql", b"SELECT 1;"),
                ("0001_x.sql", b"SELECT 1;"),
            ],
            "0002_a.down.sql",
            "no matching .up.sql",
        ),
        (
            vec![("create_users.sql", b"SELECT 1;")],
            "create_users.sql",
            "expected <VERSION>",
        ),
        (
            vec![("0001_a.sql", &[0x43, 0xff, 0xfe])],
            "0001_a.sql",
            "UTF-8",
        ),
        (
            vec![("0001_a.sql", b"-- fleetmig: phase=later\nSELECT 1;")],
            "0001_a.sql:1",
            "phase=later",
        ),
        (
            vec![("0001_a.sql", b"SELECT 1;\n-- fleetmig: colour=blue\n")],
            "0001_a.sql:2",
            "unknown fleetmig directive",
        ),
        (vec![], "", "no migrations found"),
    ];
    for (files, names, says) in cases {
        let dir = sqlite_fleet(2);
        let m = tempfile::tempdir().unwrap();
        for (n, t) in &files {
            std::fs::write(m.path().join(n), t).unwrap();
        }
        let out = sync(dir.path(), m.path(), &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{says}: {err}");
        assert!(
            err.contains(names) && err.contains(says),
            "expected {names:?} and {says:?} in {err}"
        );
        for id in ["t0000", "t0001"] {
            let p = tenant_path(dir.path(), id);
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 0, "{id} was touched");
        }
        assert!(
            !dir.path().join("reports").exists(),
            "no report for bad input"
        );
    }
}

#[test]
fn bad_registry_row_names_its_line_and_bad_flags_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.csv"),
        "id,url,schema,tags\nok,sqlite://a.db,,\n\"bad id\",sqlite://b.db,,\n",
    )
    .unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["status", "--fleet", "registry:fleet.csv", "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("fleet.csv:3:"), "{}", stderr(&out));

    let out = fleetmig()
        .current_dir(dir.path())
        .args([
            "sync",
            "--fleet",
            "sqlite-dir:.",
            "--lock-timeout",
            "soon",
            "--migrations",
        ])
        .arg(demo_migrations())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--lock-timeout"), "{}", stderr(&out));

    let out = fleetmig()
        .current_dir(dir.path())
        .args(["sync", "--fleet", "ftp:x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown fleet kind"));

    let out = fleetmig()
        .args(["sync", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_and_status_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.csv"),
        "id,url,schema,tags\nnew1,sqlite://db/new1.db,,canary\nnew2,sqlite://db/new2.db,,\n",
    )
    .unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["plan", "--fleet", "registry:fleet.csv", "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    expect_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("new1: 0 -> 8: apply 1 (create accounts)"),
        "{text}"
    );
    assert!(!dir.path().join("db").exists(), "plan created a tenant");

    // an existing tenant file is not given a history table either
    let fleet = sqlite_fleet(2);
    let out = fleetmig()
        .current_dir(fleet.path())
        .args([
            "plan",
            "--json",
            "--fleet",
            "sqlite-dir:tenants",
            "--migrations",
        ])
        .arg(demo_migrations())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "plan");
    assert_eq!(
        v["tenants"][0]["pending"],
        serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8])
    );
    for id in ["t0000", "t0001"] {
        assert_eq!(
            std::fs::metadata(tenant_path(fleet.path(), id))
                .unwrap()
                .len(),
            0
        );
    }

    // status after a partial sync: versions and histogram
    let out = sync(
        fleet.path(),
        &demo_migrations(),
        &["--to", "3", "--tenant", "t0001"],
    );
    expect_exit(&out, 0);
    let out = fleetmig()
        .current_dir(fleet.path())
        .args([
            "status",
            "--json",
            "--fleet",
            "sqlite-dir:tenants",
            "--migrations",
        ])
        .arg(demo_migrations())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tenants"][0]["version"], 0);
    assert_eq!(v["tenants"][1]["version"], 3);
    assert_eq!(
        v["tenants"][1]["pending"],
        serde_json::json!([4, 5, 6, 7, 8])
    );
    assert_eq!(v["tenants"][1]["state"], "pending");
    let out = fleetmig()
        .current_dir(fleet.path())
        .args(["status", "--fleet", "sqlite-dir:tenants", "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("versions across the fleet (head 9)"),
        "{text}"
    );
    assert!(text.contains("2 tenants: 2 pending"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_beat_environment_beat_fleetmig_toml() {
    let dir = sqlite_fleet(2);
    let m = demo_migrations();
    std::fs::write(
        dir.path().join("fleetmig.toml"),
        format!(
            "fleet = \"sqlite-dir:tenants\"\nmigrations = {:?}\nreports = \"from-file\"\nconcurrency = 3\n",
            m.display().to_string()
        ),
    )
    .unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .env("FLEETMIG_REPORTS", "from-env")
        .env("FLEETMIG_CONCURRENCY", "5")
        .args(["sync", "--progress-every", "0", "--concurrency", "7"])
        .output()
        .unwrap();
    expect_exit(&out, 0);
    let report = report_dir(dir.path(), &out);
    assert!(
        report.starts_with(dir.path().join("from-env")),
        "{report:?}"
    );
    let s = summary(&report);
    assert_eq!(s["concurrency"], 7);
    // the rollout records where its fleet is, so it resumes from anywhere
    let fleet = s["fleet"].as_str().unwrap();
    assert!(
        fleet.starts_with("sqlite-dir:/") && fleet.ends_with("/tenants"),
        "{fleet}"
    );

    let out = fleetmig()
        .current_dir(dir.path())
        .args(["sync", "--progress-every", "0"])
        .output()
        .unwrap();
    let s = summary(&report_dir(dir.path(), &out));
    assert_eq!(s["concurrency"], 3);
    assert!(report_dir(dir.path(), &out).starts_with(dir.path().join("from-file")));

    std::fs::write(dir.path().join("fleetmig.toml"), "fleet = 1\n").unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("fleetmig.toml"), "{}", stderr(&out));

    // a key of no setting is refused by name; a bad value with its line;
    // every key of a rollout's group is read from the file (the wave
    // plan shows the file's waves)
    for (text, needle) in [
        (
            "fleet = \"sqlite-dir:tenants\"\nconcurency = 3\n",
            "unknown key `concurency`",
        ),
        (
            "fleet = \"sqlite-dir:tenants\"\n\npool_size = \"big\"\n",
            "line 3",
        ),
        (
            "fleet = \"sqlite-dir:tenants\"\npool_size = 0\n",
            "pool_size",
        ),
        (
            "fleet = \"sqlite-dir:tenants\"\ngate_max_failure_rate = nan\n",
            "gate_max_failure_rate",
        ),
    ] {
        std::fs::write(dir.path().join("fleetmig.toml"), text).unwrap();
        let out = fleetmig()
            .current_dir(dir.path())
            .args(["status"])
            .output()
            .unwrap();
        expect_exit(&out, 2);
        assert!(stderr(&out).contains(needle), "{text}: {}", stderr(&out));
    }
    std::fs::write(
        dir.path().join("fleetmig.toml"),
        format!(
            "fleet = \"sqlite-dir:tenants\"\nmigrations = {:?}\nwaves = \"first=1,rest\"\n",
            m.display().to_string()
        ),
    )
    .unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["plan"])
        .output()
        .unwrap();
    expect_exit(&out, 0);
    assert!(stdout(&out).contains("first"), "{}", stdout(&out));
}

#[test]
fn new_creates_files_that_load() {
    let m = migration_dir(&[("0001_a.sql", "CREATE TABLE a (x INTEGER);")]);
    let out = fleetmig()
        .args(["new", "add due date", "--reversible", "--migrations"])
        .arg(m.path())
        .output()
        .unwrap();
    expect_exit(&out, 0);
    assert!(m.path().join("0002_add_due_date.up.sql").exists());
    assert!(m.path().join("0002_add_due_date.down.sql").exists());
    let out = fleetmig()
        .args([
            "new",
            "concurrent index",
            "--no-transaction",
            "--migrations",
        ])
        .arg(m.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(m.path().join("0003_concurrent_index.sql")).unwrap();
    assert!(text.starts_with("-- no-transaction"));
    assert!(fleetmig::migration::load(m.path()).is_ok());
}

#[test]
fn help_documents_exit_codes() {
    let out = fleetmig().arg("--help").output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("Exit codes") && text.contains("2  bad usage"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_tx_mode_leaves_a_failing_tenant_at_its_starting_version() {
    let dir = sqlite_fleet(2);
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x INTEGER);"),
        ("0002_b.sql", "CREATE TABLE b (x INTEGER);"),
        ("0003_c.sql", "CREATE TABLE c (x INTEGER);"),
        ("0004_d.sql", "CREATE TABLE d (x INTEGER);"),
        ("0005_e.sql", "CREATE TABLE e (x INTEGER);"),
    ]);
    // tenant 1 starts at version 1 and will fail in its third pending migration
    let out = sync(dir.path(), m.path(), &["--to", "1"]);
    assert_eq!(out.status.code(), Some(0));
    let mut c = sqlite(&tenant_path(dir.path(), "t0001")).await;
    sqlx::Executor::execute(&mut c, "CREATE TABLE d (conflict INTEGER)")
        .await
        .unwrap();
    sqlx::Connection::close(c).await.unwrap();
    let out = sync(dir.path(), m.path(), &["--tx-mode", "tenant"]);
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows["t0000"]["status"], "succeeded");
    assert_eq!(rows["t0001"]["status"], "failed");
    assert_eq!(rows["t0001"]["error_version"], "4");
    assert_eq!(rows["t0001"]["to_version"], "1");
    let p = tenant_path(dir.path(), "t0001");
    assert_eq!(sqlite_history(&p).await, vec![(1, true)]);
    let tables = sqlite_tables(&p).await;
    assert!(
        !tables.contains(&"b".to_string()) && !tables.contains(&"c".to_string()),
        "{tables:?}"
    );
    assert_eq!(
        sqlite_history(&tenant_path(dir.path(), "t0000"))
            .await
            .len(),
        5
    );
}

#[test]
fn progress_is_plain_lines_in_a_log_and_a_bar_on_a_terminal() {
    let dir = sqlite_fleet(4);
    let m = migration_dir(&[(
        "0001_slow.sql",
        "CREATE TABLE n (x INTEGER);\n\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000) INSERT INTO n SELECT x FROM c;",
    )]);
    // not a terminal (a cron job's log): plain lines
    let out = fleetmig()
        .current_dir(dir.path())
        .args([
            "sync",
            "--fleet",
            "sqlite-dir:tenants",
            "--concurrency",
            "1",
            "--progress-every",
            "1",
            "--migrations",
        ])
        .arg(m.path())
        .output()
        .unwrap();
    expect_exit(&out, 0);
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("fleetmig:") && l.contains("done"))
        .collect();
    assert!(!lines.is_empty(), "no progress lines in {err}");
    assert!(
        lines[0].contains("/4 done") && lines[0].contains("slowest in flight"),
        "{}",
        lines[0]
    );

    // a terminal: the indicatif bar (util-linux `script` gives the run a pty)
    let dir = sqlite_fleet(4);
    let bin = assert_cmd::cargo::cargo_bin("fleetmig");
    let cmd = format!(
        "{} sync --fleet sqlite-dir:tenants --concurrency 1 --migrations {}",
        bin.display(),
        m.path().display()
    );
    let out = std::process::Command::new("script")
        .current_dir(dir.path())
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let tty = stdout(&out);
    assert!(
        tty.contains("ETA") && tty.contains("/4"),
        "no bar on the terminal: {tty:?}"
    );
}

#[test]
fn completions_and_the_manual_page() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef fleetmig"),
        ("fish", "complete -c fleetmig"),
    ] {
        let out = fleetmig().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = stdout(&out);
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(
            text.contains("rollout") && text.contains("tenant-pattern"),
            "{shell}"
        );
    }
    let out = fleetmig().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let page = stdout(&out);
    assert!(page.contains(".TH fleetmig"), "{page}");
    assert!(
        page.contains("fleetmig\\-resume"),
        "every command has a section"
    );
    assert!(page.contains("\\-\\-allow\\-empty"), "flags are listed");
    let out = fleetmig().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
