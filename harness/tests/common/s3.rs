//! A throwaway S3-compatible server for the tests that store checkpoints over `s3://`:
//! moto's server (`pip install 'moto[server]'`, which the test command does) on a free
//! loopback port, with one bucket, killed when dropped.

// Child processes: real time, never simulated.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running S3-compatible server with bucket `bucket`.
pub(crate) struct S3 {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) endpoint: String,
    port: u16,
}

impl S3 {
    /// Starts the server and creates `bucket`; panics (naming the fix) if `moto_server` is
    /// missing: a test that needs it must not pass without it.
    pub(crate) fn start(bucket: &str) -> S3 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server ({e}): install it with `pip install 'moto[server]'` (./scripts/test-all.sh does)")
            });
        let s3 = S3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto_server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = s3.request(&format!("PUT /{bucket} HTTP/1.1"));
        assert!(status.contains(" 200 "), "creating bucket {bucket}: {status}");
        s3
    }

    /// Sends a bodiless request and returns the status line.
    fn request(&self, line: &str) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            c,
            "{line}\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut reply = String::new();
        let _ = c.read_to_string(&mut reply);
        reply.lines().next().unwrap_or_default().to_string()
    }

    /// The environment that points the AWS SDK settings of a `sluice` process at this server.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
