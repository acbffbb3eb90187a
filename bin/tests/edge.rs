//! The edge under hostile clients, against the real binary: slow and idle connections closed
//! at their deadlines, accept errors that do not spin, connection caps, oversized heads,
//! HTTP/2 floods, forwarding headers, and signals during startup and shutdown. A normal client
//! is served throughout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use certloop_tests::pebble::{free_port, wait_until};
use certloop_tests::upstream::REQUESTS_STARTED;
use common::{
    Certloop, Scratch, curl, manual_pair, open_tunnel, peer_closed, stdout, tls_connect, upstream,
};

const NAME: &str = "edge.certloop.test";

/// A certloop with one manual TLS listener (plus `[http]`), `extra` appended to the listener
/// and `global` placed before it.
struct Edge {
    proxy: Certloop,
    tls_port: u16,
    http_port: u16,
    ca_pem: String,
    ca_path: String,
    _scratch: Scratch,
}

impl Edge {
    fn start(tag: &str, global: &str, extra: &str, wrapper: Option<&[&str]>) -> Self {
        Self::start_with(tag, global, extra, wrapper, &[])
    }

    fn start_with(
        tag: &str,
        global: &str,
        extra: &str,
        wrapper: Option<&[&str]>,
        args: &[&str],
    ) -> Self {
        let scratch = Scratch::new(tag);
        let (cert, key, ca_pem) = manual_pair(&scratch.0, "edge", NAME);
        let ca_path = scratch.path("ca.pem");
        std::fs::write(&ca_path, &ca_pem).expect("write CA");
        let (tls_port, http_port) = (free_port(), free_port());
        let config = format!(
            "{global}\n[http]\nbind = \"127.0.0.1:{http_port}\"\nhttps_port = {tls_port}\n\
             [[listeners]]\nname = \"edge\"\nbind = \"127.0.0.1:{tls_port}\"\n\
             upstream = \"http://127.0.0.1:{}\"\ntls_mode = \"manual\"\ntls_cert = \"{}\"\n\
             tls_key = \"{}\"\n{extra}\n",
            upstream(),
            cert.display(),
            key.display()
        );
        let path = scratch.path("certloop.toml");
        std::fs::write(&path, config).expect("write config");
        let mut proxy = Certloop::start(&path, args, wrapper);
        proxy.wait_ready();
        Self {
            proxy,
            tls_port,
            http_port,
            ca_pem,
            ca_path: ca_path.display().to_string(),
            _scratch: scratch,
        }
    }

