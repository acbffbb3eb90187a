//! The proxy's own HTTP/1.1 path against raw clients: message framing (pipelining, chunked
//! bodies both ways, `Expect: 100-continue`, HEAD, HTTP/1.0), what it refuses (ambiguous
//! framing), and pooled upstream connections the upstream has closed; and HTTP/2 streams,
//! which reach the upstream through the same pool, with curl.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use std::time::Duration;

use certloop_tests::pebble::{free_port, wait_until};
use common::{Certloop, Scratch, manual_pair, peer_closed, tls_connect, upstream};

const NAME: &str = "h1.test";

type Tls = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// One response as the client saw it: the head's lines and the body (de-chunked).
struct Response {
    head: Vec<String>,
    body: Vec<u8>,
}

impl Response {
    fn status(&self) -> &str {
        self.head[0].split(' ').nth(1).unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.iter().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `reader`; `head_request` for the answer to a HEAD.
fn read_response(reader: &mut BufReader<&mut Tls>, head_request: bool) -> Response {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("response line");
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let mut response = Response {
        head,
        body: Vec::new(),
    };
    if head_request || response.status().starts_with('1') {
        return response;
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te == "chunked")
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                break;
            }
            response.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = response.header("content-length") {
        response.body = vec![0u8; length.parse().expect("length")];
        reader.read_exact(&mut response.body).expect("body");
    } else {
        reader
            .read_to_end(&mut response.body)
            .expect("body to close");
    }
    response
}

/// An upstream that answers one request per connection and then closes it, although its
/// answer does not say so: every connection the proxy keeps for later is dead when reused.
fn closing_upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    (port, accepted)
}

/// An upstream that answers before it reads a request's body: `POST /continue` gets a
/// `100 Continue` (then `continued` is set), its 4-byte body is read and answered `200 ok`;
/// anything else gets a 413 at once, its body is never read, and the connection stays open.
fn early_answering_upstream() -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let continued = Arc::new(AtomicBool::new(false));
    let flag = continued.clone();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            if head.starts_with(b"POST /continue ") {
                let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                flag.store(true, Ordering::SeqCst);
                let mut body = [0u8; 4];
                if stream.read_exact(&mut body).is_ok() {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig\n",
                );
            }
            kept.push(stream);
        }
    });
    (port, continued)
}

/// A certloop with three manual listeners: `app` in front of the test upstream, `closing` in
/// front of [`closing_upstream`], `early` in front of [`early_answering_upstream`].
struct Listeners {
    _proxy: Certloop,
    app: u16,
    closing: u16,
    /// Connections the closing upstream accepted.
    accepted: Arc<AtomicUsize>,
    early: u16,
    /// Set once the early-answering upstream has sent its `100 Continue`.
    continued: Arc<AtomicBool>,
    /// A listener whose upstream is down.
    down: u16,
    ca_pem: String,
}

