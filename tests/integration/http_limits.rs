//! The daemon's HTTP guards on real sockets: a `Host` it does not know is refused (DNS
//! rebinding), a connection that sends half a request or nothing is closed after
//! `http.header_timeout_s`, and connections beyond `http.max_connections` evict idle ones or
//! get a 503, while SIGTERM still drains the ones held.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::daemon_process::Daemon;
use crate::util::*;

/// A daemon on a free local port with `[http]` keys added; returns it and its `host:port`.
fn daemon(dir: &Path, http: &[(&str, toml::Value)]) -> (Daemon, String) {
    let cfg = daemon_config(dir, 100_000, 1000);
    let mut table = read_toml(&cfg);
    for (key, value) in http {
        table.add(&format!("http.{key}"), value.clone());
    }
    write_toml(&cfg, &table);
    let mut d = Pareidolia::daemon()
        .config(&cfg)
        .out(&dir.join("run"))
        .start(&dir.join("log"));
    let url = d.url();
    let host = url.strip_prefix("http://").unwrap().to_owned();
    (d, host)
}

/// A connection with a generous read timeout (a test that hangs says so instead).
fn connect(host: &str) -> TcpStream {
    let s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Everything the server sends until it closes the connection; panics if it does not
/// close it within the read timeout.
fn read_until_closed(s: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    match s.read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends `GET path` with `Host: host_header` on a kept-alive connection and reads one
/// response: its status line and body, or `None` if the server closed the connection.
fn exchange(s: &mut TcpStream, path: &str, host_header: &str) -> Option<(String, String)> {
    let sent = write!(s, "GET {path} HTTP/1.1\r\nHost: {host_header}\r\n\r\n");
    if sent.is_err() {
        return None;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).ok()?;
    let status = head.lines().next().unwrap().to_owned();
    Some((status, String::from_utf8(body).unwrap()))
}

#[test]
fn unknown_hosts_are_refused_and_stalled_connections_closed() {
    let dir = temp_dir("http-hosts");
    let (d, host) = daemon(
        &dir,
        &[
            ("header_timeout_s", 1.0.into()),
            ("allowed_hosts", vec!["pareidolia.test"].into()),
        ],
    );
    let port = host.rsplit_once(':').unwrap().1;
    let (status, body) = exchange(&mut connect(&host), "/livez", &host).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, "ok\n");
    for allowed in [format!("localhost:{port}"), "pareidolia.test".to_owned()] {
        let (status, _) = exchange(&mut connect(&host), "/livez", &allowed).unwrap();
        assert!(status.contains(" 200 "), "{allowed}: {status}");
    }
    for refused in [format!("evil.example:{port}"), "127.0.0.1:1".to_owned()] {
        let (status, body) = exchange(&mut connect(&host), "/status", &refused).unwrap();
        assert!(status.contains(" 421 "), "{refused}: {status}");
        assert!(body.contains("http.allowed_hosts"), "{refused}: {body}");
    }
    // Half a request line, then nothing: closed after the header timeout, no answer.
    let mut half = connect(&host);
    half.write_all(b"GET /status HT").unwrap();
    let answer = read_until_closed(&mut half);
    assert!(!answer.contains(" 200 "), "{answer}");
    // A connection that sends nothing, and one idle after a kept-alive answer: both closed.
    read_until_closed(&mut connect(&host));
    let mut kept = connect(&host);
    exchange(&mut kept, "/livez", &host).unwrap();
    assert_eq!(read_until_closed(&mut kept), "");
    // The daemon still answers and stops cleanly.
    let (status, _) = exchange(&mut connect(&host), "/livez", &host).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    d.signal("TERM");
    let (status, log) = d.wait(Duration::from_secs(60));
    assert!(status.success(), "SIGTERM must exit 0: {status}\n{log}");
}

/// Issue 30 item 15: clients holding every place open do not lock out probes and scrapes.
/// A connection beyond `max_connections` makes the idle kept-alive ones close and is served;
/// where the places are busy (requests half sent), it is answered 503 with `Retry-After`
/// instead of a reset; SIGTERM still drains the connections held.
#[test]
fn connections_beyond_the_limit_evict_idle_ones_or_get_503_and_held_ones_drain_on_sigterm() {
    let dir = temp_dir("http-limit");
    let (d, host) = daemon(
        &dir,
        &[
            ("max_connections", 4.into()),
            ("header_timeout_s", 600.0.into()),
        ],
    );
    // Four connections, each answered once and kept alive. (A connection the test's earlier
    // requests left may still be ending, holding a place: retry until it is gone.)
    let answered = || {
        let mut s = connect(&host);
        exchange(&mut s, "/livez", &host)
            .map(|_| s)
            .ok_or_else(|| "closed without an answer".to_owned())
    };
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            poll(
                "served",
                Duration::from_secs(30),
                Duration::from_millis(100),
                answered,
            )
        })
        .collect();
    // A fifth (a liveness probe, say) is served: the idle kept-alive connections are closed
    // to make room.
    let mut probe = connect(&host);
    let (status, body) = exchange(&mut probe, "/livez", &host).expect("the probe is served");
    assert!(status.contains("200"), "{status} {body}");
    drop(probe);
    for mut s in idle {
        assert_eq!(
            read_until_closed(&mut s),
            "",
            "an idle connection is closed"
        );
    }
    // Four connections busy with a request half sent hold every place: one more is answered
    // 503 with Retry-After after a short wait, not reset.
    let busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&host);
            write!(s, "GET /livez HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // the four are accepted first
    let mut extra = connect(&host);
    write!(extra, "GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut extra);
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("Retry-After: 1"),
        "{answer}"
    );
    // SIGTERM with four busy connections open: they are closed and the daemon exits 0.
    d.signal("TERM");
    let (status, log) = d.wait(Duration::from_secs(60));
    assert!(status.success(), "SIGTERM must exit 0: {status}\n{log}");
    for mut s in busy {
        let _ = read_until_closed(&mut s);
    }
}
