//! DNS-01 (RFC 8555 §8.4): the answer is a TXT record at `_acme-challenge.<name>`. A
//! [`DnsProvider`] publishes and removes it; the one certloop ships, [`Rfc2136`], sends RFC 2136
//! dynamic updates signed with TSIG to the zone's primary server over TCP, and checks that
//! every authoritative server of the zone (its NS records) answers the record before the CA is
//! told to look.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::dns_wire::{
    Answer, TYPE_A, TYPE_AAAA, TYPE_NS, TYPE_TXT, TsigKey, TxtChange, TxtRecord, parse_response,
    query, rcode_name, txt_update,
};
use crate::runtime::{BoxFuture, Runtime, timeout};

/// Publishes DNS-01 answers: the seam for another DNS provider's API; certloop ships
/// [`Rfc2136`]. Every method names the record by its full name (`_acme-challenge.` and the
/// name being validated, without the wildcard label).
pub(crate) trait DnsProvider: Send + Sync + 'static {
    /// Adds the TXT record `name` = `value` (other values at `name` stay: two orders, or a
    /// wildcard and its parent, may publish at once).
    fn publish(&self, name: String, value: String) -> BoxFuture<Result<(), String>>;
    /// Removes exactly that record.
    fn remove(&self, name: String, value: String) -> BoxFuture<Result<(), String>>;
    /// `Ok(None)` once every authoritative server answers the record; otherwise which one does
    /// not yet.
    fn check_visible(
        &self,
        name: String,
        value: String,
    ) -> BoxFuture<Result<Option<String>, String>>;
}

/// Where and how to send RFC 2136 updates: what [`crate::AcmeConfig::dns01_rfc2136`] takes.
/// `Debug` shows the key file's path, never the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rfc2136Settings {
    /// The zone's primary server, which accepts updates (e.g. `192.0.2.53:53`).
    pub server: SocketAddr,
    /// The zone the names are in (e.g. `example.com`).
    pub zone: String,
    /// The TSIG key's name, as the server knows it.
    pub key_name: String,
    /// A file holding the key's HMAC-SHA256 secret in base64 (as `tsig-keygen` and `keymgr`
    /// print it), read when the configuration is checked.
    pub secret_file: PathBuf,
    /// How long the record may take to reach every authoritative server (default 120 s).
    pub propagation_timeout: Duration,
}

impl Rfc2136Settings {
    /// Updates for `zone` sent to `server`, signed with the key `key_name` whose secret is in
    /// `secret_file`.
    pub fn new(
        server: SocketAddr,
        zone: impl Into<String>,
        key_name: impl Into<String>,
        secret_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            server,
            zone: zone.into().trim_end_matches('.').to_ascii_lowercase(),
            key_name: key_name.into(),
            secret_file: secret_file.into(),
            propagation_timeout: Duration::from_secs(120),
        }
    }

    /// Reads the secret: the file holds the base64 secret alone, or a knot (`secret: ...`) or
    /// BIND (`secret "...";`) key definition, whose algorithm must then be hmac-sha256. The
    /// error names the file, never its content.
    pub(crate) fn read_key(&self) -> Result<TsigKey, String> {
        let path = self.secret_file.display();
        let text = std::fs::read_to_string(&self.secret_file)
            .map_err(|e| format!("{path}: cannot be read: {e}"))?;
        let secret = secret_in(&text).map_err(|problem| format!("{path}: {problem}"))?;
        Ok(TsigKey {
            name: self.key_name.clone(),
            secret,
        })
    }
}

/// The HMAC-SHA256 secret in a key file's `text` (see [`Rfc2136Settings::read_key`]).
fn secret_in(text: &str) -> Result<Vec<u8>, &'static str> {
    use base64::Engine;
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '"' || c == ';' || c == '{' || c == '}')
        .filter(|w| !w.is_empty())
        .collect();
    let secret = match words.as_slice() {
        [only] => *only,
        _ => {
            let algorithm = words
                .windows(2)
                .find(|w| matches!(w[0], "algorithm" | "algorithm:"));
            if algorithm.is_some_and(|w| !w[1].eq_ignore_ascii_case("hmac-sha256")) {
                return Err("names an algorithm other than hmac-sha256");
            }
            (words.windows(2))
                .find(|w| matches!(w[0], "secret" | "secret:"))
                .map(|w| w[1])
                .ok_or("holds no TSIG secret (its content is not shown)")?
        }
    };
    base64::engine::general_purpose::STANDARD
        .decode(secret)
        .map_err(|_| "the TSIG secret is not base64 (its content is not shown)")
}

