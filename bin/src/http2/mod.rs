//! The proxy's own HTTP/2 server loop: a TLS connection that negotiated `h2` is served by the
//! `h2` crate's connection, driven together with all of its streams in the connection's one
//! task. hyper's HTTP/2 server spawns a task per stream; the profile in
//! `docs/performance.md` showed that hand-off (the stream's future copied into its task, a
//! wake across tasks for every frame) as the largest cost left. Here the streams that can
//! make progress do so first, and what they queue goes out in the connection's next write.
//! Requests reach the upstream through the HTTP/1.1 path's pool (`h1::for_h2`).

mod batched_writes;
mod request_body;
mod respond;
mod serve;

pub(crate) use request_body::RequestBody;
pub(crate) use serve::{Http2Context, ProxiedHttp2};
