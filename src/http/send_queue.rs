//! How many bytes of ours a TCP socket still holds that the client has not
//! acknowledged (Linux `SIOCOUTQ`, i.e. `TIOCOUTQ` on a socket): the send
//! timeout's second look. The kernel's send buffer grows to MiBs, and a
//! write into it waits until a good part of it is free, so a client that
//! reads steadily but slower than the buffer drains in one send timeout
//! sees none of our writes accepted for that long. When the send timeout
//! expires, the connection task compares this count with the one taken
//! when the stall began: if it went down, the client is reading and the
//! timeout starts again. One system call per stall and per expiry, none
//! per write. Elsewhere than Linux it is unknown and the writes alone count.

use std::os::fd::{AsRawFd, RawFd};

/// The socket under a connection; valid while the connection's stream is.
#[derive(Clone, Copy, Debug)]
pub(super) struct SendQueue(RawFd);

impl SendQueue {
    pub fn of(socket: &impl AsRawFd) -> SendQueue {
        SendQueue(socket.as_raw_fd())
    }

    /// Bytes written to the socket that the client has not acknowledged
    /// (sent or not); None where unknown.
    #[cfg(target_os = "linux")]
    pub fn unacknowledged(&self) -> Option<u64> {
        let mut queued: libc::c_int = 0;
        // SAFETY: the descriptor belongs to the connection's stream, which
        // outlives every call (see `connection::serve`); the kernel writes
        // one int.
        let rc = unsafe { libc::ioctl(self.0, libc::TIOCOUTQ, &mut queued) };
        if rc == 0 { u64::try_from(queued).ok() } else { None }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn unacknowledged(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn bytes_not_read_by_the_peer_are_counted_until_it_reads_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let queue = SendQueue::of(&server);
        assert_eq!(queue.unacknowledged(), Some(0));
        server.write_all(&[7u8; 1000]).await.unwrap();
        let mut read = [0u8; 1000];
        client.read_exact(&mut read).await.unwrap();
        // Acknowledged once read (loopback acknowledges at once, but not
        // necessarily before `read_exact` returns).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while queue.unacknowledged() != Some(0) {
            assert!(std::time::Instant::now() < deadline, "{:?}", queue.unacknowledged());
            tokio::task::yield_now().await;
        }
    }
}
