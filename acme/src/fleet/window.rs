//! An ARI renewal window (RFC 9773) one instance fetched, as the fleet shares it: which
//! certificate it is for and the window, in one Redis string that expires when the CA asked to
//! be asked again. Pure encoding rules.

use certloop_core::UnixTime;

/// The suggested renewal window of one certificate, as the CA gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SharedWindow {
    /// The ARI certificate identifier (`<AKI>.<serial>`): a window is only used for the
    /// certificate it was fetched for, not for one another instance renewed since.
    pub(crate) ari_id: String,
    pub(crate) start: UnixTime,
    pub(crate) end: UnixTime,
}

impl SharedWindow {
    /// `<ari_id> <start ms> <end ms>`.
    pub(crate) fn encode(&self) -> String {
        format!(
            "{} {} {}",
            self.ari_id,
            self.start.as_millis(),
            self.end.as_millis()
        )
    }

    /// The window in `value`, if it is one; `None` for anything else (an older format, a
    /// damaged value): the instance then asks the CA itself.
    pub(crate) fn decode(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(' ');
        let (ari_id, start, end) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || ari_id.is_empty() {
            return None;
        }
        let (start, end) = (start.parse().ok()?, end.parse().ok()?);
        (start <= end).then(|| Self {
            ari_id: ari_id.to_owned(),
            start: UnixTime::from_millis(start),
            end: UnixTime::from_millis(end),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_survives_encoding() {
        let window = SharedWindow {
            ari_id: "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".to_owned(),
            start: UnixTime::from_millis(1_700_000_000_000),
            end: UnixTime::from_millis(1_700_086_400_000),
        };
        assert_eq!(
            SharedWindow::decode(window.encode().as_bytes()),
            Some(window)
        );
    }

    #[test]
    fn anything_else_is_not_a_window() {
        for value in [
            &b""[..],
            b"id 1",
            b"id 1 2 3",
            b" 1 2",
            b"id x 2",
            b"id 3 2",
            b"\xff 1 2",
        ] {
            assert_eq!(SharedWindow::decode(value), None, "{value:?}");
        }
    }
}
