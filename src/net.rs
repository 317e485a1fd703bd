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
//! A listener with an [`Admission`] serves at most `max_connections` connections at once
//! (one more is closed as soon as it is accepted, and counted) and, with TLS, has each
//! connection complete its handshake within [`HANDSHAKE_TIMEOUT`]; ALPN then picks HTTP/2
//! or HTTP/1.1. The admission is read per connection, so a reload changes it without
//! re-binding. HTTP/1 connections must send a request's headers within 30 s, which also
//! closes keep-alive connections idle for that long; HTTP/2 connections are pinged every
//! 30 s and closed when a ping goes unanswered for 20 s.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which connections a listener serves; a reload swaps its settings in place.
pub struct Admission {
    /// The TLS acceptor; `None` serves plaintext.
    pub tls: parking_lot::RwLock<Option<TlsAcceptor>>,
    /// Connections served at once.
    pub max_connections: AtomicUsize,
    /// Counts a connection refused for a reason (`connection_limit`, `tls_handshake`).
    pub on_refused: Box<dyn Fn(&'static str) + Send + Sync>,
}

/// One of a listener's `max_connections`, held while its connection is served.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot if fewer than `max` are taken.
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(Arc::clone(open)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
    /// Serves `handler` on `listener` until [`Server::stop`], admitting connections as
    /// `admission` says (all, in plaintext, without one).
    pub fn spawn<H, F>(
        listener: TcpListener,
        admission: Option<Arc<Admission>>,
        handler: H,
    ) -> Server
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let socket = listener.as_fd().try_clone_to_owned().ok();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, admission, Arc::new(handler), stopped));
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

/// The HTTP/1.1 + HTTP/2 connection builder with the timeouts described above.
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

async fn accept_loop<H, F>(
    listener: TcpListener,
    admission: Option<Arc<Admission>>,
    handler: Arc<H>,
    mut stopped: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(connection_builder());
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let slot = match &admission {
                    Some(a) => match Slot::take(&open, a.max_connections.load(Ordering::Relaxed)) {
                        Some(slot) => Some(slot),
                        None => {
                            (a.on_refused)("connection_limit");
                            continue;
                        }
                    },
                    None => None,
                };
                let _ = stream.set_nodelay(true);
                let connection = Connection {
                    builder: Arc::clone(&builder),
                    watcher: graceful.watcher(),
                    handler: Arc::clone(&handler),
                    _slot: slot,
                };
                match admission.as_ref().and_then(|a| Some((a.tls.read().clone()?, Arc::clone(a)))) {
                    Some((acceptor, admission)) => {
                        tokio::spawn(connection.serve_tls(stream, acceptor, admission));
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
    /// Freed when the connection ends.
    _slot: Option<Slot>,
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
        let Connection {
            builder,
            watcher,
            handler,
            _slot,
        } = self;
        let service = hyper::service::service_fn(move |req| {
            let response = handler(req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let _ = watcher.watch(connection).await;
    }

    async fn serve_tls(self, stream: TcpStream, acceptor: TlsAcceptor, admission: Arc<Admission>) {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                (admission.on_refused)("tls_handshake");
            }
            Err(_) => (admission.on_refused)("tls_handshake"),
        }
    }
}
