//! A real SMTP server for tests: Debian's `python3-aiosmtpd` (`python3 -m aiosmtpd -n -l
//! 127.0.0.1:<port>`), which prints every message it accepts to its standard output. The
//! messages are parsed back ([`ReceivedMail`]) so tests can check headers and the decoded body.
//!
//! A missing module fails the test, or, when `KCI_ALLOW_MISSING` names `smtp`, is recorded as a
//! skip (see [`super::peers::Peer::missing`]); `scripts/test` installs `python3-aiosmtpd`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::peers::{PeerProcess, SMTP, free_port};

/// Debian's Python, which has the `python3-aiosmtpd` package (not a pyenv one on `PATH`).
pub const PYTHON: &str = "/usr/bin/python3";

fn has_aiosmtpd() -> bool {
    Path::new(PYTHON).exists()
        && Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A running `aiosmtpd` on a free loopback port; dropping it stops it.
#[derive(Debug)]
pub struct SmtpServer {
    peer: PeerProcess,
}

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The top-level headers, unfolded, in order (aiosmtpd adds `X-Peer`).
    pub headers: Vec<(String, String)>,
    /// The raw body (after the header block), lines joined with `\n`.
    pub raw_body: String,
    /// The first `text/plain` part (or the whole body when not multipart), decoded from
    /// quoted-printable when so encoded.
    pub text: String,
    /// That part's headers.
    pub part_headers: Vec<(String, String)>,
}

impl ReceivedMail {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The first header of the text part named `name` (case-insensitive).
    pub fn part_header(&self, name: &str) -> Option<&str> {
        find_header(&self.part_headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl SmtpServer {
    /// Starts the server. `None` when aiosmtpd is missing and `KCI_ALLOW_MISSING` names
    /// `smtp` (see [`Peer::missing`](super::peers::Peer::missing)); a failure otherwise.
    pub fn start() -> Option<SmtpServer> {
        SMTP.require(has_aiosmtpd())?;
        let port = free_port();
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temporary directory for aiosmtpd: {e}"),
        };
        let mut cmd = Command::new(PYTHON);
        // -u: unbuffered, so each message is in the log as soon as it is accepted.
        cmd.args([
            "-u",
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
        ]);
        match PeerProcess::spawn("aiosmtpd", cmd, port, dir) {
            Ok(peer) => Some(SmtpServer { peer }),
            Err(e) => panic!("aiosmtpd did not start: {e}"),
        }
    }

    /// Starts a server that requires `AUTH` (PLAIN or LOGIN) with `user` and `password`, over
    /// plain SMTP (a small aiosmtpd controller script); it prints `AUTH <mechanism> ok` or
    /// `AUTH <mechanism> refused` for each attempt, then each message as [`SmtpServer::start`]
    /// does.
    pub fn start_with_auth(user: &str, password: &str) -> Option<SmtpServer> {
        SMTP.require(has_aiosmtpd())?;
        let port = free_port();
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temporary directory for aiosmtpd: {e}"),
        };
        let script = dir.path().join("auth_smtpd.py");
        if let Err(e) = std::fs::write(&script, AUTH_SCRIPT) {
            panic!("writing {}: {e}", script.display());
        }
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u")
            .arg(&script)
            .args([&port.to_string(), user, password]);
        match PeerProcess::spawn("aiosmtpd (auth)", cmd, port, dir) {
            Ok(peer) => Some(SmtpServer { peer }),
            Err(e) => panic!("aiosmtpd did not start: {e}"),
        }
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.peer.port
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        self.peer.log()
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        parse_log(&self.log())
    }

    /// Waits up to `timeout` until at least `n` messages arrived, and returns them all.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() >= deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

const AUTH_SCRIPT: &str = r#"
import sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Debugging
from aiosmtpd.smtp import AuthResult, LoginPassword

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == user
          and auth_data.password.decode() == password)
    print("AUTH", mechanism, "ok" if ok else "refused", flush=True)
    return AuthResult(success=ok)

controller = Controller(Debugging(sys.stdout), hostname="127.0.0.1", port=port,
                        authenticator=authenticator, auth_required=True,
                        auth_require_tls=False)
controller.start()
while True:
    time.sleep(3600)
"#;

const BEGIN: &str = "---------- MESSAGE FOLLOWS ----------";
const END: &str = "------------ END MESSAGE ------------";

/// Parses aiosmtpd's `Debugging` output into messages.
pub fn parse_log(log: &str) -> Vec<ReceivedMail> {
    let mut out = Vec::new();
    let mut rest = log;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let Some(end) = after.find(END) else { break };
        let block = after[..end].trim_start_matches(['\r', '\n']);
        let mut lines: Vec<&str> = block.lines().collect();
        // "mail options: [...]" and a blank line come first when the client sent options.
        if lines
            .first()
            .is_some_and(|l| l.starts_with("mail options:"))
        {
            lines.remove(0);
            if lines.first().is_some_and(|l| l.is_empty()) {
                lines.remove(0);
            }
        }
        out.push(parse_message(&lines));
        rest = &after[end + END.len()..];
    }
    out
}

