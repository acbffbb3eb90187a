//! The status page `GET /` serves: one row per certificate with its names, issuer, serial, a
//! drawn timeline of its validity (not before, renewal point, the CA's window, now, not after),
//! the next order and the last error. Server-rendered HTML with inline CSS and SVG, no scripts
//! and no external assets.

use std::fmt::Write;

use crate::cert_status::{CertRow, rfc3339};

/// The page for `rows` at `now` (Unix seconds).
pub(crate) fn render(rows: &[CertRow], now: u64) -> String {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>certloop status</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#1d232b}\
         table{border-collapse:collapse;width:100%}\
         th,td{text-align:left;padding:.5em .7em;border-bottom:1px solid #d5dae0;vertical-align:top}\
         th{background:#f1f4f7;font-weight:600}\
         code{font-size:.85em}.error{color:#b3261e}.ok{color:#1b7a35}\
         .legend span{margin-right:1.2em}.swatch{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;margin-right:.3em}\
         </style></head><body>\n<h1>certloop</h1>\n",
    );
    let _ = writeln!(
        page,
        "<p>{} certificate(s) at {}. <span class=\"legend\">\
         <span><i class=\"swatch\" style=\"background:#8fbf9f\"></i>valid</span>\
         <span><i class=\"swatch\" style=\"background:#f2c14e\"></i>CA renewal window</span>\
         <span><i class=\"swatch\" style=\"background:#2958a8\"></i>renewal point</span>\
         <span><i class=\"swatch\" style=\"background:#b3261e\"></i>now</span></span></p>",
        rows.len(),
        rfc3339(now)
    );
    page.push_str(
        "<table id=\"certificates\"><thead><tr><th>Listener</th><th>Names</th><th>Issuer</th>\
         <th>Serial</th><th>Validity</th><th>Next order</th><th>Last error</th></tr></thead><tbody>\n",
    );
    for row in rows {
        let names = escape(&row.names.join(", "));
        let or_dash = |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_owned(), escape);
        let next = match (row.ordering, row.next_order_at) {
            (true, _) => "ordering now".to_owned(),
            (false, Some(at)) => rfc3339(at),
            (false, None) => "-".to_owned(),
        };
        let error = match &row.last_error {
            Some(e) => format!(
                "<span class=\"error\">{} ({} failed)</span>",
                escape(e),
                row.failures
            ),
            None => "<span class=\"ok\">none</span>".to_owned(),
        };
        let _ = writeln!(
            page,
            "<tr class=\"cert\" data-listener=\"{listener}\"><td>{listener}</td><td>{names}</td>\
             <td>{issuer}</td><td><code>{serial}</code></td><td>{timeline}</td><td>{next}</td>\
             <td>{error}</td></tr>",
            listener = escape(&row.listener),
            issuer = or_dash(&row.issuer),
            serial = or_dash(&row.serial),
            timeline = timeline(row, now),
        );
    }
    page.push_str("</tbody></table>\n</body></html>\n");
    page
}

/// Width of the drawn timeline, in SVG units.
const WIDTH: f64 = 360.0;

/// An SVG of the validity period with the CA's window, the renewal point and now marked, and
/// the dates in words below it.
fn timeline(row: &CertRow, now: u64) -> String {
    let (Some(from), Some(until)) = (row.not_before, row.not_after) else {
        return "no certificate yet".to_owned();
    };
    // The drawn span covers the validity and now, whichever is wider.
    let (start, end) = (from.min(now), until.max(now).max(from + 1));
    let x = |t: u64| (t.clamp(start, end) - start) as f64 / (end - start) as f64 * WIDTH;
    let mut svg = format!(
        "<svg class=\"timeline\" width=\"{WIDTH}\" height=\"26\" viewBox=\"0 0 {WIDTH} 26\" \
         role=\"img\" aria-label=\"valid from {} to {}\">\
         <rect x=\"0\" y=\"8\" width=\"{WIDTH}\" height=\"10\" fill=\"#eceff3\"/>\
         <rect x=\"{:.1}\" y=\"8\" width=\"{:.1}\" height=\"10\" fill=\"#8fbf9f\"/>",
        rfc3339(from),
        rfc3339(until),
        x(from),
        x(until) - x(from),
    );
    if let Some((a, b)) = row.ari_window {
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"8\" width=\"{:.1}\" height=\"10\" fill=\"#f2c14e\"/>",
            x(a),
            (x(b) - x(a)).max(1.5)
        );
    }
    if let Some(renew) = row.renew_at {
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"4\" width=\"3\" height=\"18\" fill=\"#2958a8\"/>",
            x(renew) - 1.5
        );
    }
    let _ = write!(
        svg,
        "<rect x=\"{:.1}\" y=\"0\" width=\"2\" height=\"26\" fill=\"#b3261e\"/></svg>",
        (x(now) - 1.0).max(0.0)
    );
    let mut words = format!("{} &rarr; {}", rfc3339(from), rfc3339(until));
    if let Some(renew) = row.renew_at {
        let _ = write!(words, "<br>renews at {}", rfc3339(renew));
    }
    if let Some((a, b)) = row.ari_window {
        let _ = write!(words, "<br>CA window {} &ndash; {}", rfc3339(a), rfc3339(b));
    }
    if until <= now {
        words.push_str("<br><span class=\"error\">expired, still served</span>");
    }
    format!("{svg}<br><small>{words}</small>")
}

/// Text made safe inside HTML elements and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_certificate_is_a_row_with_its_timeline_and_markup_is_escaped() {
        let served = CertRow {
            listener: "web".to_owned(),
            names: vec!["a.test".to_owned()],
            issuer: Some("Pebble <Intermediate>".to_owned()),
            serial: Some("0ABC".to_owned()),
            not_before: Some(0),
            not_after: Some(1000),
            renew_at: Some(600),
            ari_window: Some((500, 700)),
            ..CertRow::default()
        };
        let waiting = CertRow {
            listener: "api".to_owned(),
            names: vec!["b.test".to_owned()],
            ordering: true,
            failures: 1,
            last_error: Some("CA unreachable: <refused>".to_owned()),
            ..CertRow::default()
        };
        let page = render(&[served, waiting], 250);
        assert_eq!(page.matches("<tr class=\"cert\"").count(), 2);
        assert!(page.contains("Pebble &lt;Intermediate&gt;"), "{page}");
        assert!(page.contains("CA unreachable: &lt;refused&gt; (1 failed)"));
        assert!(!page.contains("<refused>") && !page.contains("<Intermediate>"));
        assert!(page.contains("no certificate yet") && page.contains("ordering now"));
        // now at 25 % of the validity, renewal at 60 %, the window from 50 % to 70 %.
        assert!(page.contains("<rect x=\"89.0\" y=\"0\""), "{page}");
        assert!(page.contains("<rect x=\"214.5\" y=\"4\""), "{page}");
        assert!(
            page.contains("<rect x=\"180.0\" y=\"8\" width=\"72.0\""),
            "{page}"
        );
        assert!(
            !page.contains("http://") && !page.contains("<script"),
            "self-contained"
        );
    }

    #[test]
    fn an_expired_certificate_says_so_and_now_stays_on_the_drawing() {
        let expired = CertRow {
            listener: "web".to_owned(),
            not_before: Some(0),
            not_after: Some(100),
            ..CertRow::default()
        };
        let page = render(&[expired], 200);
        assert!(page.contains("expired, still served"));
        assert!(page.contains(&format!("<rect x=\"{:.1}\" y=\"0\"", WIDTH - 1.0)));
    }
}
