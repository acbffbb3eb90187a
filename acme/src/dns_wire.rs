//! The few DNS messages DNS-01 needs, as pure functions over bytes: an RFC 2136 UPDATE that
//! adds or deletes one TXT record, signed with TSIG (RFC 8945, HMAC-SHA256), a query, and the
//! answers of a response (TXT strings, NS names, addresses). Sent over TCP (two-byte length
//! prefix) by `dns01.rs`.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Record types used here.
pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_NS: u16 = 2;
pub(crate) const TYPE_SOA: u16 = 6;
pub(crate) const TYPE_TXT: u16 = 16;
pub(crate) const TYPE_AAAA: u16 = 28;
const TYPE_TSIG: u16 = 250;
const CLASS_IN: u16 = 1;
const CLASS_NONE: u16 = 254;
const CLASS_ANY: u16 = 255;
/// How far the signing time may be from the server's clock (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;
const HMAC_SHA256: &str = "hmac-sha256";

/// A TSIG key: its name and HMAC-SHA256 secret. `Debug` never shows the secret.
#[derive(Clone)]
pub(crate) struct TsigKey {
    pub(crate) name: String,
    pub(crate) secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// What an UPDATE does to the one TXT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxtChange {
    Add,
    Delete,
}

/// `name` in wire form (labels, then the root), lower-cased. `Err` for an empty label or a
/// label over 63 bytes.
fn encode_name(out: &mut Vec<u8>, name: &str) -> Result<(), String> {
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name"));
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    Ok(())
}

fn header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    out.extend(id.to_be_bytes());
    out.extend(flags.to_be_bytes());
    for count in counts {
        out.extend(count.to_be_bytes());
    }
}

/// A query for `name`'s records of type `kind`, not recursive (asked of an authoritative
/// server).
pub(crate) fn query(id: u16, name: &str, kind: u16) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    header(&mut out, id, 0, [1, 0, 0, 0]);
    encode_name(&mut out, name)?;
    out.extend(kind.to_be_bytes());
    out.extend(CLASS_IN.to_be_bytes());
    Ok(out)
}

/// One TXT record of a zone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TxtRecord<'a> {
    pub(crate) zone: &'a str,
    pub(crate) name: &'a str,
    pub(crate) value: &'a str,
}

/// The TTL of published records: short, as they live for one validation.
const RECORD_TTL: u32 = 60;

/// An UPDATE that adds or deletes `record`, signed with `key` at `now_secs`.
pub(crate) fn txt_update(
    id: u16,
    record: TxtRecord<'_>,
    change: TxtChange,
    key: &TsigKey,
    now_secs: u64,
) -> Result<Vec<u8>, String> {
    let TxtRecord { zone, name, value } = record;
    if value.len() > 255 {
        return Err("a TXT string holds at most 255 bytes".into());
    }
    let mut out = Vec::with_capacity(256);
    // Opcode 5 (UPDATE); one zone, one update.
    header(&mut out, id, 5 << 11, [1, 0, 1, 0]);
    encode_name(&mut out, zone)?;
    out.extend(TYPE_SOA.to_be_bytes());
    out.extend(CLASS_IN.to_be_bytes());
    encode_name(&mut out, name)?;
    out.extend(TYPE_TXT.to_be_bytes());
    let (class, ttl) = match change {
        TxtChange::Add => (CLASS_IN, RECORD_TTL),
        TxtChange::Delete => (CLASS_NONE, 0),
    };
    out.extend(class.to_be_bytes());
    out.extend(ttl.to_be_bytes());
    out.extend((value.len() as u16 + 1).to_be_bytes());
    out.push(value.len() as u8);
    out.extend(value.as_bytes());
    sign(out, key, now_secs)
}

