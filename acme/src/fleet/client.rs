//! The fleet's Redis operations: one multiplexed connection over the runtime seam's TCP (and
//! rustls for `rediss://`), reopened after any failure, and the atomic scripts that take,
//! extend and release leases and write under a fencing token.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo, Script};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::fleet::health::StorageHealth;
use crate::fleet::keys::{Keys, Message};
use crate::fleet::settings::{RedisAddress, RedisSettings, redact_url};
use crate::runtime::{Runtime, timeout};

/// How long connecting to Redis (TCP, TLS, `AUTH`, `SELECT`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a node waiting for the account's lease looks again (a certificate's waits for
/// the holder's notification instead), and the wait when Redis gives no lease time.
pub(crate) const LEASE_POLL: Duration = Duration::from_millis(250);
/// How long a node counts as alive after its last heartbeat.
pub(crate) const NODE_TTL: Duration = Duration::from_secs(3);

/// Takes the lease unless another node holds it, issuing a new fencing token. The epoch is set
/// once per Redis dataset: a Redis that lost its data starts a new one.
const ACQUIRE: &str = r"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[3], epoch)
end
local holder = redis.call('GET', KEYS[1])
if holder and string.sub(holder, 1, string.len(ARGV[1]) + 1) ~= ARGV[1] .. ' ' then
  return {0, epoch, redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch .. ':' .. token, 'PX', ARGV[2])
return {token, epoch, 0}
";

/// Extends the lease if this holder still has it.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Releases the lease if this holder still has it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Writes the hash's fields only if the token is of this dataset's epoch (else 2), no older
/// than the newest token issued for the key and no older than the token of the record it
/// replaces (else 0), then notifies. One script: nothing can come between the check and the
/// write.
const FENCED_WRITE: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return 2
end
local token = tonumber(ARGV[2])
local newest = tonumber(redis.call('GET', KEYS[1]) or '0')
if token < newest then
  return 0
end
local stored = redis.call('HMGET', KEYS[2], 'epoch', 'token')
if stored[1] == ARGV[1] and stored[2] and tonumber(stored[2]) > token then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'token', ARGV[2], 'epoch', ARGV[1], unpack(ARGV, 5))
redis.call('INCR', KEYS[4])
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
";

/// Stores a failure streak's retry state unless the stored one waits longer: an instance's
/// own shorter backoff never shortens the fleet's.
const MERGE_RETRY: &str = r"
local old = redis.call('GET', KEYS[1])
if old then
  local old_at = tonumber(string.match(old, 'next_attempt_at_ms=(%d+)') or '0')
  local new_at = tonumber(string.match(ARGV[1], 'next_attempt_at_ms=(%d+)') or '0')
  if old_at > new_at then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// Records this node as alive, forgets the expired ones and lists the live ones, on Redis's
/// own clock (the nodes' clocks need not agree).
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// A lease on one record, with the fencing token its writes carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The record's key suffix (a certificate's or an account's id).
    pub id: String,
    pub epoch: String,
    pub token: i64,
    /// The value stored under the lease key: `<node> <epoch>:<token>`.
    value: String,
}

/// What taking a lease found.
#[derive(Debug)]
pub(crate) enum Acquired {
    Held(Lease),
    /// Another node holds it, for this much longer at most.
    Busy(Duration),
}

/// What a fenced write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    /// A newer lease was issued (or a newer record written) since: refused.
    Refused,
    /// Redis lost its data since the lease was taken (a new epoch): refused.
    EpochLost,
}

/// Which version of a certificate's record is stored, without the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordVersion {
    pub epoch: String,
    pub token: i64,
    /// The certificate's end of validity, in milliseconds since the epoch.
    pub not_after_ms: u64,
    pub writer: String,
}

/// A certificate's record in Redis. `Debug` never prints the bundle (it holds the key).
#[derive(Clone)]
pub(crate) struct SharedCert {
    pub epoch: String,
    pub token: i64,
    /// The rustls-acme cache format.
    pub bundle: Vec<u8>,
    /// The directory URL of the CA that issued it.
    pub issuer: String,
}

impl std::fmt::Debug for SharedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCert")
            .field("epoch", &self.epoch)
            .field("token", &self.token)
            .field("bundle", &format_args!("[{} bytes]", self.bundle.len()))
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// A connection to Redis, plain or TLS.
pub(crate) trait Duplex:
    futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send
{
}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send> Duplex for T {}
type Stream = Box<dyn Duplex>;