fn split_headers<'s, 'a>(lines: &'s [&'a str]) -> (Vec<(String, String)>, &'s [&'a str]) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() && !lines[i].is_empty() {
        let line = lines[i];
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim_start().to_owned()));
        }
        i += 1;
    }
    let body = if i < lines.len() {
        &lines[i + 1..]
    } else {
        &[]
    };
    (headers, body)
}

fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn parse_message(lines: &[&str]) -> ReceivedMail {
    let (headers, body) = split_headers(lines);
    let raw_body = body.join("\n");
    let ctype = find_header(&headers, "Content-Type").unwrap_or("text/plain");
    let (part_headers, part_body): (Vec<(String, String)>, Vec<&str>) =
        match boundary(ctype).filter(|_| ctype.to_ascii_lowercase().starts_with("multipart/")) {
            Some(b) => {
                let open = format!("--{b}");
                let mut parts: Vec<Vec<&str>> = Vec::new();
                let mut current: Option<Vec<&str>> = None;
                for line in body {
                    if line.starts_with(&open) {
                        if let Some(p) = current.take() {
                            parts.push(p);
                        }
                        if line.trim_end() == format!("{open}--") {
                            break;
                        }
                        current = Some(Vec::new());
                    } else if let Some(p) = current.as_mut() {
                        p.push(line);
                    }
                }
                let first_text = parts.iter().map(|p| split_headers(p)).find(|(h, _)| {
                    find_header(h, "Content-Type")
                        .is_none_or(|t| t.to_ascii_lowercase().starts_with("text/plain"))
                });
                match first_text {
                    Some((h, b)) => (h, b.to_vec()),
                    None => (Vec::new(), Vec::new()),
                }
            }
            None => (Vec::new(), body.to_vec()),
        };
    let encoding = find_header(&part_headers, "Content-Transfer-Encoding")
        .or_else(|| find_header(&headers, "Content-Transfer-Encoding"))
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let joined = part_body.join("\n");
    let text = if encoding == "quoted-printable" {
        decode_quoted_printable(&joined)
    } else {
        joined
    };
    ReceivedMail {
        headers,
        raw_body,
        text,
        part_headers,
    }
}

/// Decodes quoted-printable text (soft line breaks `=\n`, `=XX` escapes).
pub fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if let Some(hex) = bytes.get(i + 1..i + 3)
                && let Ok(s) = std::str::from_utf8(hex)
                && let Ok(b) = u8::from_str_radix(s, 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_debugging_output() {
        let log = "---------- MESSAGE FOLLOWS ----------\nmail options: ['SIZE=10']\n\n\
Subject: a long\n subject\nContent-Type: multipart/mixed; boundary=\"XyZ\"\nX-Peer: ('127.0.0.1', 1)\n\n\
--XyZ\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
caf=C3=A9 and a soft=\n break\n--XyZ--\n------------ END MESSAGE ------------\n";
        let m = parse_log(log);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].header("subject"), Some("a long subject"));
        assert_eq!(m[0].text, "café and a soft break");
        assert_eq!(
            m[0].part_header("content-transfer-encoding"),
            Some("quoted-printable")
        );
    }
}