/// Appends a TSIG record (RFC 8945 §4.3) to `message` and counts it.
fn sign(mut message: Vec<u8>, key: &TsigKey, now_secs: u64) -> Result<Vec<u8>, String> {
    let mut key_name = Vec::new();
    encode_name(&mut key_name, &key.name)?;
    let mut algorithm = Vec::new();
    encode_name(&mut algorithm, HMAC_SHA256)?;
    let time = &now_secs.to_be_bytes()[2..];
    // The MAC covers the message as it is, then the TSIG variables.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.secret)
        .map_err(|_| "the TSIG secret is unusable".to_owned())?;
    mac.update(&message);
    mac.update(&key_name);
    mac.update(&CLASS_ANY.to_be_bytes());
    mac.update(&0u32.to_be_bytes());
    mac.update(&algorithm);
    mac.update(time);
    mac.update(&FUDGE.to_be_bytes());
    mac.update(&0u16.to_be_bytes()); // error
    mac.update(&0u16.to_be_bytes()); // other length
    let mac = mac.finalize().into_bytes();
    let id = [message[0], message[1]];
    message.extend(&key_name);
    message.extend(TYPE_TSIG.to_be_bytes());
    message.extend(CLASS_ANY.to_be_bytes());
    message.extend(0u32.to_be_bytes());
    let mut rdata = algorithm;
    rdata.extend(time);
    rdata.extend(FUDGE.to_be_bytes());
    rdata.extend((mac.len() as u16).to_be_bytes());
    rdata.extend(mac.as_slice());
    rdata.extend(id);
    rdata.extend(0u16.to_be_bytes()); // error
    rdata.extend(0u16.to_be_bytes()); // other length
    message.extend((rdata.len() as u16).to_be_bytes());
    message.extend(rdata);
    let additional = u16::from_be_bytes([message[10], message[11]]) + 1;
    message[10..12].copy_from_slice(&additional.to_be_bytes());
    Ok(message)
}

/// One answer record of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A TXT record's strings, joined.
    Txt(String),
    /// An NS record's server name.
    Ns(String),
    /// An A or AAAA record.
    Address(IpAddr),
    /// Any other type.
    Other,
}

/// A parsed response: its id, response code, and the records of its answer and additional
/// sections (additional records carry the addresses of name servers, "glue").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) id: u16,
    pub(crate) rcode: u8,
    pub(crate) answers: Vec<(String, Answer)>,
    pub(crate) additional: Vec<(String, Answer)>,
}

/// The name of a response code, for errors.
pub(crate) fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => "an unknown code",
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or("the response is truncated")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A possibly compressed name, read from the current position.
    fn name(&mut self) -> Result<String, String> {
        let (name, end) = read_name(self.bytes, self.at)?;
        self.at = end;
        Ok(name)
    }
}

/// The name at `at`, following compression pointers (at most 32), and where it ends.
fn read_name(bytes: &[u8], mut at: usize) -> Result<(String, usize), String> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *bytes.get(at).ok_or("a name runs past the response")? as usize;
        match len {
            0 => {
                let name = labels.join(".");
                return Ok((name, end.unwrap_or(at + 1)));
            }
            l if l & 0xC0 == 0xC0 => {
                let low = *bytes.get(at + 1).ok_or("a name runs past the response")? as usize;
                end.get_or_insert(at + 2);
                at = ((l & 0x3F) << 8) | low;
            }
            l if l <= 63 => {
                let label = bytes
                    .get(at + 1..at + 1 + l)
                    .ok_or("a name runs past the response")?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                at += 1 + l;
            }
            _ => return Err("a name has a reserved label type".into()),
        }
    }
    Err("a name has too many labels or pointers".into())
}

