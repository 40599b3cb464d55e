//! A loopback TCP relay in front of a server the tests cannot stop themselves (an external
//! MongoDB named by `KCI_MONGO_URI`): [`TcpRelay::stop`] cuts every relayed connection and
//! closes the port, as if the server had gone down; [`TcpRelay::restart`] opens the same port
//! again. Threads only, so it works with or without an async runtime.

use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::peers::free_port;

/// A relay from `127.0.0.1:<port>` to a target `host:port`.
#[derive(Debug)]
pub struct TcpRelay {
    port: u16,
    target: String,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

fn relay_one(client: TcpStream, target: &str, connections: &Mutex<Vec<TcpStream>>) {
    let Some(addr) = target.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return;
    };
    let Ok(server) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return; // the client sees its connection closed, as with a server that is down
    };
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    if let Ok(mut list) = connections.lock() {
        list.push(c3);
        list.push(s3);
    }
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        })
    };
    pipe(client, s2);
    pipe(server, c2);
}

impl TcpRelay {
    /// Starts relaying a free loopback port to `target` (`host:port`).
    pub fn start(target: &str) -> std::io::Result<TcpRelay> {
        TcpRelay::start_on(free_port(), target)
    }

    /// Starts relaying `127.0.0.1:<port>` to `target` (`host:port`).
    pub fn start_on(port: u16, target: &str) -> std::io::Result<TcpRelay> {
        let mut relay = TcpRelay {
            port,
            target: target.to_owned(),
            running: None,
        };
        relay.restart()?;
        Ok(relay)
    }

    /// The loopback port clients connect to (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The target, `host:port`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes the port and cuts every relayed connection.
    pub fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stop.store(true, Ordering::SeqCst);
        let _ = running.accept.join();
        if let Ok(mut list) = running.connections.lock() {
            for stream in list.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Opens the port again (stopping first when it runs).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let listener = TcpListener::bind(("127.0.0.1", self.port))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (stop2, connections2, target) =
            (stop.clone(), connections.clone(), self.target.clone());
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if client.set_nonblocking(false).is_ok() {
                            relay_one(client, &target, &connections2);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.running = Some(Running {
            stop,
            connections,
            accept,
        });
        Ok(())
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Bytes go both ways; a stop cuts the open connection and refuses new ones; a restart
    /// accepts again on the same port.
    #[test]
    fn relays_cuts_and_comes_back() {
        let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = echo.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            for mut stream in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let mut relay = TcpRelay::start(&target).expect("relay");
        let ping = |port: u16| -> std::io::Result<Vec<u8>> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf)?;
            Ok(buf.to_vec())
        };
        assert_eq!(ping(relay.port()).expect("through the relay"), b"ping");
        let mut open = TcpStream::connect(("127.0.0.1", relay.port())).expect("connect");
        open.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        open.write_all(b"x").expect("write");
        let mut one = [0u8; 1];
        open.read_exact(&mut one).expect("echo");
        relay.stop();
        assert!(
            matches!(open.read(&mut one), Ok(0) | Err(_)),
            "the open connection is cut"
        );
        assert!(ping(relay.port()).is_err(), "refused while stopped");
        relay.restart().expect("restart");
        assert_eq!(ping(relay.port()).expect("back"), b"ping");
    }
}