    /// A GET through the proxy with curl; returns the body, or the error.
    fn get(&self, path: &str, extra: &[&str]) -> Result<String, String> {
        let resolve = format!("{NAME}:{}:127.0.0.1", self.tls_port);
        let url = format!("https://{NAME}:{}{path}", self.tls_port);
        let mut args = vec!["--cacert", &self.ca_path, "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = curl(&args);
        if out.status.success() {
            Ok(stdout(&out))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn pid(&self) -> u32 {
        self.proxy.child.id()
    }
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn ticks_per_second() -> u64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    stdout(&out).trim().parse().expect("CLK_TCK")
}

/// A hostile connection: what it does, the deadline it must be closed by, and when it opened.
struct Hostile {
    kind: &'static str,
    deadline: Duration,
    opened: Instant,
    tcp: TcpStream,
    closed_after: Option<Duration>,
}

#[test]
fn slow_and_idle_clients_are_closed_at_their_deadlines_while_others_are_served() {
    let header = Duration::from_secs(2);
    let idle = Duration::from_secs(8);
    let edge = Edge::start(
        "deadlines",
        "[limits]\ntls_handshake_timeout = \"2s\"\nrequest_header_timeout = \"2s\"\nidle_timeout = \"8s\"",
        "",
        None,
    );
    let mut hostile: Vec<Hostile> = Vec::new();
    let mut add = |kind, deadline, tcp| {
        hostile.push(Hostile {
            kind,
            deadline,
            opened: Instant::now(),
            tcp,
            closed_after: None,
        });
    };
    for _ in 0..40 {
        let tcp = TcpStream::connect(("127.0.0.1", edge.tls_port)).expect("connect");
        add("idle TCP (handshake timeout)", header, tcp);
    }
    for _ in 0..10 {
        // A record header announcing more of the ClientHello than is sent.
        let mut tcp = TcpStream::connect(("127.0.0.1", edge.tls_port)).expect("connect");
        tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            .expect("partial hello");
        add("half a handshake", header, tcp);
    }
    for _ in 0..20 {
        let mut tls = tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"http/1.1");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: edge.certloop.test\r\nX-Slow: ")
            .expect("half a head");
        add("half a head over TLS", header, tls.sock);
    }
    for _ in 0..10 {
        let tls = tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"http/1.1");
        add("idle TLS (idle timeout)", idle, tls.sock);
    }
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(("127.0.0.1", edge.http_port)).expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: edge.certloop.test\r\n")
            .expect("half a head");
        add("half a head on [http]", header, tcp);
    }
    // Heads dribbled a byte at a time: each byte must not restart the clock. HTTP/1.1, and an
    // HTTP/2 header block that keeps growing by tiny CONTINUATION frames.
    let mut dribblers: Vec<Box<dyn FnMut() + Send>> = Vec::new();
    for _ in 0..5 {
        let mut tls = tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"http/1.1");
        tls.write_all(b"GET / HTTP/1.1\r\n").expect("request line");
        let tcp = tls.sock.try_clone().expect("clone");
        add("HTTP/1.1 head dribbled", header, tcp);
        dribblers.push(Box::new(move || drop(tls.write_all(b"X"))));
    }
    for _ in 0..5 {
        let mut tls = tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"h2");
        let mut start = h2::preface();
        start.extend(h2::frame(
            h2::HEADERS,
            h2::END_STREAM,
            1,
            &h2::get_head(NAME),
        ));
        tls.write_all(&start).expect("HEADERS");
        let tcp = tls.sock.try_clone().expect("clone");
        add("HTTP/2 header block dribbled", header, tcp);
        // One CONTINUATION frame announcing 500 bytes, sent a byte at a time: h2's own limit
        // counts frames, so only the watchdog's header timer can end this.
        let payload: Vec<u8> = (0..10)
            .flat_map(|i| h2::literal_header(&format!("x-{i:02}"), &"v".repeat(43)))
            .collect();
        let frame = h2::frame(h2::CONTINUATION, 0, 1, &payload);
        tls.write_all(&frame[..9]).expect("CONTINUATION header");
        let mut rest = frame.into_iter().skip(9);
        dribblers.push(Box::new(move || {
            if let Some(byte) = rest.next() {
                drop(tls.write_all(&[byte]));
            }
        }));
    }
    let started = Instant::now();
    let mut last_dribble = Instant::now();
    let mut served_during = false;
    while started.elapsed() < idle + Duration::from_secs(8)
        && hostile.iter().any(|h| h.closed_after.is_none())
    {
        if last_dribble.elapsed() >= Duration::from_millis(400) {
            dribblers.iter_mut().for_each(|dribble| dribble());
            last_dribble = Instant::now();
        }
        if !served_during {
            // A normal client is served while all of this goes on.
            let body = edge.get("/during", &[]).expect("served during the attack");
            assert!(body.starts_with("upstream saw GET /during"), "{body}");
            served_during = true;
        }
        for h in hostile.iter_mut().filter(|h| h.closed_after.is_none()) {
            if peer_closed(&h.tcp) {
                h.closed_after = Some(h.opened.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each was closed at its own deadline: not before it, and within a few seconds after it.
    for h in &hostile {
        let closed = h
            .closed_after
            .unwrap_or_else(|| panic!("{} never closed", h.kind));
        assert!(
            closed >= h.deadline - Duration::from_millis(300)
                && closed <= h.deadline + Duration::from_secs(5),
            "{} closed after {closed:?}, deadline {:?}",
            h.kind,
            h.deadline
        );
    }
    let body = edge.get("/after", &[]).expect("served after the attack");
    assert!(body.starts_with("upstream saw GET /after"), "{body}");
}

#[test]
fn a_long_download_outlives_the_idle_timeout_but_a_reader_that_stops_does_not() {
    let edge = Edge::start_with(
        "streaming",
        "[limits]\nidle_timeout = \"2s\"",
        "",
        None,
        &["--log-level", "info,certloop=debug"],
    );
    // 6 chunks, one every 700 ms: 4.2 s of body on a connection whose idle timeout is 2 s.
    let body = edge
        .get("/drip?ms=700&chunks=6", &[])
        .expect("a long download");
    assert_eq!(body.len(), 6 * 1024, "the download was cut short");
    let body = edge
        .get("/drip?ms=700&chunks=6", &["--http2"])
        .expect("a long HTTP/2 download");
    assert_eq!(body.len(), 6 * 1024, "the HTTP/2 download was cut short");
    // A client that asks for 64 MiB and never reads is let go after 2 s without progress.
    let mut tls = tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"http/1.1");
    tls.write_all(format!("GET /big?mb=64 HTTP/1.1\r\nHost: {NAME}\r\n\r\n").as_bytes())
        .expect("request");
    wait_until(
        "the stalled reader to be let go",
        Duration::from_secs(15),
        || edge.proxy.log().contains("closing connection: Stalled"),
    );
    wait_until(
        "the stalled connection to be dropped",
        Duration::from_secs(5),
        || edge.proxy.log().contains("connection dropped"),
    );
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n @ 1..) = tls.read(&mut buf) {
        received += n;
    }
    assert!(
        received < 64 << 20,
        "the whole body arrived: {received} bytes"
    );
    let body = edge.get("/after", &[]).expect("served after");
    assert!(body.starts_with("upstream saw GET /after"), "{body}");
}

#[test]
fn running_out_of_file_descriptors_neither_spins_nor_floods_the_log() {
    // 64 descriptors: the runtime and listeners take about 20, the rest go to connections.
    let edge = Edge::start(
        "emfile",
        "[limits]\ntls_handshake_timeout = \"60s\"",
        "",
        Some(&["prlimit", "--nofile=64:64"]),
    );
    let conns: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(("127.0.0.1", edge.tls_port)).expect("connect"))
        .collect();
    wait_until(
        "accept to fail with EMFILE",
        Duration::from_secs(10),
        || edge.proxy.log().contains("accept failed"),
    );
    let (ticks, before) = (ticks_per_second(), cpu_ticks(edge.pid()));
    let measured_from = Instant::now();
    let lines_before = edge.proxy.log().lines().count();
    wait_until("three seconds of EMFILE", Duration::from_secs(5), || {
        measured_from.elapsed() >= Duration::from_secs(3)
    });
    let used = cpu_ticks(edge.pid()) - before;
    let elapsed = measured_from.elapsed().as_secs_f64();
    let cpu = used as f64 / ticks as f64 / elapsed;
    eprintln!("{:.2} % CPU while out of descriptors", cpu * 100.0);
    assert!(
        cpu < 0.05,
        "{:.1} % CPU while out of descriptors",
        cpu * 100.0
    );
    let lines = edge.proxy.log().lines().count() - lines_before;
    assert!(lines <= 5, "{lines} log lines in {elapsed:.1} s");
    // The lines that were written count what they left out.
    let suppressed: u64 = edge
        .proxy
        .log()
        .lines()
        .filter_map(|l| l.split("suppressed=").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        suppressed > 0,
        "no suppressed errors counted:\n{}",
        edge.proxy.log()
    );
    drop(conns);
    wait_until(
        "a client to be served again",
        Duration::from_secs(20),
        || edge.get("/again", &[]).is_ok(),
    );
}

