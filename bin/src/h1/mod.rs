//! The proxy's own HTTP/1.1 path: a TLS connection that negotiated HTTP/1.1 (or nothing) is
//! served here rather than by hyper, so that a proxied request costs one parse of each head,
//! no header map, and no hand-off between tasks (the profile in `docs/performance.md` showed
//! the cost spread thin over exactly those). HTTP/2 connections and the plain-HTTP listener
//! stay on hyper's servers, but HTTP/2 streams reach the upstream through this path's pool
//! (`for_h2`).

mod chunked;
pub(crate) mod for_h2;
mod head;
mod pool;
mod serve;

pub(crate) use head::Rewrite;
pub(crate) use pool::UpstreamPool;
pub(crate) use serve::{Http1Context, serve};
