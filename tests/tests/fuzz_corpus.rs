//! Runs the fuzz targets' bodies over the checked-in corpus, plus a deterministic sweep of
//! pseudo-random inputs, so CI exercises them on stable without libFuzzer.

use std::path::PathBuf;

use certloop_core::SplitMix64;
use certloop_tests::fuzz_bodies::{cache_decode, event_sequence};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).expect("readable corpus file")))
        .collect()
}

#[test]
fn event_sequence_corpus() {
    for (path, data) in corpus("event_sequence") {
        println!("{}", path.display());
        event_sequence(&data);
    }
}

#[test]
fn cache_decode_corpus() {
    let files = corpus("cache_decode");
    for (_, data) in &files {
        cache_decode(data);
    }
    // The valid fixture really decodes: the body is not vacuous.
    let (_, valid) = files
        .iter()
        .find(|(p, _)| p.ends_with("valid_key_and_chain"))
        .expect("fixture");
    let file = certloop_acme::testing::decode_cert_file(valid).expect("fixture decodes");
    assert_eq!(file.chain.len(), 2);
    assert_eq!(&*file.info.names, ["a.example", "b.example"]);
    assert_eq!(
        file.info.lifetime(),
        std::time::Duration::from_secs(90 * 86_400)
    );
}

#[test]
fn event_sequence_random_sweep() {
    let mut rng = SplitMix64::new(0xF022);
    for _ in 0..3000 {
        let len = rng.up_to(600) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        event_sequence(&data);
    }
}

#[test]
fn cache_decode_mutation_sweep() {
    let valid = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/cache_decode/valid_key_and_chain"),
    )
    .expect("fixture");
    let mut rng = SplitMix64::new(0xCAC4E);
    for _ in 0..2000 {
        let mut data = valid.clone();
        for _ in 0..=rng.up_to(8) {
            let i = rng.up_to(data.len() as u64 - 1) as usize;
            data[i] = rng.next_u64() as u8;
        }
        data.truncate(rng.up_to(data.len() as u64) as usize + 1);
        cache_decode(&data);
    }
}