#[test]
fn caps_headers_floods_and_forwarding() {
    let edge = Edge::start(
        "caps",
        "",
        "trusted_proxies = [\"127.0.0.2\"]\n[listeners.limits]\nmax_connections_per_ip = 4",
        None,
    );
    // Per-address cap: the fifth connection from 127.0.0.1 is closed at once; another address
    // is still served, and so is 127.0.0.1 once a slot is free.
    let mut held: Vec<_> = (0..4)
        .map(|_| tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"http/1.1"))
        .collect();
    let over = TcpStream::connect(("127.0.0.1", edge.tls_port)).expect("connect");
    wait_until(
        "the connection over the cap to be closed",
        Duration::from_secs(5),
        || peer_closed(&over),
    );
    let other = edge
        .get("/other-address", &["--interface", "127.0.0.2"])
        .expect("another address is served");
    assert!(
        other.starts_with("upstream saw GET /other-address"),
        "{other}"
    );
    held.pop();
    wait_until(
        "127.0.0.1 to be served again",
        Duration::from_secs(5),
        || edge.get("/freed", &[]).is_ok(),
    );
    drop(held);

    // A head over max_request_header_bytes (32 KiB) is a 431; one under it passes. (The
    // connections just dropped free their slots once the proxy has seen them close.)
    let mut connected = None;
    wait_until("a slot for 127.0.0.1", Duration::from_secs(5), || {
        connected = common::try_tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"http/1.1").ok();
        connected.is_some()
    });
    let mut tls = connected.expect("connected");
    let big = format!(
        "GET /too-big HTTP/1.1\r\nHost: {NAME}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let _ = tls.write_all(big.as_bytes());
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let status = response.lines().next().unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    let header = format!("X-Big: {}", "a".repeat(20_000));
    let body = edge.get("/under", &["-H", &header]).expect("a 20 kB head");
    assert!(body.starts_with("upstream saw GET /under"), "{body}");

    // Forwarding headers: a client's own are replaced...
    let forged = [
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "X-Real-IP: 6.6.6.6",
        "-H",
        "Forwarded: for=6.6.6.6",
        "-H",
        "X-Forwarded-Proto: http",
    ];
    let body = edge.get("/forged", &forged).expect("forged headers");
    for line in [
        "x-forwarded-for: 127.0.0.1\n",
        "x-real-ip: 127.0.0.1\n",
        "x-forwarded-proto: https\n",
        "forwarded: for=127.0.0.1;host=",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    assert!(!body.contains("6.6.6.6"), "{body}");
    // ...unless the peer is a trusted proxy, whose address is appended.
    let mut trusted = forged.to_vec();
    trusted.extend(["--interface", "127.0.0.2"]);
    let body = edge.get("/trusted", &trusted).expect("trusted peer");
    for line in [
        "x-forwarded-for: 6.6.6.6, 127.0.0.2\n",
        "x-real-ip: 6.6.6.6\n",
        "x-forwarded-proto: http\n",
        "forwarded: for=6.6.6.6, for=127.0.0.2;host=",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }

    // HTTP/2 rapid reset (CVE-2023-44487): the attacker is cut off, others are served.
    let before = REQUESTS_STARTED.load(Ordering::SeqCst);
    let mut attacker = tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"h2");
    let mut flood = h2::preface();
    for i in 0..10_000u32 {
        let stream = 2 * i + 1;
        flood.extend(h2::frame(
            h2::HEADERS,
            h2::END_STREAM | h2::END_HEADERS,
            stream,
            &h2::get_head(NAME),
        ));
        flood.extend(h2::frame(h2::RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let _ = attacker.write_all(&flood);
    let verdict = h2::read_until_goaway_or_close(&mut attacker, Duration::from_secs(10));
    assert!(verdict.is_some(), "rapid reset: the connection stayed open");
    let body = edge
        .get("/after-reset", &["--http2"])
        .expect("served after rapid reset");
    assert!(body.starts_with("upstream saw GET /after-reset"), "{body}");
    let reached = REQUESTS_STARTED.load(Ordering::SeqCst) - before;
    assert!(
        reached < 1_000,
        "{reached} of 10000 reset streams reached the upstream"
    );

    // CONTINUATION flood (CVE-2024-27316): a header block that never ends is cut off.
    let mut attacker = tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"h2");
    let mut flood = h2::preface();
    flood.extend(h2::frame(h2::HEADERS, 0, 1, &h2::get_head(NAME)));
    let filler: Vec<u8> = (0..100u32)
        .flat_map(|i| h2::literal_header(&format!("x-flood-{i}"), &"v".repeat(100)))
        .collect();
    let started = Instant::now();
    let mut closed = None;
    while started.elapsed() < Duration::from_secs(30) && closed.is_none() {
        if attacker
            .write_all(&h2::frame(h2::CONTINUATION, 0, 1, &filler))
            .is_err()
        {
            closed = Some("write failed");
            break;
        }
        closed = h2::read_until_goaway_or_close(&mut attacker, Duration::from_millis(50));
    }
    assert!(
        closed.is_some(),
        "CONTINUATION flood: the connection stayed open for 30 s"
    );
    let body = edge
        .get("/after-continuation", &["--http2"])
        .expect("served after the flood");
    assert!(
        body.starts_with("upstream saw GET /after-continuation"),
        "{body}"
    );
}

#[test]
fn sigterm_waits_for_an_upgraded_tunnel() {
    let mut edge = Edge::start(
        "tunnel",
        "shutdown_grace = \"20s\"",
        "[listeners.limits]\nmax_connections_per_ip = 1",
        None,
    );
    let mut tunnel = open_tunnel(edge.tls_port, NAME, &edge.ca_pem);
    // The tunnel still holds its connection's slot: the client's next connection is refused.
    let over = TcpStream::connect(("127.0.0.1", edge.tls_port)).expect("connect");
    wait_until(
        "a second connection to be refused",
        Duration::from_secs(5),
        || peer_closed(&over),
    );
    edge.proxy.signal("TERM");
    wait_until("shutdown to begin", Duration::from_secs(10), || {
        edge.proxy.log().contains("shutting down")
    });
    // The tunnel still carries data after the signal...
    tunnel
        .write_all(b"still here")
        .expect("write after SIGTERM");
    let mut echoed = [0u8; 10];
    tunnel.read_exact(&mut echoed).expect("echo after SIGTERM");
    assert_eq!(&echoed, b"still here");
    assert!(
        edge.proxy.child.try_wait().expect("wait").is_none(),
        "exited with a tunnel open"
    );
    // ...and once it closes, certloop exits cleanly.
    drop(tunnel);
    assert_eq!(edge.proxy.wait_exit(Duration::from_secs(15)), 0);
}

#[test]
fn signals_during_the_first_order_are_handled() {
    // A "CA" that accepts connections and never answers: the first order hangs.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let ca_port = stalled.local_addr().expect("addr").port();
    let scratch = Scratch::new("startup-signals");
    let config = format!(
        "state_dir = \"{}\"\n[[listeners]]\nname = \"first\"\nbind = \"127.0.0.1:{}\"\n\
         upstream = \"http://127.0.0.1:{}\"\ntls_mode = \"acme\"\nacme_domains = [\"first.certloop.test\"]\n\
         acme_directory = \"https://127.0.0.1:{ca_port}/dir\"\nacme_startup_timeout = \"120s\"\n",
        scratch.path("state").display(),
        free_port(),
        upstream()
    );
    let path = scratch.path("certloop.toml");
    std::fs::write(&path, config).expect("write config");
    let mut proxy = Certloop::start(&path, &[], None);
    wait_until("the first order to start", Duration::from_secs(20), || {
        proxy.log().contains("listening")
    });
    // SIGHUP is handled (not the default action, which would kill the process) ...
    proxy.signal("HUP");
    // ... and SIGTERM stops cleanly although no certificate was ever issued.
    proxy.signal("TERM");
    assert_eq!(
        proxy.wait_exit(Duration::from_secs(15)),
        0,
        "{}",
        proxy.log()
    );
    assert!(
        proxy
            .log()
            .contains("stopping before every certificate was ready"),
        "{}",
        proxy.log()
    );
    drop(stalled);
}

/// Just enough HTTP/2 framing (RFC 9113) to misbehave.
mod h2 {
    use std::io::Read;
    use std::time::{Duration, Instant};

    pub(super) const HEADERS: u8 = 0x1;
    pub(super) const RST_STREAM: u8 = 0x3;
    pub(super) const GOAWAY: u8 = 0x7;
    pub(super) const CONTINUATION: u8 = 0x9;
    pub(super) const END_STREAM: u8 = 0x1;
    pub(super) const END_HEADERS: u8 = 0x4;

    pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The client preface and an empty SETTINGS frame.
    pub(super) fn preface() -> Vec<u8> {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, &[]));
        bytes
    }

    /// HPACK for `GET https://host/` (static table entries and one literal).
    pub(super) fn get_head(host: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x87, 0x84, 0x41, host.len() as u8];
        block.extend_from_slice(host.as_bytes());
        block
    }

    /// A literal header without indexing, new name (lengths under 127).
    pub(super) fn literal_header(name: &str, value: &str) -> Vec<u8> {
        let mut b = vec![0x00, name.len() as u8];
        b.extend_from_slice(name.as_bytes());
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
        b
    }

    /// Reads frames until a GOAWAY or the end of the connection (`Some`), or `within` passes
    /// (`None`).
    pub(super) fn read_until_goaway_or_close(
        tls: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
        within: Duration,
    ) -> Option<&'static str> {
        let start = Instant::now();
        let _ = tls
            .sock
            .set_read_timeout(Some(within.min(Duration::from_millis(200))));
        let mut pending = Vec::new();
        let mut buf = [0u8; 16_384];
        while start.elapsed() < within {
            match tls.read(&mut buf) {
                Ok(0) => return Some("closed"),
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some("reset"),
            }
            while pending.len() >= 9 {
                let len = usize::from(pending[0]) << 16
                    | usize::from(pending[1]) << 8
                    | usize::from(pending[2]);
                if pending.len() < 9 + len {
                    break;
                }
                if pending[3] == GOAWAY {
                    return Some("GOAWAY");
                }
                pending.drain(..9 + len);
            }
        }
        None
    }
}

#[test]
fn sigterm_does_not_wait_for_connections_that_never_begin_a_request() {
    let mut edge = Edge::start("fresh-at-stop", "", "", None);
    // Handshakes done, nothing sent: a browser's preconnects.
    let idle: Vec<_> = (0..3)
        .map(|_| tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"http/1.1"))
        .collect();
    let idle_h2 = tls_connect(edge.tls_port, NAME, &edge.ca_pem, b"h2");
    edge.proxy.signal("TERM");
    // Well inside the 30 s grace and the 60 s idle timeout.
    assert_eq!(
        edge.proxy.wait_exit(Duration::from_secs(10)),
        0,
        "{}",
        edge.proxy.log()
    );
    assert!(
        !edge.proxy.log().contains("grace period over"),
        "{}",
        edge.proxy.log()
    );
    drop((idle, idle_h2));
}
