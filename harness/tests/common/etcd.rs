//! A throwaway etcd for the HA tests: Debian's `etcd` binary (the test command installs
//! `etcd-server`) on free loopback ports with a temporary data directory, killed when dropped.

// Child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd.
pub(crate) struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub(crate) endpoint: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd {
    /// Starts etcd and waits until it answers; panics (naming the fix) if `etcd` is missing:
    /// a test that needs it must not pass without it.
    pub(crate) fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args([
                "--name",
                "test",
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("test={peer_url}"),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd ({e}): install it with `apt-get install etcd-server` (./scripts/test-all.sh does)")
            });
        let etcd = Etcd {
            child,
            _dir: dir,
            endpoint,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
