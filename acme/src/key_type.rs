//! The certificate key types certloop generates (with rcgen, on aws-lc-rs).

use std::fmt;

/// The type of key a certificate is issued for. The key is generated afresh for every order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: small, fast, accepted everywhere. The default, and what
    /// rustls-acme writes and reads.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384. rustls-acme reads it too.
    EcdsaP384,
    /// RSA, 2048 bits, for clients without ECDSA. rustls-acme cannot read it back.
    Rsa2048,
    /// RSA, 4096 bits: slow handshakes (about ten times the server CPU of P-256).
    Rsa4096,
}

impl KeyType {
    /// Every key type, in the order of [`KeyType::name`]'s documentation.
    pub const ALL: [Self; 4] = [
        Self::EcdsaP256,
        Self::EcdsaP384,
        Self::Rsa2048,
        Self::Rsa4096,
    ];

    /// `ecdsa-p256`, `ecdsa-p384`, `rsa-2048` or `rsa-4096`: the configuration's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa4096 => "rsa-4096",
        }
    }

    /// The key type named `name` (as [`KeyType::name`] spells it).
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("{name:?} is not one of {}", names.join(", "))
            })
    }

    /// Whether rustls-acme can load a cached certificate with this key (it reads ECDSA only).
    pub fn rustls_acme_readable(self) -> bool {
        matches!(self, Self::EcdsaP256 | Self::EcdsaP384)
    }

    /// A new key of this type.
    pub(crate) fn generate(self) -> Result<rcgen::KeyPair, rcgen::Error> {
        use rcgen::{KeyPair, RsaKeySize};
        match self {
            Self::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Self::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            Self::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048),
            Self::Rsa4096 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for key_type in KeyType::ALL {
            assert_eq!(KeyType::parse(key_type.name()), Ok(key_type));
        }
        let problem = KeyType::parse("ed25519").unwrap_err();
        assert!(
            problem.contains("\"ed25519\"")
                && problem.contains("ecdsa-p256, ecdsa-p384, rsa-2048, rsa-4096"),
            "{problem}"
        );
        assert_eq!(KeyType::default(), KeyType::EcdsaP256);
    }

    #[test]
    fn each_type_generates_a_key_rustls_can_sign_with() {
        // RSA 4096 takes a second or more to generate; the other three cover the code paths.
        for key_type in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let key = key_type.generate().expect("generated");
            let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
            let signing = crate::tls::provider()
                .key_provider
                .load_private_key(der)
                .expect("rustls loads it");
            let expected = match key_type {
                KeyType::Rsa2048 | KeyType::Rsa4096 => rustls::SignatureAlgorithm::RSA,
                _ => rustls::SignatureAlgorithm::ECDSA,
            };
            assert_eq!(signing.algorithm(), expected, "{key_type}");
        }
    }
}
