//! What a key may do beyond its permissions, checked after its credential is verified: where it may
//! be used from (`allowed_cidrs`) and how often (`rate_limit`). Both travel in the [`Principal`], so
//! the same checks run wherever a request is admitted: apikeys' Authenticate and its own auth layer,
//! and every consumer's auth layer, on cache hits too.
//!
//! The order of checks is fixed: the key's state (deleted, disabled, locked, expired: one uniform
//! UNAUTHENTICATED, by the authenticator), then the network ([`check_source`], PERMISSION_DENIED
//! `SOURCE_NOT_ALLOWED`), then the permissions (PERMISSION_DENIED `MISSING_PERMISSIONS`), then the
//! rate ([`RateLimiter::check`], RESOURCE_EXHAUSTED `RATE_LIMITED` with `RetryInfo`). A request that
//! fails a check does not count against the rate.

use std::{
    collections::HashMap,
    fmt,
    hash::BuildHasher as _,
    net::IpAddr,
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::Request;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::{Error, Result, pb::Principal};

/// The client address the auth layer admitted a request from (`None`: unknown), in the request
/// extensions next to the [`Principal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

/// Most networks one key may list.
pub const MAX_CIDRS: usize = 100;

/// An IPv4 or IPv6 network in CIDR notation, without host bits (`10.0.0.0/8`, `2001:db8::/32`); a
/// bare address is a network of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// The bits of `addr` as a 128-bit number with the width of its family.
fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

/// The mask of the first `prefix` bits of a `width`-bit number.
fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 { 0 } else { (u128::MAX << (128 - u32::from(prefix))) >> (128 - u32::from(width)) }
}

impl Cidr {
    /// Whether `addr` lies in this network. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, how a
    /// dual-stack socket reports IPv4 clients) is its IPv4 address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (addr, width) = bits(addr.to_canonical());
        let (network, network_width) = bits(self.network);
        width == network_width && addr & mask(self.prefix, width) == network
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr =
            address.parse().map_err(|_| format!("{text:?} is not an IPv4 or IPv6 network like 10.0.0.0/8"))?;
        let network = network.to_canonical();
        let (value, width) = bits(network);
        let prefix = match prefix {
            None => width,
            // Digits only, without leading zeros: one spelling per network.
            Some(p) => Some(p)
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()) && (p.len() == 1 || !p.starts_with('0')))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={width}"))?,
        };
        if value & !mask(prefix, width) != 0 {
            let masked = value & mask(prefix, width);
            let network = match network {
                IpAddr::V4(_) => IpAddr::from(u32::try_from(masked).unwrap_or_default().to_be_bytes()),
                IpAddr::V6(_) => IpAddr::from(masked.to_be_bytes()),
            };
            return Err(format!("{text:?} has host bits set; the network is {network}/{prefix}"));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Checks `client` against the networks a principal may be used from (`allowed`, CIDR text as the
/// server stores it); an empty list allows every address.
///
/// # Errors
/// PERMISSION_DENIED (`SOURCE_NOT_ALLOWED`) if the list is not empty and `client` is unknown or in
/// none of its networks. The credential was right, so this tells the caller nothing new.
pub fn check_source(allowed: &[String], client: Option<IpAddr>) -> Result<()> {
    if allowed.is_empty() {
        return Ok(());
    }
    let inside = client.is_some_and(|client| {
        allowed.iter().filter_map(|text| text.parse::<Cidr>().ok()).any(|cidr| cidr.contains(client))
    });
    if inside { Ok(()) } else { Err(Error::SourceNotAllowed) }
}

/// Which `X-Forwarded-For` entries a service believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// Proxies in front of the service that each append the address they saw; 0: the header is
    /// ignored and the TCP peer is the client.
    pub hops: usize,
    /// The networks those proxies connect from; a request whose TCP peer is elsewhere did not come
    /// through them, so its header is ignored and its peer is the client. Empty: any peer.
    pub proxies: Vec<Cidr>,
}

/// The address of the client that sent `request`: the TCP peer (also under TLS), or, when the
/// service sits behind `forwarding.hops` proxies that each append to `X-Forwarded-For` and the
/// peer is one of `forwarding.proxies`, the entry that many hops from the header's right end (what
/// the outermost trusted proxy saw). A header with fewer entries than that, or an unparsable
/// entry, gives no address (a restricted key is then refused).
pub fn client_address<B>(request: &Request<B>, forwarding: &Forwarding) -> Option<IpAddr> {
    let peer = peer_address(request);
    let through_proxy = forwarding.proxies.is_empty()
        || peer.is_some_and(|peer| forwarding.proxies.iter().any(|cidr| cidr.contains(peer)));
    if forwarding.hops == 0 || !through_proxy {
        return peer;
    }
    let trusted_proxies = forwarding.hops;
    // Every X-Forwarded-For line, in order, is one list.
    let mut entries = Vec::new();
    for value in request.headers().get_all("x-forwarded-for") {
        entries.extend(value.to_str().ok()?.split(',').map(str::trim));
    }
    let entry = entries.len().checked_sub(trusted_proxies).and_then(|at| entries.get(at))?;
    entry.parse::<IpAddr>().ok().map(|addr| addr.to_canonical())
}

/// The TCP peer address of a request served by tonic, over TCP or TLS.
pub fn peer_address<B>(request: &Request<B>) -> Option<IpAddr> {
    let extensions = request.extensions();
    let tcp = extensions
        .get::<TcpConnectInfo>()
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().map(TlsConnectInfo::get_ref));
    tcp.and_then(TcpConnectInfo::remote_addr).map(|addr| addr.ip().to_canonical())
}