/// The connection to the fleet's Redis and the operations on it.
pub(crate) struct RedisClient<R: Runtime> {
    rt: R,
    address: RedisAddress,
    settings: RedisSettings,
    tls: Option<futures_rustls::TlsConnector>,
    pub keys: Keys,
    /// This process, in leases and notifications.
    pub node: String,
    /// The URL without its user information, for messages.
    shown_url: String,
    connection: async_lock::Mutex<Option<MultiplexedConnection>>,
    /// The latest failure to connect: for [`FAIL_FAST`] after it, calls fail at once instead
    /// of each waiting for its own timeout (a launch reads Redis once per batch of
    /// certificates, and a Redis that drops packets must not hold it past its deadline).
    failed_connect: std::sync::Mutex<Option<(std::time::Instant, RedisError)>>,
    /// Whether the latest command succeeded, for the handle's status and metrics.
    pub(crate) health: Arc<StorageHealth>,
}

/// How long after a failed connection attempt calls fail without trying again.
const FAIL_FAST: Duration = Duration::from_secs(2);

/// A Redis failure, phrased for an operator (never with the password).
pub(crate) type RedisError = String;

impl<R: Runtime> RedisClient<R> {
    pub(crate) fn new(
        rt: R,
        settings: RedisSettings,
        address: RedisAddress,
        tls: Option<futures_rustls::TlsConnector>,
    ) -> Self {
        Self {
            rt,
            keys: Keys::new(&settings.key_prefix),
            node: node_id(),
            shown_url: redact_url(&settings.url),
            address,
            settings,
            tls,
            connection: async_lock::Mutex::new(None),
            failed_connect: std::sync::Mutex::new(None),
            health: Arc::default(),
        }
    }

    pub(crate) fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Where Redis is, for messages.
    pub(crate) fn url(&self) -> &str {
        &self.shown_url
    }

    fn connection_info(&self) -> RedisConnectionInfo {
        let mut info = RedisConnectionInfo::default().set_db(self.address.db);
        if let Some(user) = &self.address.username {
            info = info.set_username(user);
        }
        if let Some(password) = &self.settings.password {
            info = info.set_password(password);
        }
        info
    }

