//! The ACME account's lifecycle, for an operator: what it is, a key rollover (RFC 8555 §7.3.5)
//! that keeps the old key aside until the new one is confirmed, and revoking a certificate.

use std::fmt;

use instant_acme::{AccountCredentials, RevocationRequest};
use rustls_pki_types::CertificateDer;

use crate::order::AcmeContext;
use crate::runtime::Runtime;

/// An ACME account, as [`crate::AcmeHandle::account`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccountInfo {
    /// The account's URL at the CA (its id).
    pub url: String,
    /// The CA's directory URL.
    pub directory: String,
    /// The contacts it was registered with.
    pub contacts: Vec<String>,
    /// The account key's type (instant-acme keys are ECDSA P-256).
    pub key_type: &'static str,
}

impl fmt::Display for AccountInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let contacts = if self.contacts.is_empty() {
            "(none)".to_owned()
        } else {
            self.contacts.join(", ")
        };
        write!(
            f,
            "account   {}\ndirectory {}\ncontact   {contacts}\nkey type  {}",
            self.url, self.directory, self.key_type
        )
    }
}

/// The type of every account key: instant-acme generates ECDSA P-256 keys.
const ACCOUNT_KEY_TYPE: &str = "ecdsa-p256";

/// Why a certificate is revoked (RFC 5280 §5.3.1; the reasons a subscriber may give).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationReason {
    /// No reason given.
    #[default]
    Unspecified,
    /// The private key was, or may have been, disclosed.
    KeyCompromise,
    /// The names or organisation changed.
    AffiliationChanged,
    /// A new certificate replaces it.
    Superseded,
    /// The certificate is no longer needed.
    CessationOfOperation,
}

impl RevocationReason {
    /// The RFC 5280 name (`keyCompromise`, ...), as the command line takes it.
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "unspecified" => Self::Unspecified,
            "keyCompromise" => Self::KeyCompromise,
            "affiliationChanged" => Self::AffiliationChanged,
            "superseded" => Self::Superseded,
            "cessationOfOperation" => Self::CessationOfOperation,
            other => {
                return Err(format!(
                    "{other:?} is not unspecified, keyCompromise, affiliationChanged, superseded \
                     or cessationOfOperation"
                ));
            }
        })
    }

    fn acme(self) -> instant_acme::RevocationReason {
        use instant_acme::RevocationReason as R;
        match self {
            Self::Unspecified => R::Unspecified,
            Self::KeyCompromise => R::KeyCompromise,
            Self::AffiliationChanged => R::AffiliationChanged,
            Self::Superseded => R::Superseded,
            Self::CessationOfOperation => R::CessationOfOperation,
        }
    }
}

/// The account URL in a credentials document (the key is never read out of it here).
fn account_url(credentials_json: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(credentials_json).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

impl crate::AcmeConfig {
    /// The preferred CA's account as the cache directory holds it, read without launching or
    /// locking (it works while certloop runs); an error when none is registered yet.
    pub fn cached_account(&self) -> Result<AccountInfo, String> {
        let preferred = &self.preferred;
        stored_account(
            &self.cache_dir,
            &preferred.contacts,
            preferred.directory_url(),
        )
    }
}

/// The account stored in `dir` for these contacts at `directory`, read from its credentials
/// file (the key in it is not looked at).
fn stored_account(
    dir: &std::path::Path,
    contacts: &[String],
    directory: &str,
) -> Result<AccountInfo, String> {
    let file = format!(
        "{}.credentials.json",
        crate::cache::account_file_name(contacts, directory)
    );
    let path = dir.join(file);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no ACME account for {directory} is stored in {} yet (one is registered with \
                 the first order)",
                dir.display()
            ));
        }
        Err(e) => return Err(format!("{}: cannot be read: {e}", path.display())),
    };
    let url =
        account_url(&bytes).ok_or_else(|| format!("{}: holds no account URL", path.display()))?;
    Ok(AccountInfo {
        url,
        directory: directory.to_owned(),
        contacts: contacts.to_vec(),
        key_type: ACCOUNT_KEY_TYPE,
    })
}

