//! Every connection fleetmig opens to a server (PostgreSQL, MySQL/MariaDB,
//! a PostgreSQL state store) is a TCP socket with TCP_NODELAY set: sqlx
//! 0.9 does not set it, the vendored patch of sqlx-core does
//! (vendor/README.md). Read back from the sockets themselves.

use crate::common::*;

unsafe extern "C" {
    fn getsockopt(fd: i32, level: i32, name: i32, value: *mut i32, len: *mut u32) -> i32;
}

const IPPROTO_TCP: i32 = 6;
const TCP_NODELAY: i32 = 1;

/// TCP_NODELAY of each TCP socket this process holds (a socket that is
/// not TCP answers no TCP option and is left out).
fn tcp_nodelay_of_open_sockets() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !link.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let (mut v, mut len) = (0i32, 4u32);
        // SAFETY: fd is open in this process; v and len are valid for writes
        if unsafe { getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &mut v, &mut len) } == 0 {
            out.push((fd, v));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_connection_sets_tcp_nodelay() {
    let before = tcp_nodelay_of_open_sockets();
    let pg = pg_connect(&pg_base_url()).await;
    let my = mysql_connect(&mysql_base_url()).await;
    sqlx::any::install_default_drivers();
    let store = fleetmig::state::StateStore::open(
        &pg_base_url(),
        fleetmig::state::Open::Read,
        std::time::Duration::from_secs(10),
    )
    .await;
    let after = tcp_nodelay_of_open_sockets();
    let new: Vec<_> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(
        new.len() >= 2,
        "the connections' sockets not found: {after:?}"
    );
    assert!(
        new.iter().all(|(_, nodelay)| *nodelay == 1),
        "TCP sockets without TCP_NODELAY (fd, value): {new:?}"
    );
    drop((pg, my));
    if let Ok(s) = store {
        s.close().await;
    }
}
