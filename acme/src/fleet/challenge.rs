//! A challenge answer as the fleet shares it: what any instance needs to answer the CA's
//! validation for a certificate another instance is ordering. TLS-ALPN-01 is shared as its
//! name and digest (each instance builds its own self-signed answer), never as a key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// One published answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SharedChallenge {
    /// HTTP-01: the token and its key authorization.
    Http01 {
        token: String,
        key_authorization: String,
    },
    /// TLS-ALPN-01: the name the certificate carries, the SNI the validation arrives with,
    /// and the key authorization's digest.
    TlsAlpn01 {
        name: String,
        sni: String,
        digest: Vec<u8>,
    },
}

impl SharedChallenge {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let value = match self {
            Self::Http01 {
                token,
                key_authorization,
            } => json!({"kind": "http-01", "token": token, "key_authorization": key_authorization}),
            Self::TlsAlpn01 { name, sni, digest } => json!({
                "kind": "tls-alpn-01", "name": name, "sni": sni, "digest": STANDARD.encode(digest)
            }),
        };
        value.to_string().into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not a shared challenge: {e}"))?;
        let field = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("a shared challenge lacks {name}"))
        };
        match value["kind"].as_str() {
            Some("http-01") => Ok(Self::Http01 {
                token: field("token")?,
                key_authorization: field("key_authorization")?,
            }),
            Some("tls-alpn-01") => Ok(Self::TlsAlpn01 {
                name: field("name")?,
                sni: field("sni")?,
                digest: STANDARD
                    .decode(field("digest")?)
                    .map_err(|e| format!("a shared challenge's digest: {e}"))?,
            }),
            other => Err(format!("unknown shared challenge kind {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_challenges_round_trip_and_garbage_is_an_error() {
        for challenge in [
            SharedChallenge::Http01 {
                token: "tok".into(),
                key_authorization: "tok.thumb".into(),
            },
            SharedChallenge::TlsAlpn01 {
                name: "127.0.0.1".into(),
                sni: "1.0.0.127.in-addr.arpa".into(),
                digest: vec![0, 1, 254, 255],
            },
        ] {
            assert_eq!(SharedChallenge::decode(&challenge.encode()), Ok(challenge));
        }
        assert!(SharedChallenge::decode(b"{}").is_err());
        assert!(SharedChallenge::decode(b"\xff").is_err());
        assert!(SharedChallenge::decode(br#"{"kind":"http-01","token":"t"}"#).is_err());
    }
}