/// Shards of the limiter's table, each behind its own lock.
const SHARDS: usize = 16;

/// Keys tracked per shard before idle ones are dropped.
const SHARD_CAPACITY: usize = 4096;

/// Per-key rate limits, in memory: each key's `rate_limit` (`requests` per `window`, in bursts of
/// at most `requests`) is enforced with GCRA, one timestamp per key. The state is this process's:
/// with N processes enforcing (replicas, consumers), a key may make up to N times its limit in all.
#[derive(Debug)]
pub struct RateLimiter {
    epoch: Instant,
    shards: Vec<Mutex<HashMap<[u8; 16], u64>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl RateLimiter {
    /// Counts one request of `principal` now if its rate limit allows it (the clock is read only
    /// for keys with a limit).
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED (`RATE_LIMITED`) with the time after which a request will be allowed
    /// (`RetryInfo`); the refused request does not count.
    pub fn check(&self, principal: &Principal) -> Result<()> {
        if principal.rate_limit.is_none() {
            return Ok(());
        }
        self.check_at(principal, Instant::now())
    }

    /// [`RateLimiter::check`] at `now`.
    ///
    /// # Errors
    /// As [`RateLimiter::check`].
    pub fn check_at(&self, principal: &Principal, now: Instant) -> Result<()> {
        let Some(limit) = principal.rate_limit.as_ref() else { return Ok(()) };
        let window = limit.window.as_ref().map_or(0, |w| {
            u64::try_from(w.seconds)
                .unwrap_or(0)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(w.nanos).unwrap_or(0))
        });
        let Ok(requests) = u64::try_from(limit.requests) else { return Ok(()) };
        if requests == 0 || window == 0 {
            return Ok(());
        }
        // A limited principal without a key ID cannot be counted: refuse rather than let it through.
        let Ok(id) = uuid::Uuid::parse_str(&principal.key_id) else {
            return Err(Error::RateLimited(Duration::from_secs(1)));
        };
        let interval = (window / requests).max(1);
        let tolerance = window.saturating_sub(interval);
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let shard = &self.shards[usize::try_from(self.hasher.hash_one(id.as_bytes())).unwrap_or(0) % SHARDS];
        let mut table = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let arrival = table.get(id.as_bytes()).copied().unwrap_or(now).max(now);
        if arrival - now > tolerance {
            let wait = arrival - now - tolerance;
            return Err(Error::RateLimited(Duration::from_nanos(wait)));
        }
        if table.len() >= SHARD_CAPACITY && !table.contains_key(id.as_bytes()) {
            // A key whose next arrival has passed is as good as new: forget it.
            table.retain(|_, next| *next > now);
        }
        table.insert(*id.as_bytes(), arrival.saturating_add(interval));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_print_and_contain() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("192.168.1.7").to_string(), "192.168.1.7/32");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("::ffff:10.0.0.0/8").to_string(), "10.0.0.0/8", "IPv4-mapped is IPv4");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        let inside = |net: &str, addr: &str| cidr(net).contains(addr.parse().unwrap());
        assert!(inside("10.0.0.0/8", "10.255.1.2"));
        assert!(!inside("10.0.0.0/8", "11.0.0.1"));
        assert!(inside("10.0.0.0/8", "::ffff:10.1.2.3"), "a dual-stack socket's IPv4 client");
        assert!(inside("2001:db8::/32", "2001:db8:ffff::1"));
        assert!(!inside("2001:db8::/32", "2001:db9::1"));
        assert!(!inside("0.0.0.0/0", "::1"), "families never mix");
        assert!(inside("::/0", "::1"));
        assert!(inside("192.168.1.7", "192.168.1.7") && !inside("192.168.1.7", "192.168.1.8"));
    }

    #[test]
    fn malformed_networks_say_what_is_wrong() {
        let error = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
        assert!(error.contains("host bits") && error.contains("10.0.0.0/8"), "{error}");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "host/8",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_list_allows_all_and_an_unknown_client_is_refused_by_any_other() {
        assert!(check_source(&[], None).is_ok());
        let allowed = vec!["10.0.0.0/8".to_owned()];
        assert!(check_source(&allowed, Some("10.1.1.1".parse().unwrap())).is_ok());
        assert!(matches!(check_source(&allowed, Some("8.8.8.8".parse().unwrap())), Err(Error::SourceNotAllowed)));
        assert!(matches!(check_source(&allowed, None), Err(Error::SourceNotAllowed)));
    }

    #[test]
    fn forwarded_for_is_read_only_as_far_as_proxies_are_trusted() {
        let request = |values: &[&str]| {
            let mut builder = Request::builder();
            for value in values {
                builder = builder.header("x-forwarded-for", *value);
            }
            builder.body(()).unwrap()
        };
        let hops = |hops: usize| Forwarding { hops, proxies: Vec::new() };
        let spoofed = request(&["6.6.6.6, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(client_address(&spoofed, &hops(1)), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(client_address(&spoofed, &hops(2)), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(client_address(&spoofed, &hops(4)), None, "fewer entries than trusted hops");
        assert_eq!(client_address(&request(&["junk"]), &hops(1)), None);
        assert_eq!(client_address(&request(&[]), &hops(0)), None, "no connection info outside tonic");
        // Only from the proxies' networks: without a peer in them, the header is not read.
        let only = Forwarding { hops: 1, proxies: vec!["10.0.0.0/8".parse().unwrap()] };
        assert_eq!(client_address(&spoofed, &only), None, "the peer (none here) is the client");
    }

    #[test]
    fn rates_allow_a_burst_then_one_per_interval_and_say_when_to_retry() {
        let principal = pb::Principal {
            key_id: uuid::Uuid::new_v4().to_string(),
            rate_limit: Some(pb::RateLimit {
                requests: 3,
                window: Some(prost_types::Duration { seconds: 3, nanos: 0 }),
            }),
            ..Default::default()
        };
        let limiter = RateLimiter::default();
        let start = Instant::now();
        for _ in 0..3 {
            limiter.check_at(&principal, start).unwrap();
        }
        match limiter.check_at(&principal, start) {
            Err(Error::RateLimited(wait)) => {
                assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        limiter.check_at(&principal, start + Duration::from_secs(1)).expect("one more after an interval");
        assert!(limiter.check_at(&principal, start + Duration::from_secs(1)).is_err());
        // Other keys and unlimited keys are not affected.
        let other = pb::Principal { key_id: uuid::Uuid::new_v4().to_string(), ..principal.clone() };
        limiter.check_at(&other, start).unwrap();
        let unlimited = pb::Principal { rate_limit: None, ..principal };
        for _ in 0..100 {
            limiter.check_at(&unlimited, start).unwrap();
        }
    }
}
