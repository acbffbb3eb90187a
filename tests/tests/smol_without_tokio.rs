//! certloop-smol issues a certificate with no tokio runtime anywhere in the process: instant-acme
//! still depends on the tokio crate, but no tokio reactor, timer or worker thread may run.
//! (Its own test binary, so the tokio conformance tests do not share the process.)

use certloop_tests::adapters::Smol;
use certloop_tests::conformance;

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn smol_issues_without_any_tokio_thread() {
    conformance::issues_with_tls_alpn_01_for_several_names(&Smol);
    conformance::restart_with_ca_down_serves_cached_and_warns(&Smol);
    // Fleet mode: the redis crate runs on smol here.
    conformance::a_fleet_of_two_orders_once(&Smol);
    let names = thread_names();
    assert!(names.len() > 1, "threads listed: {names:?}");
    assert!(
        !names.iter().any(|n| n.contains("tokio")),
        "tokio threads: {names:?}"
    );
}
