//! The SSRF guard: host names are resolved here and only permitted addresses are handed to the
//! connector, so the addresses checked are exactly the addresses connected to.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tidings_core::net::{blocked_class, canonical};

/// The target resolved only to addresses webhooks may not reach.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {what}, which webhooks may not reach")]
pub struct BlockedTarget {
    pub host: String,
    pub what: &'static str,
}

/// The host name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {message}")]
pub struct ResolveFailed {
    pub host: String,
    pub message: String,
}

/// Resolves with the system resolver and drops blocked addresses (unless private targets are allowed).
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveFailed {
                    host: host.clone(),
                    message: e.to_string(),
                })?
                .map(|addr| SocketAddr::new(canonical(addr.ip()), addr.port()))
                .collect();
            if allow_private {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let mut first_blocked = None;
            let permitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match blocked_class(addr.ip()) {
                    None => true,
                    Some(class) => {
                        first_blocked.get_or_insert(class);
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                let what = first_blocked.map_or("no address", |class| class.describe());
                return Err(Box::new(BlockedTarget { host, what })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// Checks a URL whose host is an IP literal (the resolver is not consulted for those).
pub fn check_literal(url: &url::Url, allow_private: bool) -> Result<(), BlockedTarget> {
    if allow_private {
        return Ok(());
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    match blocked_class(ip) {
        Some(class) => Err(BlockedTarget {
            host: ip.to_string(),
            what: class.describe(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_targets_are_checked() {
        let check = |url: &str, allow: bool| {
            check_literal(&url::Url::parse(url).expect("url"), allow).is_ok()
        };
        assert!(!check("http://127.0.0.1:9/x", false));
        assert!(!check("http://[::ffff:127.0.0.1]/x", false));
        assert!(!check("http://[::ffff:a9fe:a9fe]/x", false));
        assert!(!check("http://[64:ff9b::a00:1]/x", false));
        assert!(check("http://127.0.0.1:9/x", true));
        assert!(check("https://93.184.215.14/x", false));
        assert!(check("https://example.com/x", false));
    }

    #[tokio::test]
    async fn names_resolving_to_blocked_addresses_are_refused() {
        let guarded = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().expect("name");
        let error = match guarded.resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(error) => error,
        };
        assert!(error.downcast_ref::<BlockedTarget>().is_some(), "{error}");

        let open = GuardedResolver {
            allow_private: true,
        };
        let name: Name = "localhost".parse().expect("name");
        let addrs: Vec<SocketAddr> = open.resolve(name).await.expect("resolves").collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
