//! `certloop status`: the certificate table in a terminal, from the running process's admin
//! endpoint when it answers, else from the cache directories on disk.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::cert_status::{CertRow, rows_on_disk, table};
use crate::config::Config;

/// How long the admin endpoint may take before the disk is read instead.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Prints the table (or JSON with `json`); exit code 0. A certificate that cannot be read
/// shows its error in the last-error column.
pub(crate) fn run(config: &Config, json: bool) -> ExitCode {
    let live = config.admin.as_ref().map(|admin| fetch_rows(admin.bind));
    let rows = match live {
        Some(Ok(rows)) => {
            eprintln!("certloop status: from the running process");
            rows
        }
        other => {
            if let Some(Err(e)) = other {
                eprintln!(
                    "certloop status: the admin endpoint did not answer ({e}); reading the cache directories"
                );
            } else {
                eprintln!("certloop status: no [admin] configured; reading the cache directories");
            }
            rows_on_disk(config, certloop_acme::adapter::system_clock())
        }
    };
    if json {
        match serde_json::to_string_pretty(&rows) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("certloop status: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print!("{}", table(&rows));
    }
    ExitCode::SUCCESS
}

/// `GET /status.json` from the admin listener.
fn fetch_rows(admin: SocketAddr) -> Result<Vec<CertRow>, String> {
    let mut tcp = TcpStream::connect_timeout(&admin, ADMIN_TIMEOUT).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(ADMIN_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(ADMIN_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    write!(
        tcp,
        "GET /status.json HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or("an incomplete HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(format!("answered {status:?}"));
    }
    serde_json::from_str(body).map_err(|e| format!("unreadable rows: {e}"))
}
