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
//! A listener with an [`Admission`] serves at most `max_connections` connections at once,
//! and at most `max_connections_per_source` from one source address (one more is closed
//! as soon as it is accepted, and counted as `connection_limit` or `source_limit`), so
//! one address holding stalled connections cannot take every slot. With TLS, each
//! connection completes its handshake within [`HANDSHAKE_TIMEOUT`]; ALPN then picks
//! HTTP/2 or HTTP/1.1. A new connection must send its first request within
//! `read_header_timeout` (either protocol; counted as `header_timeout`), and an HTTP/1
//! connection must send each request's headers within it, which also closes keep-alive
//! connections idle for that long; HTTP/2 connections carry at most
//! `max_concurrent_streams` requests at once, are pinged every 30 s and closed when a
//! ping goes unanswered for 20 s. The admission is read per connection, so a reload
//! changes it without re-binding.

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
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
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
    pub limits: parking_lot::RwLock<Limits>,
    /// Counts a connection refused for a reason (`connection_limit`, `source_limit`,
    /// `tls_handshake`, `header_timeout`).
    pub on_refused: Box<dyn Fn(&'static str) + Send + Sync>,
}

/// A listener's bounds on connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one source address.
    pub max_connections_per_source: usize,
    /// Time a connection has for its first request, and an HTTP/1 request for its headers.
    pub read_header_timeout: Duration,
    /// Requests at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
}

/// Connections open, in all and by source address.
#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A connection's place among a listener's open connections, held while it is served.
struct Slot {
    open: Arc<parking_lot::Mutex<Open>>,
    source: IpAddr,
}

impl Slot {
    /// A slot if the limits leave room, else the reason for refusing.
    fn take(
        open: &Arc<parking_lot::Mutex<Open>>,
        source: IpAddr,
        limits: &Limits,
    ) -> Result<Slot, &'static str> {
        let mut state = open.lock();
        if state.total >= limits.max_connections {
            return Err("connection_limit");
        }
        let from_source = state.by_source.entry(source).or_default();
        if *from_source >= limits.max_connections_per_source {
            return Err("source_limit");
        }
        *from_source += 1;
        state.total += 1;
        Ok(Slot {
            open: Arc::clone(open),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.open.lock();
        state.total -= 1;
        if let Some(n) = state.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                state.by_source.remove(&self.source);
            }
        }
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

/// Bounds of a listener without an [`Admission`] (self-telemetry): no connection cap.
const UNLIMITED: Limits = Limits {
    max_connections: usize::MAX,
    max_connections_per_source: usize::MAX,
    read_header_timeout: Duration::from_secs(30),
    max_concurrent_streams: 200,
};

/// The HTTP/1.1 + HTTP/2 connection builder with the bounds described above.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
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
    let mut limits = UNLIMITED;
    let mut builder = Arc::new(connection_builder(&limits));
    let open = Arc::new(parking_lot::Mutex::new(Open::default()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if let Some(a) = &admission {
                    let wanted = *a.limits.read();
                    if wanted != limits {
                        limits = wanted;
                        builder = Arc::new(connection_builder(&limits));
                    }
                }
                let slot = match &admission {
                    Some(a) => match Slot::take(&open, peer.ip(), &limits) {
                        Ok(slot) => Some(slot),
                        Err(reason) => {
                            (a.on_refused)(reason);
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
                    first_request: limits.read_header_timeout,
                    admission: admission.clone(),
                    _slot: slot,
                    client: ClientAddress(peer.ip().to_canonical()),
                };
                match admission.as_ref().and_then(|a| a.tls.read().clone()) {
                    Some(acceptor) => {
                        tokio::spawn(connection.serve_tls(stream, acceptor));
                    }
                    None => {
                        tokio::spawn(connection.serve(stream, None));
                    }
                }
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Who a client certificate names (mutual TLS): its subject's common name, or the whole
/// subject when it has none. Requests of the connection carry it as an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(pub Arc<str>);

impl PeerIdentity {
    /// The identity of a DER certificate, if it parses.
    fn of(certificate: &[u8]) -> Option<PeerIdentity> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
        let subject = parsed.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok().map(str::to_string))
            .unwrap_or_else(|| subject.to_string());
        Some(PeerIdentity(name.into()))
    }
}

/// One accepted connection, watched for graceful shutdown from the moment it is accepted.
struct Connection<H> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    handler: Arc<H>,
    /// How long the connection has to send its first request.
    first_request: Duration,
    /// Counts refusals; `None` for listeners without limits.
    admission: Option<Arc<Admission>>,
    /// Freed when the connection ends.
    _slot: Option<Slot>,
    /// The client's address, which the connection's requests carry as [`ClientAddress`].
    client: ClientAddress,
}

/// The address of the client a request came from (IPv4-mapped IPv6 addresses as IPv4),
/// a request extension of every request served here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub std::net::IpAddr);

impl<H, F> Connection<H>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// Serves the connection's requests, each carrying the client certificate's
    /// identity (mutual TLS) as a request extension.
    async fn serve<S>(self, stream: S, peer: Option<PeerIdentity>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            watcher,
            handler,
            first_request,
            admission,
            _slot,
            client,
        } = self;
        let requested = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&requested);
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(client);
            if let Some(peer) = &peer {
                req.extensions_mut().insert(peer.clone());
            }
            let response = handler(req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let served = watcher.watch(connection);
        tokio::pin!(served);
        tokio::select! {
            _ = &mut served => return,
            _ = tokio::time::sleep(first_request) => {}
        }
        if requested.load(Ordering::Relaxed) {
            let _ = served.await;
        } else if let Some(admission) = admission {
            // no request in time: the connection is dropped, which closes it
            (admission.on_refused)("header_timeout");
        }
    }

    async fn serve_tls(self, stream: TcpStream, acceptor: TlsAcceptor) {
        let admission = self.admission.clone();
        let refused = |reason| {
            if let Some(a) = &admission {
                (a.on_refused)(reason);
            }
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| PeerIdentity::of(leaf));
                self.serve(stream, peer).await
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                refused("tls_handshake");
            }
            Err(_) => refused("tls_handshake"),
        }
    }
}

/// Parses a listen address (`host:port`, host may be a name such as `localhost`).
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("`{text}` is not a listen address (host:port): {e}"))?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}
