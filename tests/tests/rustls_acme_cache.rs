//! Compatibility with the real rustls-acme crate's `DirCache`, both ways: rustls-acme reads the
//! certificate file certloop wrote, and certloop adopts a cache rustls-acme wrote (certificate
//! and account) without a new order, with the CA down.

use certloop_tests::adapters::Tokio;
use certloop_tests::conformance::{Adapter, fetch_verified};
use certloop_tests::pebble::{Pebble, free_port, wait_until};
use rustls_acme::caches::DirCache;
use rustls_acme::{AccountCache, CertCache};
use std::time::Duration;

#[test]
fn certloop_and_rustls_acme_read_each_others_caches() {
    let tokio = Tokio::default();
    let mut pebble = Pebble::start();
    let domains = vec!["compat.certloop.test".to_owned()];
    let contacts = vec!["mailto:ops@example.com".to_owned()];
    let (directory_url, directory_ca) = (pebble.directory_url.clone(), pebble.directory_ca.clone());
    let config = |dir: &std::path::Path| {
        certloop_acme::AcmeConfig::new(domains.clone(), dir)
            .directory(certloop_acme::Directory::Url(directory_url.clone()))
            .contact(contacts[0].clone())
            .extra_roots_pem(&directory_ca)
    };
    // certloop issues into its own cache.
    let ours = pebble.scratch("certloop-cache");
    let handle = tokio.launch(config(&ours)).expect("launch");
    tokio.serve_tls(pebble.tls_port, &handle);
    tokio.block_on(handle.ready()).expect("issued");
    let cert_path = ours.join(certloop_acme::testing::cert_file_name(
        &domains,
        &pebble.directory_url,
    ));
    wait_until(
        "the certificate to be stored",
        Duration::from_secs(10),
        || cert_path.exists(),
    );
    drop(handle);
    let our_cert = std::fs::read(&cert_path).expect("certloop's certificate file");
    let account_name = certloop_acme::testing::account_file_name(&contacts, &pebble.directory_url);
    let our_account = std::fs::read(ours.join(account_name)).expect("certloop's account file");

    // rustls-acme reads what certloop wrote.
    let theirs = pebble.scratch("rustls-acme-cache");
    let read_back = tokio.block_on(async {
        let cache = DirCache::new(ours.clone());
        (
            cache
                .load_cert(&domains, &pebble.directory_url)
                .await
                .expect("load_cert"),
            cache
                .load_account(&contacts, &pebble.directory_url)
                .await
                .expect("load_account"),
        )
    });
    assert_eq!(read_back.0.as_deref(), Some(our_cert.as_slice()));
    assert_eq!(read_back.1.as_deref(), Some(our_account.as_slice()));

    // rustls-acme writes a cache; certloop adopts it with the CA down.
    tokio.block_on(async {
        let cache = DirCache::new(theirs.clone());
        cache
            .store_cert(&domains, &pebble.directory_url, &our_cert)
            .await
            .expect("store_cert");
        cache
            .store_account(&contacts, &pebble.directory_url, &our_account)
            .await
            .expect("store_account");
    });
    let root = pebble.issuing_root_pem();
    pebble.stop_ca();
    let handle = tokio
        .launch(config(&theirs))
        .expect("launch on the rustls-acme cache");
    let port = free_port();
    tokio.serve_tls(port, &handle);
    tokio
        .block_on(handle.ready())
        .expect("adopted without contacting the CA");
    let (leaf, _) = fetch_verified(port, &domains[0], &root).expect("served");
    let decoded = certloop_acme::testing::decode_cert_file(&our_cert).expect("decode");
    assert_eq!(leaf, decoded.chain[0]);
}