/// The record name for a name being validated (`*.example.com` is validated as `example.com`).
pub(crate) fn record_name(name: &str) -> String {
    format!(
        "_acme-challenge.{}",
        name.strip_prefix("*.").unwrap_or(name)
    )
}

/// Whether `name` is `zone` or inside it.
pub(crate) fn in_zone(name: &str, zone: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name).to_ascii_lowercase();
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// How long one DNS exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 2136 dynamic updates with TSIG, over the runtime's TCP.
pub(crate) struct Rfc2136<R: Runtime> {
    rt: R,
    settings: Rfc2136Settings,
    key: TsigKey,
}

impl<R: Runtime> Rfc2136<R> {
    /// A provider for `settings`, with the key already read.
    pub(crate) fn new(rt: R, settings: Rfc2136Settings, key: TsigKey) -> Self {
        Self { rt, settings, key }
    }

    /// Sends `message` to `server` and reads the answer (TCP, two-byte length prefix).
    async fn exchange(&self, server: SocketAddr, message: Vec<u8>) -> Result<Vec<u8>, String> {
        let exchange = async {
            let mut tcp = (self.rt)
                .connect(server.ip().to_string(), server.port())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut framed = (message.len() as u16).to_be_bytes().to_vec();
            framed.extend(&message);
            tcp.write_all(&framed)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len)
                .await
                .map_err(|e| format!("receive: {e}"))?;
            let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
            tcp.read_exact(&mut answer)
                .await
                .map_err(|e| format!("receive: {e}"))?;
            Ok::<_, String>(answer)
        };
        timeout(&self.rt, EXCHANGE_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|| Err(format!("no answer within {EXCHANGE_TIMEOUT:?}")))
            .map_err(|e| format!("DNS server {server}: {e}"))
    }

    async fn update(&self, name: String, value: String, change: TxtChange) -> Result<(), String> {
        let id = message_id(&name);
        let now = self.rt.wall_clock().as_secs();
        let s = &self.settings;
        let record = TxtRecord {
            zone: &s.zone,
            name: &name,
            value: &value,
        };
        let message = txt_update(id, record, change, &self.key, now)?;
        let answer = parse_response(&self.exchange(s.server, message).await?)?;
        match answer.rcode {
            0 => Ok(()),
            code => Err(format!(
                "DNS server {}: the update of {name} TXT was answered {} (check the zone {:?}, \
                 the TSIG key {:?} and the server's update policy)",
                s.server,
                rcode_name(code),
                s.zone,
                s.key_name
            )),
        }
    }

    /// The zone's authoritative servers: its NS records, at the addresses the primary gives
    /// for them (glue or the A/AAAA records it holds), on the primary's port.
    async fn authoritative_servers(&self) -> Result<Vec<(String, SocketAddr)>, String> {
        let s = &self.settings;
        let ns = self
            .ask(s.server, &s.zone, TYPE_NS)
            .await
            .map_err(|e| format!("the NS records of {}: {e}", s.zone))?;
        let names: Vec<String> = (ns.answers.iter())
            .filter_map(|(_, a)| match a {
                Answer::Ns(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        if names.is_empty() {
            return Err(format!("{} has no NS records at {}", s.zone, s.server));
        }
        let mut servers = Vec::new();
        for name in names {
            let mut addresses: Vec<IpAddr> = (ns.additional.iter())
                .filter(|(owner, _)| *owner == name)
                .filter_map(|(_, a)| match a {
                    Answer::Address(ip) => Some(*ip),
                    _ => None,
                })
                .collect();
            if addresses.is_empty() {
                for kind in [TYPE_A, TYPE_AAAA] {
                    if let Ok(answer) = self.ask(s.server, &name, kind).await {
                        addresses.extend(answer.answers.iter().filter_map(|(_, a)| match a {
                            Answer::Address(ip) => Some(*ip),
                            _ => None,
                        }));
                    }
                }
            }
            let Some(ip) = addresses.first() else {
                return Err(format!(
                    "cannot find the address of {name}, an authoritative server of {}",
                    s.zone
                ));
            };
            servers.push((name, SocketAddr::new(*ip, s.server.port())));
        }
        Ok(servers)
    }

    async fn ask(
        &self,
        server: SocketAddr,
        name: &str,
        kind: u16,
    ) -> Result<crate::dns_wire::Response, String> {
        let id = message_id(name);
        let answer = parse_response(&self.exchange(server, query(id, name, kind)?).await?)?;
        if answer.id != id {
            return Err(format!("DNS server {server}: answered another query"));
        }
        Ok(answer)
    }
}

/// A message id that differs between names (answers are matched on one connection each).
fn message_id(name: &str) -> u16 {
    name.bytes()
        .fold(0x5eedu16, |h, b| h.rotate_left(5) ^ u16::from(b))
}

impl<R: Runtime> DnsProvider for std::sync::Arc<Rfc2136<R>> {
    fn publish(&self, name: String, value: String) -> BoxFuture<Result<(), String>> {
        let this = self.clone();
        Box::pin(async move { this.update(name, value, TxtChange::Add).await })
    }

    fn remove(&self, name: String, value: String) -> BoxFuture<Result<(), String>> {
        let this = self.clone();
        Box::pin(async move { this.update(name, value, TxtChange::Delete).await })
    }

    fn check_visible(
        &self,
        name: String,
        value: String,
    ) -> BoxFuture<Result<Option<String>, String>> {
        let this = self.clone();
        Box::pin(async move {
            for (server_name, server) in this.authoritative_servers().await? {
                let answer = this.ask(server, &name, TYPE_TXT).await?;
                let found = (answer.answers.iter())
                    .any(|(_, a)| matches!(a, Answer::Txt(text) if *text == value));
                if !found {
                    return Ok(Some(format!("{server_name} ({server})")));
                }
            }
            Ok(None)
        })
    }
}

/// Waits until every authoritative server answers `name` = `value`, polling (100 ms, growing
/// to 2 s) for at most `within`.
pub(crate) async fn wait_until_visible<R: Runtime>(
    rt: &R,
    provider: &dyn DnsProvider,
    name: &str,
    value: &str,
    within: Duration,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let missing = match provider
            .check_visible(name.to_owned(), value.to_owned())
            .await
        {
            Ok(None) => return Ok(()),
            Ok(Some(server)) => format!("{server} does not answer it"),
            Err(e) => e,
        };
        if started.elapsed() >= within {
            return Err(format!(
                "the TXT record {name} did not reach every authoritative server within {}s: {missing}",
                within.as_secs()
            ));
        }
        rt.sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_named_for_the_base_name_inside_the_zone() {
        assert_eq!(
            record_name("*.example.test"),
            "_acme-challenge.example.test"
        );
        assert_eq!(
            record_name("a.example.test"),
            "_acme-challenge.a.example.test"
        );
        assert!(in_zone("*.example.test", "example.test"));
        assert!(in_zone("A.Example.test", "example.test"));
        assert!(!in_zone("badexample.test", "example.test"));
        assert!(in_zone("a.example.test", "Example.Test."));
    }

    #[test]
    fn the_secret_file_is_read_in_any_common_form_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("certloop-tsig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = |file: &str| {
            Rfc2136Settings::new(
                "127.0.0.1:53".parse().unwrap(),
                "Example.test.",
                "k",
                dir.join(file),
            )
        };
        assert_eq!(settings("x").zone, "example.test");
        let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
        for (file, text) in [
            ("plain", format!("{secret}\n")),
            (
                "bind",
                format!("key \"k\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n"),
            ),
            ("knot", format!("  secret: {secret}\n")),
            (
                "long-name",
                format!(
                    "key \"acmeupdatekey123\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n"
                ),
            ),
        ] {
            std::fs::write(dir.join(file), text).unwrap();
            let key = settings(file).read_key().unwrap();
            assert_eq!(key.secret, b"secret-secret-secret", "{file}");
        }
        std::fs::write(dir.join("bad"), "not a secret").unwrap();
        let problem = settings("bad").read_key().unwrap_err();
        assert!(problem.contains("holds no TSIG secret") && !problem.contains("not a secret"));
        std::fs::write(
            dir.join("md5"),
            format!("algorithm: hmac-md5\nsecret: {secret}\n"),
        )
        .unwrap();
        let problem = settings("md5").read_key().unwrap_err();
        assert!(problem.contains("other than hmac-sha256"), "{problem}");
        assert!(
            settings("missing")
                .read_key()
                .unwrap_err()
                .contains("cannot be read")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
