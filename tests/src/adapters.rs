//! The two runtime adapters behind the conformance suite's [`Adapter`] interface.

use std::future::Future;

use certloop_acme::example::{http1_only, serve_hello};
use certloop_acme::{AcmeConfig, AcmeHandle, StartError};

use crate::conformance::Adapter;

const PAGE: &str = "hello from the conformance suite\n";

/// certloop-tokio on a multi-threaded tokio runtime.
pub struct Tokio(tokio::runtime::Runtime);

impl Default for Tokio {
    fn default() -> Self {
        Self(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime"),
        )
    }
}

impl Adapter for Tokio {
    const NAME: &'static str = "tokio";

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.0.block_on(future)
    }

    fn launch(&self, config: AcmeConfig) -> Result<AcmeHandle, StartError> {
        self.0.block_on(certloop_tokio::launch(config))
    }

    fn serve_tls_at(&self, ip: &str, port: u16, handle: &AcmeHandle) {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let config = http1_only(&handle.server_config());
        let listener = self
            .0
            .block_on(async {
                let tcp = tokio::net::TcpListener::bind((ip, port)).await?;
                certloop_tokio::AcmeListener::with_config(tcp, handle, config)
            })
            .expect("bind TLS port");
        self.0.spawn(async move {
            while let Ok((tls, _)) = listener.accept().await {
                tokio::spawn(serve_hello(tls.compat(), PAGE));
            }
        });
    }

    fn serve_http01_at(&self, ip: &str, port: u16, handle: &AcmeHandle) {
        let listener = self
            .0
            .block_on(tokio::net::TcpListener::bind((ip, port)))
            .expect("bind HTTP port");
        self.0.spawn(certloop_tokio::serve_http01(
            listener,
            handle.http01_tokens(),
        ));
    }
}

/// certloop-smol on smol's global executor.
#[derive(Default)]
pub struct Smol;

impl Adapter for Smol {
    const NAME: &'static str = "smol";

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        smol::block_on(future)
    }

    fn launch(&self, config: AcmeConfig) -> Result<AcmeHandle, StartError> {
        smol::block_on(certloop_smol::launch(config))
    }

    fn serve_tls_at(&self, ip: &str, port: u16, handle: &AcmeHandle) {
        let config = http1_only(&handle.server_config());
        let listener = smol::block_on(async {
            let tcp = async_net::TcpListener::bind((ip, port)).await?;
            certloop_smol::AcmeListener::with_config(tcp, handle, config)
        })
        .expect("bind TLS port");
        smol::spawn(async move {
            while let Ok((tls, _)) = listener.accept().await {
                smol::spawn(serve_hello(tls, PAGE)).detach();
            }
        })
        .detach();
    }

    fn serve_http01_at(&self, ip: &str, port: u16, handle: &AcmeHandle) {
        let listener =
            smol::block_on(async_net::TcpListener::bind((ip, port))).expect("bind HTTP port");
        smol::spawn(certloop_smol::serve_http01(
            listener,
            handle.http01_tokens(),
        ))
        .detach();
    }
}

/// Another adapter's runtime with every launch in fleet mode, sharing one Redis started for
/// it: the conformance scenarios whose outcome storage must not change, run again over Redis.
pub struct InFleet<A: Adapter> {
    inner: A,
    redis: crate::redis_server::RedisServer,
}

impl<A: Adapter + Default> Default for InFleet<A> {
    fn default() -> Self {
        Self {
            inner: A::default(),
            redis: crate::redis_server::RedisServer::start(),
        }
    }
}

impl<A: Adapter> Adapter for InFleet<A> {
    const NAME: &'static str = "fleet";

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.inner.block_on(future)
    }

    fn launch(&self, config: AcmeConfig) -> Result<AcmeHandle, StartError> {
        let fleet = certloop_acme::RedisSettings::new(self.redis.url());
        self.inner.launch(config.fleet_redis(fleet))
    }

    fn serve_tls_at(&self, ip: &str, port: u16, handle: &AcmeHandle) {
        self.inner.serve_tls_at(ip, port, handle);
    }

    fn serve_http01_at(&self, ip: &str, port: u16, handle: &AcmeHandle) {
        self.inner.serve_http01_at(ip, port, handle);
    }
}