    /// A new connection through the runtime seam (TLS for `rediss://`), authenticated.
    async fn open_stream(&self) -> Result<Stream, RedisError> {
        let connect = self
            .rt
            .connect(self.address.host.clone(), self.address.port);
        let tcp = connect
            .await
            .map_err(|e| format!("cannot connect to Redis at {}: {e}", self.url()))?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(self.address.host.clone())
                    .map_err(|e| format!("{}: {e}", self.url()))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS to Redis at {} failed: {e}", self.url()))?;
                Ok(Box::new(stream))
            }
        }
    }

    /// A subscription to the fleet's channel on a connection of its own.
    pub(crate) async fn subscribe(&self) -> Result<redis::aio::PubSub, RedisError> {
        let open = async {
            let stream = self.open_stream().await?;
            let mut pubsub = redis::aio::PubSub::new(&self.connection_info(), stream.compat())
                .await
                .map_err(|e| self.failed(&e))?;
            pubsub
                .subscribe(self.keys.channel())
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(pubsub)
        };
        let started = self.rt.wall_clock();
        let subscribed = timeout(&self.rt, CONNECT_TIMEOUT, open)
            .await
            .unwrap_or_else(|| Err(format!("Redis at {} did not answer in time", self.url())));
        self.health.record(subscribed.is_ok(), started);
        subscribed
    }

    fn failed(&self, e: &redis::RedisError) -> RedisError {
        format!("Redis at {}: {e}", self.url())
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let recent = (self
            .failed_connect
            .lock()
            .unwrap_or_else(|e| e.into_inner()))
        .as_ref()
        .filter(|(at, _)| at.elapsed() < FAIL_FAST)
        .map(|(_, e)| e.clone());
        if let Some(e) = recent {
            return Err(e);
        }
        let open = async {
            let stream = self.open_stream().await?;
            let config = AsyncConnectionConfig::new().set_response_timeout(None);
            let (connection, driver) = MultiplexedConnection::new_with_config(
                &self.connection_info(),
                stream.compat(),
                config,
            )
            .await
            .map_err(|e| self.failed(&e))?;
            self.rt.spawn(Box::pin(driver));
            Ok::<_, RedisError>(connection)
        };
        let opened = timeout(&self.rt, CONNECT_TIMEOUT, open)
            .await
            .unwrap_or_else(|| Err(format!("Redis at {} did not answer in time", self.url())));
        let mut failed = self
            .failed_connect
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match opened {
            Ok(connection) => {
                *failed = None;
                *slot = Some(connection.clone());
                Ok(connection)
            }
            Err(e) => {
                *failed = Some((std::time::Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Runs one command or script; any failure drops the connection, so the next call opens a
    /// new one.
    async fn run<T, F>(
        &self,
        request: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Result<T, RedisError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let started = self.rt.wall_clock();
        // Whether Redis answered at all: an error it sent (a script error) does not make it
        // unreachable.
        let (answered, reached) = match self.connection().await {
            Err(e) => (Err(e), false),
            Ok(connection) => match timeout(&self.rt, COMMAND_TIMEOUT, request(connection)).await {
                Some(Ok(value)) => (Ok(value), true),
                failed => {
                    *self.connection.lock().await = None;
                    match failed {
                        Some(Err(e)) => {
                            let lost =
                                e.is_io_error() || e.is_connection_dropped() || e.is_timeout();
                            (Err(self.failed(&e)), !lost)
                        }
                        _ => (
                            Err(format!("Redis at {} did not answer in time", self.url())),
                            false,
                        ),
                    }
                }
            },
        };
        self.health.record(reached, started);
        answered
    }

    /// Takes the lease on `id` for [`RedisSettings::lease`], unless another node holds it.
    pub(crate) async fn acquire(&self, id: &str) -> Result<Acquired, RedisError> {
        let (lease_key, fence, epoch) =
            (self.keys.lease(id), self.keys.fence(id), self.keys.epoch());
        let (node, ms, new_epoch) = (self.node.clone(), millis(self.settings.lease), random_id());
        let (token, epoch, busy_ms): (i64, String, i64) = self
            .run(move |mut c| async move {
                Script::new(ACQUIRE)
                    .key(&lease_key)
                    .key(&fence)
                    .key(&epoch)
                    .arg(&node)
                    .arg(ms)
                    .arg(&new_epoch)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if token == 0 {
            // A lease without a TTL (-1, set by hand?) is looked at again as usual.
            let busy = u64::try_from(busy_ms).map_or(LEASE_POLL, Duration::from_millis);
            return Ok(Acquired::Busy(busy));
        }
        Ok(Acquired::Held(Lease {
            id: id.to_owned(),
            value: format!("{} {epoch}:{token}", self.node),
            epoch,
            token,
        }))
    }

    /// Extends the lease; `false` if it was lost (expired, taken over).
    pub(crate) async fn extend(&self, lease: &Lease) -> Result<bool, RedisError> {
        let (key, value, ms) = (
            self.keys.lease(&lease.id),
            lease.value.clone(),
            millis(self.settings.lease),
        );
        let extended: i64 = self
            .run(move |mut c| async move {
                Script::new(EXTEND)
                    .key(&key)
                    .arg(&value)
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(extended == 1)
    }

    /// Gives the lease up (if still held), so a waiting node need not wait for it to expire.
    pub(crate) async fn release(&self, lease: &Lease) {
        let (key, value) = (self.keys.lease(&lease.id), lease.value.clone());
        let released: Result<i64, _> = self
            .run(move |mut c| async move {
                Script::new(RELEASE)
                    .key(&key)
                    .arg(&value)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        if let Err(e) = released {
            tracing::debug!(
                "lease on {} not released (it expires by itself): {e}",
                lease.id
            );
        }
    }

    /// Writes `fields` to the hash at `key` under `lease`'s fencing token, then publishes
    /// `notify` if given.
    pub(crate) async fn fenced_write(
        &self,
        lease: &Lease,
        key: String,
        fields: Vec<(&'static str, Vec<u8>)>,
        notify: Option<Message>,
    ) -> Result<Written, RedisError> {
        let (fence, epoch, generation) = (
            self.keys.fence(&lease.id),
            self.keys.epoch(),
            self.keys.generation(),
        );
        let (channel, message) = (
            self.keys.channel(),
            notify.map(|m| m.encode()).unwrap_or_default(),
        );
        let written: i64 = self
            .run(move |mut c| async move {
                let fenced = Script::new(FENCED_WRITE);
                let mut script = fenced.prepare_invoke();
                script
                    .key(&fence)
                    .key(&key)
                    .key(&epoch)
                    .key(&generation)
                    .arg(&lease.epoch)
                    .arg(lease.token)
                    .arg(&channel)
                    .arg(&message);
                for (name, value) in &fields {
                    script.arg(*name).arg(value.as_slice());
                }
                script.invoke_async(&mut c).await
            })
            .await?;
        Ok(match written {
            1 => Written::Yes,
            2 => Written::EpochLost,
            _ => Written::Refused,
        })
    }

    /// Stores a certificate (valid until `not_after_ms`) under its lease and tells the fleet.
    pub(crate) async fn write_cert(
        &self,
        lease: &Lease,
        bundle: &[u8],
        not_after_ms: u64,
        issuer: &str,
    ) -> Result<Written, RedisError> {
        self.write_cert_announced(lease, bundle, not_after_ms, issuer, true)
            .await
    }

    /// [`Self::write_cert`], announced on the channel or not (a test's lost notification).
    pub(crate) async fn write_cert_announced(
        &self,
        lease: &Lease,
        bundle: &[u8],
        not_after_ms: u64,
        issuer: &str,
        announce: bool,
    ) -> Result<Written, RedisError> {
        let fields = vec![
            ("not_after", not_after_ms.to_string().into_bytes()),
            ("bundle", bundle.to_vec()),
            ("issuer", issuer.as_bytes().to_vec()),
            ("writer", self.node.as_bytes().to_vec()),
        ];
        let notify = announce.then(|| Message::Cert {
            node: self.node.clone(),
            id: lease.id.clone(),
        });
        self.fenced_write(lease, self.keys.cert(&lease.id), fields, notify)
            .await
    }

    /// The certificate record for `id`, if there is one.
    pub(crate) async fn cert(&self, id: &str) -> Result<Option<SharedCert>, RedisError> {
        Ok(self.certs(&[id.to_owned()]).await?.pop().flatten())
    }

    /// Which version of each certificate record for `ids` is stored, in one round trip
    /// (without the bundles).
    pub(crate) async fn versions(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<RecordVersion>>, RedisError> {
        type Fields = (Option<String>, Option<i64>, Option<u64>, Option<String>);
        let rows: Vec<Fields> = self
            .cert_fields(ids, ["epoch", "token", "not_after", "writer"])
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| match row {
                (Some(epoch), Some(token), Some(not_after_ms), writer) => Some(RecordVersion {
                    epoch,
                    token,
                    not_after_ms,
                    writer: writer.unwrap_or_default(),
                }),
                _ => None,
            })
            .collect())
    }

    /// The certificate records for `ids`, in one round trip.
    pub(crate) async fn certs(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<SharedCert>>, RedisError> {
        type Fields = (Option<String>, Option<i64>, Option<Vec<u8>>, Option<String>);
        let rows: Vec<Fields> = self
            .cert_fields(ids, ["epoch", "token", "bundle", "issuer"])
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| match row {
                (Some(epoch), Some(token), Some(bundle), issuer) => Some(SharedCert {
                    epoch,
                    token,
                    bundle,
                    issuer: issuer.unwrap_or_default(),
                }),
                _ => None,
            })
            .collect())
    }

    /// `fields` of each certificate record for `ids`, one pipelined `HMGET` each.
    async fn cert_fields<T: redis::FromRedisValue>(
        &self,
        ids: &[String],
        fields: [&'static str; 4],
    ) -> Result<Vec<T>, RedisError> {
        let keys: Vec<String> = ids.iter().map(|id| self.keys.cert(id)).collect();
        self.run(move |mut c| async move {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("HMGET").arg(key).arg(&fields[..]);
            }
            pipe.query_async(&mut c).await
        })
        .await
    }

    /// The dataset's epoch and its count of fenced writes: while both are unchanged, no
    /// record changed.
    pub(crate) async fn generation(&self) -> Result<(Option<String>, Option<i64>), RedisError> {
        let (epoch, generation) = (self.keys.epoch(), self.keys.generation());
        self.run(move |mut c| async move {
            redis::cmd("MGET")
                .arg(&epoch)
                .arg(&generation)
                .query_async(&mut c)
                .await
        })
        .await
    }

    /// The fields of the hash at `key` (empty if there is none).
    pub(crate) async fn hash(&self, key: String) -> Result<Vec<(String, Vec<u8>)>, RedisError> {
        self.run(
            move |mut c| async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await },
        )
        .await
    }

    /// Sets `key` to `value` for `ttl`, then publishes `notify` if given.
    pub(crate) async fn put_expiring(
        &self,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
        notify: Option<Message>,
    ) -> Result<(), RedisError> {
        let (channel, message) = (self.keys.channel(), notify.map(|m| m.encode()));
        // PX must be at least 1.
        let ms = millis(ttl).max(1);
        self.run(move |mut c| async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&key)
                .arg(value.as_slice())
                .arg("PX")
                .arg(ms)
                .ignore();
            if let Some(message) = &message {
                pipe.cmd("PUBLISH").arg(&channel).arg(message).ignore();
            }
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Deletes `keys`, then publishes `notify`.
    pub(crate) async fn delete_and_notify(
        &self,
        keys: Vec<String>,
        notify: Message,
    ) -> Result<(), RedisError> {
        let (channel, message) = (self.keys.channel(), notify.encode());
        self.run(move |mut c| async move {
            redis::pipe()
                .cmd("DEL")
                .arg(&keys)
                .ignore()
                .cmd("PUBLISH")
                .arg(&channel)
                .arg(&message)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Sets `key` to `value`, or deletes it (`None`).
    pub(crate) async fn set(&self, key: String, value: Option<Vec<u8>>) -> Result<(), RedisError> {
        self.run(move |mut c| async move {
            match value {
                Some(value) => {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(value.as_slice())
                        .query_async::<()>(&mut c)
                        .await
                }
                None => redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await,
            }
        })
        .await
    }

    /// Stores `state` (the cache's retry-state format) at `key` unless the stored one waits
    /// longer.
    pub(crate) async fn merge_retry(&self, key: String, state: String) -> Result<(), RedisError> {
        let _: i64 = self
            .run(move |mut c| async move {
                Script::new(MERGE_RETRY)
                    .key(&key)
                    .arg(&state)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// The value at `key`.
    pub(crate) async fn get(&self, key: String) -> Result<Option<Vec<u8>>, RedisError> {
        self.run(move |mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
            .await
    }

    /// The value at `key` and how long until it expires (`None` if it has no expiry).
    pub(crate) async fn get_expiring(
        &self,
        key: String,
    ) -> Result<Option<(Vec<u8>, Option<Duration>)>, RedisError> {
        let (value, ttl_ms): (Option<Vec<u8>>, i64) = self
            .run(move |mut c| async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        // PTTL is -1 without an expiry, -2 if the key vanished between the two.
        let ttl = u64::try_from(ttl_ms).ok().map(Duration::from_millis);
        Ok(value.map(|v| (v, ttl)))
    }

    /// Adds this node to the set at `key` (an acknowledgement), which expires after `ttl`.
    pub(crate) async fn acknowledge(&self, key: String, ttl: Duration) -> Result<(), RedisError> {
        let ms = millis(ttl);
        let node = self.node.clone();
        self.run(move |mut c| async move {
            redis::pipe()
                .cmd("SADD")
                .arg(&key)
                .arg(&node)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ms)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// The members of the set at `key`.
    pub(crate) async fn members(&self, key: String) -> Result<Vec<String>, RedisError> {
        self.run(
            move |mut c| async move { redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await },
        )
        .await
    }

    /// Records this node as alive for [`NODE_TTL`]; returns the live nodes.
    pub(crate) async fn heartbeat(&self) -> Result<Vec<String>, RedisError> {
        let (nodes, node) = (self.keys.nodes(), self.node.clone());
        let ttl = millis(NODE_TTL);
        self.run(move |mut c| async move {
            Script::new(HEARTBEAT)
                .key(&nodes)
                .arg(&node)
                .arg(ttl)
                .invoke_async(&mut c)
                .await
        })
        .await
    }
}

/// `d` in whole milliseconds (saturating), as Redis takes durations.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// 64 random bits.
pub(crate) fn random_u64() -> u64 {
    let mut random = [0u8; 8];
    let _ = crate::tls::provider().secure_random.fill(&mut random);
    u64::from_be_bytes(random)
}

/// 64 random bits, in hex.
fn random_id() -> String {
    format!("{:016x}", random_u64())
}

/// A name for this process no other will have: the host, the process id, and 64 random bits.
fn node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().replace(' ', "-"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}-{}", std::process::id(), random_id())
}

/// Connects the client for `settings`, with TLS for `rediss://` trusting `extra_roots` too.
pub(crate) fn client_for<R: Runtime>(
    rt: R,
    settings: RedisSettings,
    extra_roots: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<Arc<RedisClient<R>>, String> {
    let address = settings.check()?;
    let tls = match address.tls {
        true => Some(crate::http_client::tls_connector(extra_roots)?),
        false => None,
    };
    Ok(Arc::new(RedisClient::new(rt, settings, address, tls)))
}
