//! `certloop-acme`: the parts both runtime adapters share, written once.
//!
//! - [`cache`]: the rustls-acme compatible `DirCache` format as pure functions (file names,
//!   certificate files, sidecar state), so the codec is fuzzed without any IO.

#![forbid(unsafe_code)]

pub mod cache;
