//! A real HAProxy in front of server replicas: round robin over every request, no stickiness,
//! health checks; started on a free loopback port from a configuration file it writes, and
//! stopped by pid. The scale-out tests send every request through it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::peers::{HAPROXY, PeerProcess, find_program, free_port};

/// How the balancer treats its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyConfig {
    /// The replicas' loopback ports, one `server` line each.
    pub backends: Vec<u16>,
    /// The port the balancer listens on (`0`: a free one).
    pub port: u16,
    /// The port of the statistics page (`/stats`, `;csv` for numbers; `0`: a free one).
    pub stats_port: u16,
    /// How long a request may wait for its response (longer than the servers' keep-alive
    /// period, the longest a `/listen` waits).
    pub server_timeout: Duration,
}

impl HaproxyConfig {
    /// Round robin over `backends`, free ports, 60 s server timeout.
    pub fn new(backends: &[u16]) -> HaproxyConfig {
        HaproxyConfig {
            backends: backends.to_vec(),
            port: 0,
            stats_port: 0,
            server_timeout: Duration::from_secs(60),
        }
    }

    /// The configuration file: HTTP mode, `balance roundrobin` for every request (no cookie,
    /// no `stick` table, no `prefer-last-server`), health checks on `GET /latest/` twice a
    /// second, failed connections retried on another replica, and a statistics page.
    pub fn render(&self) -> String {
        let mut servers = String::new();
        for (i, port) in self.backends.iter().enumerate() {
            servers.push_str(&format!(
                "  server replica{i} 127.0.0.1:{port} check inter 500ms fall 2 rise 2\n"
            ));
        }
        format!(
            "global
  maxconn 4096

defaults
  mode http
  timeout connect 2s
  timeout client {timeout}s
  timeout server {timeout}s
  timeout http-keep-alive 10s
  # A connection refused by a dead replica is retried on another one.
  retries 3
  option redispatch

frontend kernelci_api
  bind 127.0.0.1:{port}
  default_backend kernelci_replicas

backend kernelci_replicas
  # Every request to the next replica: any request on any replica.
  balance roundrobin
  option httpchk GET /latest/
  http-check expect status 200
{servers}
frontend stats
  bind 127.0.0.1:{stats}
  stats enable
  stats uri /stats
",
            timeout = self.server_timeout.as_secs().max(1),
            port = self.port,
            stats = self.stats_port,
        )
    }
}

/// A running HAProxy. Dropping it kills the process.
#[derive(Debug)]
pub struct Haproxy {
    config: HaproxyConfig,
    process: PeerProcess,
    config_path: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy in front of `backends` (loopback ports). A missing `haproxy` fails the
    /// test, or with `KCI_ALLOW_MISSING=haproxy` is recorded as a skip and gives `None`.
    /// Panics when it is installed but does not start.
    pub fn start(backends: &[u16]) -> Option<Haproxy> {
        Haproxy::start_with(HaproxyConfig::new(backends))
    }

    /// Starts HAProxy with `config` (ports `0` are replaced by free ones).
    pub fn start_with(mut config: HaproxyConfig) -> Option<Haproxy> {
        let program = find_program("haproxy")
            .or_else(|| find_program("/usr/sbin/haproxy"))
            .or_else(|| HAPROXY.missing())?;
        if config.port == 0 {
            config.port = free_port();
        }
        if config.stats_port == 0 {
            config.stats_port = free_port();
        }
        let dir = tempfile::Builder::new()
            .prefix("haproxy-peer")
            .tempdir()
            .unwrap_or_else(|e| panic!("haproxy: temporary directory: {e}"));
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config.render())
            .unwrap_or_else(|e| panic!("haproxy: cannot write {}: {e}", config_path.display()));
        let mut command = Command::new(program);
        // -db: stay in the foreground (stopped by pid), log to stderr.
        command.arg("-db").arg("-f").arg(&config_path);
        let process = PeerProcess::spawn("haproxy", command, config.port, dir)
            .unwrap_or_else(|e| panic!("haproxy did not start: {e}"));
        Some(Haproxy {
            config,
            process,
            config_path,
        })
    }

    /// `http://127.0.0.1:<port>`, the balancer's address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.port)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &HaproxyConfig {
        &self.config
    }

    /// The configuration file's text.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    /// What HAProxy printed so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// HTTP requests each replica answered so far, by `server` name (`replica0`, ...), from
    /// the statistics page.
    pub fn requests_per_replica(&self) -> std::io::Result<Vec<(String, u64)>> {
        let csv = self.stats_csv()?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| {
            header.iter().position(|h| *h == name).ok_or_else(|| {
                std::io::Error::other(format!("haproxy statistics have no {name} column"))
            })
        };
        let (px, sv, req) = (column("pxname")?, column("svname")?, column("req_tot")?);
        let mut out = Vec::new();
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            if f.get(px) == Some(&"kernelci_replicas")
                && let Some(name) = f.get(sv).filter(|n| n.starts_with("replica"))
            {
                let n = f.get(req).and_then(|v| v.parse().ok()).unwrap_or(0);
                out.push(((*name).to_owned(), n));
            }
        }
        Ok(out)
    }

    fn stats_csv(&self) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.config.stats_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /stats;csv HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("haproxy statistics: no HTTP body"))?;
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            Ok(body.to_owned())
        }
    }
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> std::io::Result<String> {
    let bad = || std::io::Error::other("haproxy statistics: bad chunked body");
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or_else(bad)?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| bad())?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).ok_or_else(bad)?);
        body = rest
            .get(n..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or_else(bad)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_statistics_are_joined() {
        let body = "5\r\n# px,\r\n3\r\nsv\n\r\n0\r\n\r\n";
        assert_eq!(dechunk(body).unwrap(), "# px,sv\n");
        assert!(dechunk("zz\r\nab").is_err());
        assert!(dechunk("9\r\nab\r\n").is_err());
    }

    #[test]
    fn config_balances_every_request_without_stickiness() {
        let mut c = HaproxyConfig::new(&[8101, 8102]);
        c.port = 8100;
        c.stats_port = 8109;
        let text = c.render();
        assert!(text.contains("balance roundrobin"), "{text}");
        assert!(
            text.contains("server replica0 127.0.0.1:8101 check"),
            "{text}"
        );
        assert!(
            text.contains("server replica1 127.0.0.1:8102 check"),
            "{text}"
        );
        assert!(text.contains("bind 127.0.0.1:8100"), "{text}");
        for sticky in ["cookie", "stick", "prefer-last-server", "balance source"] {
            assert!(!text.contains(sticky), "no stickiness ({sticky}): {text}");
        }
    }
}
