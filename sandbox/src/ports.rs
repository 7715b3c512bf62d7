//! Free loopback ports. A port is picked by binding port 0 and releasing it; another process can
//! take it before we use it, so starters retry on a bind failure.

use std::net::TcpListener;

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
