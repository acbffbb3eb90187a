//! ACME profiles (draft-ietf-acme-profiles): a CA lists what it issues in its directory's
//! `meta.profiles` (Let's Encrypt: `classic`, `tlsserver`, `shortlived`), and an order names
//! the one it wants. A profile the CA does not offer is a configuration error, caught at launch
//! when the CA answers and again before every order.

use bytes::Bytes;
use http::Request;
use instant_acme::{BodyWrapper, HttpClient};

use crate::http_client::AcmeHttpClient;
use crate::runtime::Runtime;

/// The profile names in a directory document, in its order (none: the CA has no profiles).
pub(crate) fn offered_profiles(directory_json: &[u8]) -> Result<Vec<String>, String> {
    let directory: serde_json::Value = serde_json::from_slice(directory_json)
        .map_err(|e| format!("the directory is not JSON: {e}"))?;
    let profiles = directory.pointer("/meta/profiles");
    Ok(match profiles.and_then(|p| p.as_object()) {
        Some(map) => map.keys().cloned().collect(),
        None => Vec::new(),
    })
}

/// Why `profile` cannot be ordered from the CA at `directory_url`, which offers `offered`;
/// `None` when it is offered.
pub(crate) fn missing_profile(
    profile: &str,
    directory_url: &str,
    offered: &[String],
) -> Option<String> {
    if offered.iter().any(|p| p == profile) {
        return None;
    }
    let offers = if offered.is_empty() {
        "it offers no profiles".to_owned()
    } else {
        format!("it offers: {}", offered.join(", "))
    };
    Some(format!(
        "the CA at {directory_url} does not offer the ACME profile {profile:?} ({offers}); \
         remove acme_profile or name one of those"
    ))
}

/// Reads the directory and checks that it offers `profile`. `Ok(Some(problem))`: it does not;
/// `Err`: the CA could not be asked (unreachable, an error status, not a directory).
pub(crate) async fn check_profile<R: Runtime>(
    client: &AcmeHttpClient<R>,
    directory_url: &str,
    profile: &str,
) -> Result<Option<String>, String> {
    let request = Request::get(directory_url)
        .body(BodyWrapper::<Bytes>::default())
        .map_err(|e| format!("{directory_url}: {e}"))?;
    // The client bounds the request by its timeout and turns error statuses into errors.
    let answer = client.request(request).await.map_err(|e| e.to_string())?;
    let mut body = answer.body;
    let body = body.into_bytes().await.map_err(|e| e.to_string())?;
    let offered = offered_profiles(&body).map_err(|e| format!("{directory_url}: {e}"))?;
    Ok(missing_profile(profile, directory_url, &offered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_the_directory_meta() {
        let lets_encrypt = br#"{"newOrder":"https://ca/new-order","meta":{"profiles":{
            "classic":"https://letsencrypt.org/docs/profiles#classic",
            "shortlived":"https://letsencrypt.org/docs/profiles#shortlived",
            "tlsserver":"https://letsencrypt.org/docs/profiles#tlsserver"}}}"#;
        let offered = offered_profiles(lets_encrypt).unwrap();
        assert_eq!(offered, ["classic", "shortlived", "tlsserver"]);
        assert_eq!(
            missing_profile("shortlived", "https://ca/dir", &offered),
            None
        );
        let problem = missing_profile("sixday", "https://ca/dir", &offered).unwrap();
        assert!(
            problem.contains("\"sixday\"")
                && problem.contains("https://ca/dir")
                && problem.contains("it offers: classic, shortlived, tlsserver"),
            "{problem}"
        );
        let pebble = br#"{"newOrder":"https://ca/new-order","meta":{"termsOfService":"x"}}"#;
        let none = offered_profiles(pebble).unwrap();
        assert!(none.is_empty());
        let problem = missing_profile("shortlived", "https://ca/dir", &none).unwrap();
        assert!(problem.contains("it offers no profiles"), "{problem}");
        assert!(offered_profiles(b"<html>").is_err());
    }
}
