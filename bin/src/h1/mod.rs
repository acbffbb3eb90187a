//! The proxy's own HTTP/1.1 path: a TLS connection that negotiated HTTP/1.1 (or nothing) is
//! served here rather than by hyper, so that a proxied request costs one parse of each head,
//! no header map, and no hand-off between tasks (the profile in `docs/performance.md` showed
//! the cost spread thin over exactly those). HTTP/2 connections have a loop of their own
//! (`crate::http2`), whose streams reach the upstream through this path's pool (`for_h2`); the
//! plain-HTTP and admin listeners stay on hyper's HTTP/1.1 server.

mod chunked;
pub(crate) mod for_h2;
mod head;
mod pool;
mod serve;

pub(crate) use head::Rewrite;
pub(crate) use pool::UpstreamPool;
pub(crate) use serve::{Http1Context, serve};