/// Parses a response (without its TCP length prefix).
pub(crate) fn parse_response(bytes: &[u8]) -> Result<Response, String> {
    let mut r = Reader { bytes, at: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
    for _ in 0..counts[0] {
        r.name()?;
        r.take(4)?;
    }
    let mut sections = [Vec::new(), Vec::new(), Vec::new()];
    for (section, &count) in sections.iter_mut().zip(&counts[1..]) {
        for _ in 0..count {
            let owner = r.name()?;
            let kind = r.u16()?;
            r.take(6)?; // class, TTL
            let len = r.u16()? as usize;
            let start = r.at;
            let rdata = r.take(len)?;
            let answer = match kind {
                TYPE_TXT => {
                    let mut text = String::new();
                    let mut at = 0;
                    while at < rdata.len() {
                        let n = rdata[at] as usize;
                        let part = rdata.get(at + 1..at + 1 + n).ok_or("a TXT string is cut")?;
                        text.push_str(&String::from_utf8_lossy(part));
                        at += 1 + n;
                    }
                    Answer::Txt(text)
                }
                TYPE_NS => Answer::Ns(read_name(bytes, start)?.0),
                TYPE_A if len == 4 => {
                    Answer::Address(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]]))
                }
                TYPE_AAAA if len == 16 => {
                    let octets: [u8; 16] = rdata.try_into().map_err(|_| "bad AAAA")?;
                    Answer::Address(IpAddr::from(octets))
                }
                _ => Answer::Other,
            };
            section.push((owner, answer));
        }
    }
    let [answers, _authority, additional] = sections;
    Ok(Response {
        id,
        rcode: (flags & 0x0F) as u8,
        answers,
        additional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TsigKey {
        TsigKey {
            name: "certloop".into(),
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        }
    }

    #[test]
    fn a_signed_update_carries_one_zone_one_change_and_a_tsig_record() {
        let record = TxtRecord {
            zone: "example.test",
            name: "_acme-challenge.example.test",
            value: "abc",
        };
        let add = txt_update(7, record, TxtChange::Add, &key(), 1_800_000_000).unwrap();
        assert_eq!(&add[..2], &7u16.to_be_bytes());
        assert_eq!(add[2] >> 3 & 0x0F, 5, "opcode UPDATE");
        assert_eq!(&add[4..12], &[0, 1, 0, 0, 0, 1, 0, 1], "zone, update, TSIG");
        let text = String::from_utf8_lossy(&add);
        assert!(text.contains("hmac-sha256") && text.contains("certloop"));
        // The secret never appears, and a different time gives a different MAC.
        assert!(!add.windows(16).any(|w| w == &key().secret[..16]));
        let later = txt_update(7, record, TxtChange::Add, &key(), 1_800_000_001).unwrap();
        assert_ne!(add[add.len() - 40..], later[later.len() - 40..]);
        let delete = txt_update(8, record, TxtChange::Delete, &key(), 1_800_000_000).unwrap();
        assert!(delete.windows(2).any(|w| w == CLASS_NONE.to_be_bytes()));
        assert!(format!("{:?}", key()).contains("[redacted]"));
        assert!(query(1, "a..b", TYPE_TXT).is_err());
    }

    #[test]
    fn responses_are_read_with_compressed_names() {
        // A response to a TXT query with one answer whose owner points at the question.
        let mut msg = Vec::new();
        header(&mut msg, 9, 0x8400, [1, 1, 0, 1]);
        encode_name(&mut msg, "_acme-challenge.example.test").unwrap();
        msg.extend(TYPE_TXT.to_be_bytes());
        msg.extend(CLASS_IN.to_be_bytes());
        msg.extend([0xC0, 12]);
        msg.extend(TYPE_TXT.to_be_bytes());
        msg.extend(CLASS_IN.to_be_bytes());
        msg.extend(60u32.to_be_bytes());
        msg.extend(6u16.to_be_bytes());
        msg.extend([2, b'h', b'i', 2, b'y', b'o']);
        // Glue: ns1.example.test A 127.0.0.1, its name partly compressed.
        msg.extend([3, b'n', b's', b'1', 0xC0, 28]);
        msg.extend(TYPE_A.to_be_bytes());
        msg.extend(CLASS_IN.to_be_bytes());
        msg.extend(60u32.to_be_bytes());
        msg.extend(4u16.to_be_bytes());
        msg.extend([127, 0, 0, 1]);
        let response = parse_response(&msg).unwrap();
        assert_eq!((response.id, response.rcode), (9, 0));
        assert_eq!(
            response.answers,
            [(
                "_acme-challenge.example.test".to_owned(),
                Answer::Txt("hiyo".into())
            )]
        );
        assert_eq!(
            response.additional,
            [(
                "ns1.example.test".to_owned(),
                Answer::Address("127.0.0.1".parse().unwrap())
            )]
        );
        assert!(parse_response(&msg[..msg.len() - 3]).is_err());
        // A pointer loop is an error, not a hang.
        let mut looped = Vec::new();
        header(&mut looped, 1, 0, [1, 0, 0, 0]);
        looped.extend([0xC0, 12]);
        assert!(parse_response(&looped).is_err());
        assert_eq!(rcode_name(5), "REFUSED");
    }
}
