//! The conformance suite against a real Pebble, once per runtime adapter.

use certloop_tests::adapters::{Smol, Tokio};
use certloop_tests::conformance as suite;

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod tokio_runtime {
            use super::*;
            $( #[test] fn $scenario() { suite::$scenario(&Tokio::default()); } )*
        }
        mod smol_runtime {
            use super::*;
            $( #[test] fn $scenario() { suite::$scenario(&Smol); } )*
        }
    };
}

conformance!(
    issues_with_tls_alpn_01_for_several_names,
    issues_with_http_01,
    restart_with_cache_makes_no_new_order,
    restart_with_ca_down_serves_cached_and_warns,
    first_start_ca_down_fails_within_bound,
    corrupt_cache_is_set_aside_and_reordered,
    directory_selection,
    adopts_rustls_acme_cache,
    renews_before_expiry,
    sni_selects_among_certificates,
    external_account_binding,
    unwritable_cache_dir_is_reported,
    ari_window_triggers_a_renewal,
    profile_is_checked_at_launch_and_sent_with_orders,
    key_types_are_issued_and_served,
    issues_ip_address_certificates,
    falls_back_to_the_next_issuer_and_renews_from_the_preferred_one,
    dns_01_issues_a_wildcard_certificate_through_knot,
    account_rollover_and_revocation,
    a_fleet_of_two_orders_once,
    orders_beyond_the_limit_wait_their_turn,
);
