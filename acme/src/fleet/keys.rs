//! The names of the fleet's Redis keys and channel, and its notification messages: pure rules.
//!
//! Per certificate (`<id>` is its names joined by commas, as configured):
//! - `<prefix>fence:<id>`: the newest fencing token issued for it (a counter);
//! - `<prefix>lease:<id>`: `"<node> <epoch>:<token>"` while a node holds the lease, with a TTL;
//! - `<prefix>cert:<id>`: a hash of `token`, `bundle` (the rustls-acme cache format),
//!   `issuer` (the CA's directory URL) and `writer` (the node);
//! - `<prefix>retry:<id>`: the failure streak of its latest order anywhere in the fleet (the
//!   cache format's retry state), so that no instance orders before the fleet's backoff ends.
//! - `<prefix>ari:<id>`: the ARI renewal window one instance fetched for the certificate it
//!   serves, expiring when the CA asked to be asked again, so that the fleet asks once.
//!
//! For the fleet: `<prefix>epoch` (a random id set once: a Redis that lost its data gets a
//! new one, so tokens from before can never be mistaken for new ones), `<prefix>generation`
//! (a counter every fenced write increments: the periodic check reads it and compares the
//! records only when it moved), `<prefix>nodes` (a
//! sorted set of live nodes by expiry), `<prefix>challenge:<id>` and `<prefix>acks:<id>`
//! (a published challenge answer and the nodes that installed it), `<prefix>account:<id>`
//! (the ACME account's credentials per directory and contacts), and the channel
//! `<prefix>events`.

/// Key names under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The identity of a certificate in the fleet: its names, lowercased and sorted, so that
    /// instances listing them differently share it.
    pub(crate) fn cert_id(domains: &[String]) -> String {
        let mut names: Vec<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
        names.sort();
        names.join(",")
    }

    /// The identity of an account: its directory and contacts.
    pub(crate) fn account_id(directory_url: &str, contacts: &[String]) -> String {
        format!("{directory_url}#{}", contacts.join(","))
    }

    pub(crate) fn fence(&self, id: &str) -> String {
        format!("{}fence:{id}", self.prefix)
    }
    pub(crate) fn lease(&self, id: &str) -> String {
        format!("{}lease:{id}", self.prefix)
    }
    pub(crate) fn cert(&self, id: &str) -> String {
        format!("{}cert:{id}", self.prefix)
    }
    pub(crate) fn retry(&self, id: &str) -> String {
        format!("{}retry:{id}", self.prefix)
    }
    pub(crate) fn renewal_window(&self, id: &str) -> String {
        format!("{}ari:{id}", self.prefix)
    }
    pub(crate) fn account(&self, id: &str) -> String {
        format!("{}account:{id}", self.prefix)
    }
    pub(crate) fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }
    pub(crate) fn generation(&self) -> String {
        format!("{}generation", self.prefix)
    }
    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
    pub(crate) fn challenge(&self, id: &str) -> String {
        format!("{}challenge:{id}", self.prefix)
    }
    pub(crate) fn acks(&self, id: &str) -> String {
        format!("{}acks:{id}", self.prefix)
    }
    pub(crate) fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }
}

/// What the channel carries: `<kind> <node> <id>`. The data itself is read from its key, so a
/// message is small and a lost one costs only a delay (the periodic check finds the change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// A certificate's record was written.
    Cert { node: String, id: String },
    /// A challenge answer was published; every node installs it and acknowledges.
    Challenge { node: String, id: String },
    /// A challenge answer is no longer needed.
    ChallengeGone { node: String, id: String },
}

impl Message {
    pub(crate) fn encode(&self) -> String {
        let (kind, node, id) = match self {
            Self::Cert { node, id } => ("cert", node, id),
            Self::Challenge { node, id } => ("challenge", node, id),
            Self::ChallengeGone { node, id } => ("gone", node, id),
        };
        format!("{kind} {node} {id}")
    }

    /// `None` for anything else (another program on the channel): ignored.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, ' ');
        let (kind, node, id) = (parts.next()?, parts.next()?, parts.next()?);
        let (node, id) = (node.to_owned(), id.to_owned());
        match kind {
            "cert" => Some(Self::Cert { node, id }),
            "challenge" => Some(Self::Challenge { node, id }),
            "gone" => Some(Self::ChallengeGone { node, id }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_messages() {
        let keys = Keys::new("fleet1:");
        let id = Keys::cert_id(&["B.test".into(), "a.test".into()]);
        assert_eq!(keys.cert(&id), "fleet1:cert:a.test,b.test");
        assert_eq!(keys.lease(&id), "fleet1:lease:a.test,b.test");
        assert_eq!(keys.channel(), "fleet1:events");
        for message in [
            Message::Cert {
                node: "n1".into(),
                id: "*.a.test,a.test".into(),
            },
            Message::Challenge {
                node: "n2".into(),
                id: "42 with space".into(),
            },
            Message::ChallengeGone {
                node: "n2".into(),
                id: "42".into(),
            },
        ] {
            assert_eq!(Message::decode(&message.encode()), Some(message));
        }
        assert_eq!(Message::decode("hello"), None);
        assert_eq!(Message::decode("other n1 x"), None);
    }
}
