//! A transport whose chosen channels cross a real TCP connection on 127.0.0.1, with both ends
//! in this process: the network shuffle (framing, encoding, credits) without a cluster, for
//! tests and benchmarks.

use tokio::net::{TcpListener, TcpStream};

use crate::net::{Connection, ConnectionConfig, Role};
use crate::{ChannelId, InputChannel, LocalTransport, OutputChannel, Transport, TransportError};

type RemoteFn = std::sync::Arc<dyn Fn(ChannelId) -> bool + Send + Sync>;

/// See the module docs.
pub struct TcpLoopbackTransport {
    local: LocalTransport,
    sender: Connection,
    receiver: Connection,
    remote: RemoteFn,
    attempt: u32,
}

impl std::fmt::Debug for TcpLoopbackTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLoopbackTransport")
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl TcpLoopbackTransport {
    /// Connects a loopback TCP pair. Channels for which `remote` is true go over it; the rest
    /// stay in process with `local_capacity` batches each.
    pub async fn connect(
        local_capacity: usize,
        config: ConnectionConfig,
        attempt: u32,
        remote: impl Fn(ChannelId) -> bool + Send + Sync + 'static,
        log: slog::Logger,
    ) -> Result<Self, TransportError> {
        let io = |e: std::io::Error| TransportError::Frame(format!("loopback connection: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client = client.map_err(io)?;
        let (server, _) = server.map_err(io)?;
        // Small batches follow each other closely: don't let Nagle hold them back.
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let remote: RemoteFn = std::sync::Arc::new(remote);
        Ok(TcpLoopbackTransport {
            local: LocalTransport::try_new(local_capacity)?,
            sender: Connection::start(
                client,
                config,
                Role::Sender(remote.clone()),
                log.new(slog::o!("side" => "sender")),
            ),
            receiver: Connection::start(server, config, Role::Receiver, log.new(slog::o!("side" => "receiver"))),
            remote,
            attempt,
        })
    }
}

impl Transport for TcpLoopbackTransport {
    fn output(&self, id: ChannelId) -> Result<OutputChannel, TransportError> {
        if (self.remote)(id) {
            Ok(OutputChannel::remote(id, self.sender.open_output(id, self.attempt)))
        } else {
            self.local.output(id)
        }
    }

    fn input(&self, id: ChannelId) -> Result<InputChannel, TransportError> {
        if (self.remote)(id) {
            Ok(InputChannel::remote(id, self.receiver.open_input(id, self.attempt)))
        } else {
            self.local.input(id)
        }
    }
}

impl Drop for TcpLoopbackTransport {
    fn drop(&mut self) {
        self.sender.close();
        self.receiver.close();
    }
}
