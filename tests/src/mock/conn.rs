//! Connections the mock can cut.
//!
//! [`super::Fault::DropConnection`] must close the TCP connection with no response at all,
//! and dropping the [`super::MockProvider`] must end even open streams; axum gives a
//! handler no access to its socket, so every accepted stream is wrapped in a
//! [`KillableStream`] whose kill switch (a child of the server's shutdown token) reaches
//! the handler as connect info. Once killed, every read and write fails, so hyper drops the
//! connection at its next poll, and the registered waker guarantees that poll comes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A TCP listener whose connections can be killed one by one or all together.
#[derive(Debug)]
pub(crate) struct MockListener {
    inner: TcpListener,
    shutdown: CancellationToken,
}

impl MockListener {
    pub(crate) fn new(inner: TcpListener, shutdown: CancellationToken) -> MockListener {
        MockListener { inner, shutdown }
    }
}

impl Listener for MockListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (KillableStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, peer)) => {
                    // Chunks must leave as they are written, or token timing is a lie.
                    let _ = tcp.set_nodelay(true);
                    return (KillableStream::new(tcp, self.shutdown.child_token()), peer);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "mock provider: accept failed");
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that fails every operation once its token is cancelled.
pub(crate) struct KillableStream {
    tcp: TcpStream,
    kill: CancellationToken,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for KillableStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillableStream")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl KillableStream {
    fn new(tcp: TcpStream, kill: CancellationToken) -> KillableStream {
        let killed = Box::pin(kill.clone().cancelled_owned());
        KillableStream { tcp, kill, killed }
    }

    /// `Some(error)` once killed; otherwise registers the waker for the kill.
    fn check(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock: connection dropped",
            )),
            Poll::Pending => None,
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(err) = this.check(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(err) = this.check(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(err) = this.check(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(err) = this.check(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The kill switch of the connection a request arrived on.
#[derive(Clone, Debug)]
pub(crate) struct ConnKill(CancellationToken);

impl ConnKill {
    /// Close the connection now, without writing anything more.
    pub(crate) fn kill(&self) {
        self.0.cancel();
    }
}

impl Connected<IncomingStream<'_, MockListener>> for ConnKill {
    fn connect_info(stream: IncomingStream<'_, MockListener>) -> ConnKill {
        ConnKill(stream.io().kill.clone())
    }
}