impl<R: Runtime> AcmeContext<R> {
    /// The account as stored in the cache directory; an error when none is registered yet
    /// (this never registers one).
    pub(crate) async fn account_info(&self) -> Result<AccountInfo, String> {
        let (dir, contacts) = (self.store.dir().to_owned(), self.contacts.clone());
        let directory = self.directory_url.clone();
        let read = move || stored_account(&dir, &contacts, &directory);
        self.rt.unblock(Box::new(read)).await
    }

    fn info(&self, url: String) -> AccountInfo {
        AccountInfo {
            url,
            directory: self.directory_url.clone(),
            contacts: self.contacts.clone(),
            key_type: ACCOUNT_KEY_TYPE,
        }
    }

    /// Replaces the account key (RFC 8555 key change). The current credentials are copied
    /// aside first; once the CA accepted the new key, it is stored and then confirmed with a
    /// request signed by it, and only then is the copy removed. A failure before the CA
    /// accepted leaves the old key in use; after, the copy says which key the account had.
    pub(crate) async fn rollover_account_key(&self) -> Result<AccountInfo, String> {
        self.account().await.map_err(|e| e.detail)?;
        // Held throughout: no order signs with a key that is being replaced, and two rollovers
        // cannot interleave.
        let mut slot = self.account.lock().await;
        let Some(mut account) = slot.clone() else {
            return Err("the account is not loaded".into());
        };
        let contacts = self.contacts.clone();
        self.with_store(move |store, url| store.keep_previous_account(&contacts, url))
            .await?;
        let drop_previous = || {
            let contacts = self.contacts.clone();
            self.with_store(move |store, url| store.drop_previous_account(&contacts, url))
        };
        let credentials: AccountCredentials = match account.update_key().await {
            Ok(credentials) => credentials,
            Err(e) => {
                drop_previous().await;
                let detail = self.classify(&e).detail;
                return Err(format!(
                    "the CA refused the key change; the key is unchanged: {detail}"
                ));
            }
        };
        // The CA now knows only the new key: use it from here on, whatever follows.
        *slot = Some(account.clone());
        self.persist_account(&credentials).await.map_err(|e| {
            format!(
                "the CA accepted the new key but it could not be stored ({e}); the previous \
                 credentials are kept beside the account files"
            )
        })?;
        // Confirmed: a request signed with the new key (the contacts, unchanged).
        let contacts: Vec<&str> = self.contacts.iter().map(String::as_str).collect();
        account.update_contacts(&contacts).await.map_err(|e| {
            format!(
                "the new key is stored but the CA did not accept a request signed with it \
                 ({}); the previous credentials are kept beside it",
                self.classify(&e).detail
            )
        })?;
        drop_previous().await;
        tracing::info!(account = account.id(), "ACME account key rolled over");
        Ok(self.info(account.id().to_owned()))
    }

    /// Revokes `leaf` (a certificate this account ordered) for `reason`.
    pub(crate) async fn revoke(
        &self,
        leaf: &CertificateDer<'_>,
        reason: RevocationReason,
    ) -> Result<(), String> {
        let account = self.account().await.map_err(|e| e.detail)?;
        let request = RevocationRequest {
            certificate: leaf,
            reason: Some(reason.acme()),
        };
        account.revoke(&request).await.map_err(|e| {
            format!(
                "the CA refused the revocation: {}",
                self.classify(&e).detail
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_by_their_rfc_5280_names() {
        assert_eq!(
            RevocationReason::parse("keyCompromise"),
            Ok(RevocationReason::KeyCompromise)
        );
        let problem = RevocationReason::parse("stolen").unwrap_err();
        assert!(problem.contains("keyCompromise"), "{problem}");
    }

    #[test]
    fn the_account_url_is_read_without_the_key() {
        let json = br#"{"id":"https://ca.test/acct/7","key_pkcs8":"c2VjcmV0","directory":"x"}"#;
        assert_eq!(account_url(json).as_deref(), Some("https://ca.test/acct/7"));
        assert_eq!(account_url(b"{}"), None);
        let info = AccountInfo {
            url: "https://ca.test/acct/7".into(),
            directory: "https://ca.test/dir".into(),
            contacts: vec![],
            key_type: ACCOUNT_KEY_TYPE,
        };
        assert!(info.to_string().contains("contact   (none)"));
    }
}
