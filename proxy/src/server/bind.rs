use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, TcpListener};

/// Binds one listening socket per worker on `addr`, all with SO_REUSEPORT, so that the kernel
/// spreads new connections across workers and no worker shares an accept queue. With port 0
/// the first socket picks the port and the others join it.
pub fn bind_reuseport(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(workers);
    let mut at = addr;
    for _ in 0..workers.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_tcp_nodelay(true)?;
        s.set_nonblocking(true)?;
        s.bind(&at.into())?;
        s.listen(1024)?;
        let l: TcpListener = s.into();
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}