fn listeners(scratch: &Scratch) -> Listeners {
    let (cert, key, ca_pem) = manual_pair(&scratch.0, "h1", NAME);
    let (closing_upstream, accepted) = closing_upstream();
    let (early_upstream, continued) = early_answering_upstream();
    let (app, closing, early, down) = (free_port(), free_port(), free_port(), free_port());
    let listener = |name: &str, port: u16, upstream: u16| {
        format!(
            "[[listeners]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\n\
             upstream = \"http://127.0.0.1:{upstream}\"\ntls_mode = \"manual\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let config = scratch.path("certloop.toml");
    let text = listener("app", app, upstream())
        + &listener("closing", closing, closing_upstream)
        + &listener("early", early, early_upstream)
        + &listener("down", down, free_port());
    std::fs::write(&config, text).expect("config");
    let mut proxy = Certloop::start(&config, &[], None);
    proxy.wait_ready();
    Listeners {
        _proxy: proxy,
        app,
        closing,
        accepted,
        early,
        continued,
        down,
        ca_pem,
    }
}

#[test]
fn http1_framing_pipelining_and_a_pool_of_closed_upstream_connections() {
    let scratch = Scratch::new("http1");
    let Listeners {
        _proxy,
        app: port,
        closing: closing_listener,
        accepted,
        early,
        continued: upstream_continued,
        down,
        ca_pem,
        ..
    } = listeners(&scratch);
    let connect = |port| tls_connect(port, NAME, &ca_pem, b"http/1.1");

    // Two requests in one write are answered in order on the same connection.
    let mut tls = connect(port);
    let pipelined = format!(
        "GET /first HTTP/1.1\r\nHost: {NAME}\r\n\r\nGET /second HTTP/1.1\r\nHost: {NAME}\r\n\r\n"
    );
    tls.write_all(pipelined.as_bytes()).expect("write");
    let mut reader = BufReader::new(&mut tls);
    let first = read_response(&mut reader, false);
    let second = read_response(&mut reader, false);
    assert!(
        first.text().starts_with("upstream saw GET /first"),
        "{}",
        first.text()
    );
    assert!(
        second.text().starts_with("upstream saw GET /second"),
        "{}",
        second.text()
    );

    // The proxy's own answer to a HEAD request has no body: the next answer on the
    // connection is read where it begins.
    let mut down_tls = connect(down);
    let both = format!(
        "HEAD /gone HTTP/1.1\r\nHost: {NAME}\r\n\r\nGET /gone HTTP/1.1\r\nHost: {NAME}\r\n\r\n"
    );
    down_tls.write_all(both.as_bytes()).expect("write");
    let mut down_reader = BufReader::new(&mut down_tls);
    let to_head = read_response(&mut down_reader, true);
    let to_get = read_response(&mut down_reader, false);
    assert_eq!(to_head.status(), "502");
    assert_eq!(to_head.header("content-length").as_deref(), Some("21"));
    assert_eq!(
        (to_get.status(), to_get.text().as_str()),
        ("502", "upstream unreachable\n")
    );

    // A chunked request body reaches the upstream whole, and the next request on the
    // connection is found after it.
    let chunked = format!(
        "POST /upload HTTP/1.1\r\nHost: {NAME}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
         GET /after-chunked HTTP/1.1\r\nHost: {NAME}\r\n\r\n"
    );
    reader
        .get_mut()
        .write_all(chunked.as_bytes())
        .expect("write");
    let upload = read_response(&mut reader, false);
    assert!(
        upload.text().contains("body-bytes: 11\n"),
        "{}",
        upload.text()
    );
    let after = read_response(&mut reader, false);
    assert!(
        after.text().starts_with("upstream saw GET /after-chunked"),
        "{}",
        after.text()
    );

    // Expect: 100-continue is answered before the client sends its body.
    let expecting = format!(
        "PUT /expect HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    );
    reader
        .get_mut()
        .write_all(expecting.as_bytes())
        .expect("write");
    let continued = read_response(&mut reader, false);
    assert_eq!(continued.status(), "100");
    reader.get_mut().write_all(b"data").expect("body");
    let put = read_response(&mut reader, false);
    assert!(put.text().contains("body-bytes: 4\n"), "{}", put.text());

    // A streamed answer without a length reaches the client chunked, and a HEAD answer
    // keeps its length without a body; the connection carries on after both.
    let drip = format!("GET /drip?ms=1&chunks=3 HTTP/1.1\r\nHost: {NAME}\r\n\r\n");
    reader.get_mut().write_all(drip.as_bytes()).expect("write");
    let dripped = read_response(&mut reader, false);
    assert_eq!(
        dripped.header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert_eq!(dripped.body, vec![b'd'; 3 * 1024]);
    let head = format!("HEAD /head HTTP/1.1\r\nHost: {NAME}\r\n\r\n");
    reader.get_mut().write_all(head.as_bytes()).expect("write");
    let headed = read_response(&mut reader, true);
    assert_eq!(headed.status(), "200");
    assert!(
        headed.header("content-length").is_some(),
        "{:?}",
        headed.head
    );
    let last = format!("GET /last HTTP/1.1\r\nHost: {NAME}\r\n\r\n");
    reader.get_mut().write_all(last.as_bytes()).expect("write");
    let last = read_response(&mut reader, false);
    assert!(
        last.text().starts_with("upstream saw GET /last"),
        "{}",
        last.text()
    );

    // HTTP/1.0 without keep-alive: one answer, then the connection closes.
    let mut tls = connect(port);
    tls.write_all(b"GET /old HTTP/1.0\r\n\r\n").expect("write");
    let mut reader = BufReader::new(&mut tls);
    let old = read_response(&mut reader, false);
    assert!(
        old.text().starts_with("upstream saw GET /old"),
        "{}",
        old.text()
    );
    assert_eq!(old.header("connection").as_deref(), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap_or(0), 0);

    // Framing two parsers could read differently is refused, and the connection closed.
    let mut tls = connect(port);
    let smuggle = format!(
        "POST /smuggle HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n"
    );
    tls.write_all(smuggle.as_bytes()).expect("write");
    let mut reader = BufReader::new(&mut tls);
    let refused = read_response(&mut reader, false);
    assert_eq!(refused.status(), "400");
    wait_until(
        "the refused connection to close",
        Duration::from_secs(5),
        || peer_closed(&reader.get_ref().sock),
    );

    // Every pooled connection to the closing upstream is dead when reused: each request
    // still gets its answer, on a new connection.
    let mut tls = connect(closing_listener);
    let mut reader = BufReader::new(&mut tls);
    for i in 0..3 {
        let request = format!("GET /{i} HTTP/1.1\r\nHost: {NAME}\r\n\r\n");
        reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("write");
        let response = read_response(&mut reader, false);
        assert_eq!((response.status(), response.text().as_str()), ("200", "ok"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    // An upstream that answers before reading the body: the client gets that answer (not a
    // 504 after upstream_timeout) while the rest of its body is still unsent, and the
    // connection closes after it.
    let mut tls = connect(early);
    let upload =
        format!("POST /upload HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 10000000\r\n\r\n");
    tls.write_all(upload.as_bytes()).expect("write");
    tls.write_all(&[b'u'; 65_536]).expect("part of the body");
    let mut reader = BufReader::new(&mut tls);
    let early_answer = read_response(&mut reader, false);
    assert_eq!(
        (early_answer.status(), early_answer.text().as_str()),
        ("413", "big\n")
    );
    assert_eq!(early_answer.header("connection").as_deref(), Some("close"));

    // An informational answer before the body is not the answer: the body still goes up.
    let mut tls = connect(early);
    let head = format!("POST /continue HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 4\r\n\r\n");
    tls.write_all(head.as_bytes()).expect("write");
    wait_until(
        "the upstream's 100 Continue",
        Duration::from_secs(5),
        || upstream_continued.load(Ordering::SeqCst),
    );
    tls.write_all(b"body").expect("body");
    let mut reader = BufReader::new(&mut tls);
    let answer = read_response(&mut reader, false);
    assert_eq!((answer.status(), answer.text().as_str()), ("200", "ok"));
}

#[test]
fn http2_streams_reach_the_upstream_through_the_same_pool() {
    let scratch = Scratch::new("http2");
    let Listeners {
        _proxy,
        app: port,
        closing: closing_listener,
        accepted,
        down,
        ca_pem,
        ..
    } = listeners(&scratch);
    let ca = scratch.path("ca.pem");
    std::fs::write(&ca, &ca_pem).expect("CA");
    let ca = ca.display().to_string();
    let curl = |port: u16, args: &[&str]| {
        let resolve = format!("{NAME}:{port}:127.0.0.1");
        let mut all = vec!["--http2", "--cacert", &ca, "--resolve", &resolve, "-sS"];
        all.extend_from_slice(args);
        let out = common::curl(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        common::stdout(&out)
    };
    let url = |port: u16, path: &str| format!("https://{NAME}:{port}{path}");

    // A body with a length, and one without (sent chunked upstream), arrive whole.
    let with_length = curl(port, &["--data-binary", "0123456789", &url(port, "/len")]);
    assert!(
        with_length.contains("upstream saw POST /len"),
        "{with_length}"
    );
    assert!(with_length.contains("body-bytes: 10\n"), "{with_length}");
    let body = scratch.path("body");
    std::fs::write(&body, vec![b'x'; 100_000]).expect("body");
    let streamed = format!("@{}", body.display());
    let piped = curl(
        port,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &streamed,
            &url(port, "/piped"),
        ],
    );
    assert!(piped.contains("body-bytes: 100000\n"), "{piped}");
    // Three times the flow-control window: the window is given back as the upstream reads.
    std::fs::write(&body, vec![b'y'; 3 << 20]).expect("body");
    let large = curl(port, &["--data-binary", &streamed, &url(port, "/large")]);
    assert!(
        large.contains(&format!("body-bytes: {}\n", 3 << 20)),
        "{large}"
    );

    // Fifty streams at once on one connection: each answer reaches its own stream.
    let paths: Vec<String> = (0..50).map(|i| url(port, &format!("/many/{i}"))).collect();
    let mut args = vec!["-Z", "--parallel-max", "50"];
    for path in &paths {
        args.extend(["-w", "%{url_effective} %{num_connects}\n", path.as_str()]);
    }
    let many = curl(port, &args);
    for i in 0..50 {
        assert!(
            many.contains(&format!("upstream saw GET /many/{i}\n")),
            "stream {i}: {many}"
        );
    }
    let connects: usize = many
        .lines()
        .filter_map(|l| l.strip_prefix(&url(port, "/many/")))
        .map(|l| {
            l.split(' ')
                .nth(1)
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(connects, 1, "one connection for the fifty streams: {many}");

    // An answer streamed without a length, a large one, and a HEAD, all on one connection.
    let dripped = curl(port, &[&url(port, "/drip?ms=1&chunks=5")]);
    assert_eq!(dripped, "d".repeat(5 * 1024));
    let big = curl(
        port,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{http_version}",
            &url(port, "/big?mb=3"),
        ],
    );
    assert_eq!(big, format!("{} 2", 3 << 20));
    let head = curl(port, &["-I", &url(port, "/head")]);
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    // The proxy's own answer to a HEAD request states its length and sends no body.
    let unreachable = curl(down, &["-I", &url(down, "/head")]);
    assert!(unreachable.starts_with("HTTP/2 502"), "{unreachable}");
    assert!(unreachable.contains("content-length: 21"), "{unreachable}");
    assert!(head.contains("\ndate: "), "{head}");

    // Every pooled connection to the closing upstream is dead when reused: the requests,
    // streamed over one HTTP/2 connection, still get their answers.
    let paths: Vec<String> = (0..3)
        .map(|i| url(closing_listener, &format!("/{i}")))
        .collect();
    let mut args = vec!["-Z", "--parallel-max", "1"];
    args.extend(paths.iter().map(String::as_str));
    assert_eq!(curl(closing_listener, &args), "okokok");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    // A stop while a large answer goes to a slow reader: all of it arrives, then certloop
    // exits. (The rule that keeps a stopped HTTP/2 connection open while answers are still
    // queued for the client is `watchdog.rs`'s; here the queue drains within the grace.)
    let mut proxy = _proxy;
    let resolve = format!("{NAME}:{port}:127.0.0.1");
    let mut slow = std::process::Command::new("curl")
        .args([
            "--http2",
            "--limit-rate",
            "2M",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-sS",
        ])
        .arg(url(port, "/big?mb=4"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let mut out = slow.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    out.read_exact(&mut first).expect("the answer has begun");
    proxy.signal("TERM");
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).expect("the rest of the answer");
    assert!(slow.wait().expect("curl").success());
    assert_eq!(1 + rest.len(), 4 << 20, "the whole answer");
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), 0);
}
