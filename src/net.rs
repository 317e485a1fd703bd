//! Listening sockets and the HTTP/1.1 + HTTP/2 (h2c) server loop every listener shares.
//!
//! A [`Server`] owns one bound socket and its accept loop; stopping it stops accepting,
//! lets in-flight requests finish (hyper's graceful shutdown) and closes idle
//! connections. Binding is separate from serving so that a reload can bind every new
//! address first and give up, with nothing changed, if one of them is taken. A
//! [`Handover`] lends the sockets of receivers a reload retires to the receivers that
//! take over their addresses (a renamed receiver keeps its port): the new receiver gets a
//! duplicate of the listening socket, so connections waiting in its backlog are kept.
//!
//! With [`ServerTls`], each accepted connection first completes a TLS handshake (within
//! [`HANDSHAKE_TIMEOUT`]); ALPN then picks HTTP/2 or HTTP/1.1. The acceptor is read per
//! connection, so a reload swaps certificates without re-binding.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS on a listener.
#[derive(Clone)]
pub struct ServerTls {
    /// The current acceptor; `None` serves plaintext. Read for every new connection.
    pub acceptor: Arc<parking_lot::RwLock<Option<TlsAcceptor>>>,
    /// Called when a handshake fails or times out (to count it).
    pub on_failure: Arc<dyn Fn() + Send + Sync>,
}

/// Response body used by every server: a full body, possibly followed by trailers.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A full response body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed_unsync()
}

/// Binds `addr` now (so errors surface before anything else changes).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = std::net::TcpListener::bind(addr)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket)
}

/// The listening sockets of receivers a reload retires, by transport and address.
#[derive(Default)]
pub struct Handover {
    tcp: HashMap<SocketAddr, OwnedFd>,
    udp: HashMap<SocketAddr, OwnedFd>,
}

impl Handover {
    /// Offers a retiring TCP listener's socket.
    pub fn offer_tcp(&mut self, addr: SocketAddr, socket: BorrowedFd<'_>) {
        if let Ok(duplicate) = socket.try_clone_to_owned() {
            self.tcp.insert(addr, duplicate);
        }
    }

    /// Offers a retiring UDP socket.
    pub fn offer_udp(&mut self, addr: SocketAddr, socket: BorrowedFd<'_>) {
        if let Ok(duplicate) = socket.try_clone_to_owned() {
            self.udp.insert(addr, duplicate);
        }
    }

    /// The TCP socket on offer at `addr`, else a new one bound there.
    pub fn tcp(&self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        let Some(offered) = self.tcp.get(&addr) else {
            return bind(addr);
        };
        let socket = std::net::TcpListener::from(offered.try_clone()?);
        socket.set_nonblocking(true)?;
        TcpListener::from_std(socket)
    }

    /// The UDP socket on offer at `addr`, else a new one bound there.
    pub fn udp(&self, addr: SocketAddr) -> std::io::Result<UdpSocket> {
        let socket = match self.udp.get(&addr) {
            Some(offered) => std::net::UdpSocket::from(offered.try_clone()?),
            None => std::net::UdpSocket::bind(addr)?,
        };
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }
}

/// A running listener.
pub struct Server {
    pub addr: SocketAddr,
    /// A duplicate of the listening socket, to offer in a [`Handover`].
    socket: Option<OwnedFd>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `handler` on `listener` until [`Server::stop`], over TLS when `tls` says so.
    pub fn spawn<H, F>(listener: TcpListener, tls: Option<ServerTls>, handler: H) -> Server
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let socket = listener.as_fd().try_clone_to_owned().ok();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, tls, Arc::new(handler), stopped));
        Server {
            addr,
            socket,
            stop,
            task,
        }
    }

    /// Offers this server's socket to the receivers a reload starts.
    pub fn offer(&self, handover: &mut Handover) {
        if let Some(socket) = &self.socket {
            handover.offer_tcp(self.addr, socket.as_fd());
        }
    }

    /// Stops accepting, waits for in-flight requests, and closes the socket.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop<H, F>(
    listener: TcpListener,
    tls: Option<ServerTls>,
    handler: Arc<H>,
    mut stopped: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let connection = Connection {
                    builder: Arc::clone(&builder),
                    watcher: graceful.watcher(),
                    handler: Arc::clone(&handler),
                };
                let tls = tls.as_ref().and_then(|t| {
                    let acceptor = t.acceptor.read().clone()?;
                    Some((acceptor, Arc::clone(&t.on_failure)))
                });
                match tls {
                    Some((acceptor, on_failure)) => {
                        tokio::spawn(connection.serve_tls(stream, acceptor, on_failure));
                    }
                    None => {
                        tokio::spawn(connection.serve(stream));
                    }
                }
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One accepted connection, watched for graceful shutdown from the moment it is accepted.
struct Connection<H> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    handler: Arc<H>,
}

impl<H, F> Connection<H>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.handler;
        let service = hyper::service::service_fn(move |req| {
            let response = handler(req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = self
            .builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let _ = self.watcher.watch(connection).await;
    }

    async fn serve_tls(
        self,
        stream: TcpStream,
        acceptor: TlsAcceptor,
        on_failure: Arc<dyn Fn() + Send + Sync>,
    ) {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                on_failure();
            }
            Err(_) => on_failure(),
        }
    }
}
