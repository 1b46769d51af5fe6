//! A `pareidolia daemon` child process for tests: started (by [`Pareidolia::start`]) with its
//! log in a file, killed when the test ends (pass or fail), polled for log lines and
//! conditions, signalled; plus a small HTTP GET.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A daemon child process and its log file.
pub struct Daemon {
    /// The process, for its id and exit status.
    pub child: Child,
    log: PathBuf,
}

/// A test that fails midway must not leave its daemon running (or a tmpfs busy).
impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    /// Spawns `command` (see [`Pareidolia::start`]) with its stderr, the log, written to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> Daemon {
        let file = std::fs::File::create(log).unwrap();
        let child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Daemon {
            child,
            log: log.to_owned(),
        }
    }

    /// Starts `command` with `--keep-serving` added, and waits until its run is over and it
    /// only serves; returns it and its URL.
    pub fn serving_after_run(
        command: Pareidolia,
        log: &Path,
        timeout: Duration,
    ) -> (Daemon, String) {
        let mut d = command.keep_serving().start(log);
        let url = d.url();
        d.wait_for("still serving", timeout);
        (d, url)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Calls `check` every `every` until it returns `Ok`, and returns that; panics, with the
    /// last `Err` (what `check` saw) and the log, if the daemon exits first or `timeout`
    /// passes.
    pub fn poll<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut check: impl FnMut(&mut Daemon) -> Result<T, String>,
    ) -> T {
        poll(what, timeout, every, || {
            let seen = match check(self) {
                Ok(value) => return Ok(value),
                Err(seen) => seen,
            };
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited ({status}) before {what}:\n{}", self.log());
            }
            Err(format!("{seen}\n--- log\n{}", self.log()))
        })
    }

    /// Polls the log until it contains `needle`; returns the log.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let what = format!("logged {needle:?}");
        self.poll(&what, timeout, Duration::from_millis(10), |d| {
            let log = d.log();
            if log.contains(needle) {
                Ok(log)
            } else {
                Err("(not in the log)".into())
            }
        })
    }

    /// The daemon's URL, once it has logged it.
    pub fn url(&mut self) -> String {
        let log = self.wait_for("http://", Duration::from_secs(10));
        let start = log.find("http://").unwrap();
        log[start..]
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .unwrap()
            .to_owned()
    }

    /// Waits until `/readyz` answers 200 (a first generation is scored); returns the URL.
    pub fn wait_ready(&mut self, timeout: Duration) -> String {
        let url = self.url();
        let readyz = format!("{url}/readyz");
        self.poll("ready", timeout, Duration::from_millis(20), |_| {
            match get(&readyz) {
                (200, _) => Ok(()),
                (code, body) => Err(format!("/readyz: {code} {body}")),
            }
        });
        url
    }

    /// Sends `signal` (`"TERM"`, `"KILL"`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the daemon to exit; returns its status and log. Kills it and panics after
    /// `timeout`.
    pub fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("daemon did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The generation a daemon's `/status` at `url` reports, if it answers.
pub fn served_generation(url: &str) -> Option<u64> {
    match get_json(&format!("{url}/status")) {
        (200, status) => status["generation"].as_u64(),
        _ => None,
    }
}

/// GET a URL whose body is JSON (a body that is not JSON comes back as a JSON string).
pub fn get_json(url: &str) -> (u16, serde_json::Value) {
    let (code, body) = get(url);
    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (code, value)
}

/// GET `url`: status code and body (curl when present).
pub fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output();
    let out = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(_) => return http_get(url),
    };
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A minimal HTTP/1.0 GET for machines without curl.
fn http_get(url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        code,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}
