//! Each certificate's status read from the cache directory alone, without launching and
//! without its lock: what an operator's status command shows while nothing runs.

use certloop_core::{CachedCert, CertBundle, CertLifecycle, Certificate, Event, UnixTime};

use crate::cache::{cert_file_name, decode_cert_file, decode_retry_state};
use crate::config::{AcmeConfig, StartError};
use crate::status::{CertStatus, ServedCert};

impl AcmeConfig {
    /// Each configured certificate's status as the cache directory holds it at `now`: the
    /// cached certificate (as [`CertStatus::served`], whether or not it is still valid), the
    /// renewal point a launch would compute for it, and the failure streak and next order an
    /// earlier run persisted. It reads files only (blocking; nothing is written, moved or
    /// locked), so it works while certloop runs or is stopped; a file that cannot be read
    /// leaves its fields empty. Orders since launch are not persisted and read as zero.
    pub fn cached_status(&self, now: UnixTime) -> Result<Vec<CertStatus>, StartError> {
        let resolved = self.resolve()?;
        let urls: Vec<String> = (self.issuers().iter())
            .map(|i| i.directory_url().to_owned())
            .collect();
        let policy = std::sync::Arc::new(self.policy.clone());
        let statuses = self
            .certs
            .iter()
            .zip(&resolved.certs)
            .map(|(domains, core)| {
                let mut status = CertStatus::new(domains.clone());
                // Each issuer caches under its own directory URL; a launch serves the newest.
                let read = |url: &String| {
                    let bytes =
                        std::fs::read(self.cache_dir.join(cert_file_name(core.domains(), url)))
                            .ok()?;
                    let file = decode_cert_file(&bytes).ok()?;
                    let served = ServedCert::from_leaf(file.chain.first()?).ok()?;
                    Some((served, file.info, bytes, url.clone()))
                };
                // As a launch picks (`DirStore::load_prepared_cert_from`): the newest, the more
                // preferred issuer's on a tie.
                let cached = (urls.iter().filter_map(read)).reduce(|best, next| {
                    if next.1.not_after > best.1.not_after {
                        next
                    } else {
                        best
                    }
                });
                // The preferred issuer's file keeps the retry state.
                let name = cert_file_name(core.domains(), &urls[0]);
                let retry = std::fs::read(self.cache_dir.join(format!("{name}.retry")))
                    .ok()
                    .and_then(|bytes| decode_retry_state(&String::from_utf8_lossy(&bytes)).ok());
                if let Some(retry) = &retry {
                    status.failures = retry.failures;
                    status.last_error = retry.last_error.as_ref().map(ToString::to_string);
                    status.next_order_at = retry.next_attempt_at;
                }
                if let Some((served, info, bytes, url)) = cached {
                    status.issued_by = Some(url);
                    // The renewal point exactly as a launch draws it: the same policy and seed.
                    if info.is_valid_at(now)
                        && let Ok(mut lifecycle) = CertLifecycle::new(policy.clone(), core, now)
                    {
                        let cert = Certificate {
                            info,
                            bundle: CertBundle::new(bytes),
                        };
                        let (cert, retry) = (CachedCert::Found(cert), retry.clone());
                        lifecycle.handle(now, Event::CacheLoaded { cert, retry });
                        status.renew_at = lifecycle.renew_at();
                    }
                    status.served = Some(served);
                }
                status
            });
        Ok(statuses.collect())
    }
}
