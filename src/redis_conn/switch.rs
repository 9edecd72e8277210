//! Following `+switch-master` announcements. Every Sentinel is watched, one
//! task each that reconnects on failure: only the Sentinel that led the
//! failover announces at once, the others up to ~2 s later (when its hello
//! messages reach them), and a node listening to a late one would keep
//! using the demoted master while the others moved on, its marks echoing
//! where no other node's confirmations go. Each announcement carries the
//! new address; the owner keeps the last one (a later Sentinel repeating it
//! is no new switch) and uses it as a discovery hint.
//!
//! This module owns the watching and the parsing; what a switch means for
//! connections is the connector's business.

use std::time::Duration;

use futures_util::StreamExt;
use redis::RedisError;

use super::sentinel::Sentinel;

/// How long one Sentinel may take to accept the subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait between attempts on a Sentinel that fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A master's new address, as a `+switch-master` announcement names it.
pub(crate) type MasterAddress = (String, u16);

/// Reads `<name> <old ip> <old port> <new ip> <new port>`: the new address
/// when it is about `master`. Anything else, malformed included, is `None`
/// (the text comes from the network).
pub(crate) fn parse_switch(text: &str, master: &str) -> Option<MasterAddress> {
    let mut parts = text.split_whitespace();
    let name = parts.next()?;
    let (_old_ip, _old_port) = (parts.next()?, parts.next()?);
    let (ip, port) = (parts.next()?, parts.next()?);
    if name != master || parts.next().is_some() {
        return None;
    }
    Some((ip.to_owned(), port.parse().ok()?))
}

/// Listens to one Sentinel's `+switch-master` channel.
pub struct SwitchWatcher {
    sentinel: Sentinel,
    index: usize,
    master: String,
}

impl SwitchWatcher {
    /// A watcher of Sentinel number `index` (for logs) for `master`.
    pub(super) fn new(sentinel: Sentinel, index: usize, master: &str) -> SwitchWatcher {
        SwitchWatcher {
            sentinel,
            index,
            master: master.to_owned(),
        }
    }

    /// Calls `switched` with the new address on each announced switch of
    /// our master (repeats included: the owner tells them apart); runs
    /// while `alive`, reconnecting when the Sentinel fails.
    pub async fn run(
        self,
        alive: impl Fn() -> bool + Send + 'static,
        switched: impl Fn(MasterAddress) + Send + 'static,
    ) {
        let mut backoff = Duration::from_millis(100);
        while alive() {
            let subscribe = self.sentinel.connect(|client| async move {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe("+switch-master").await?;
                Ok::<_, RedisError>(pubsub)
            });
            let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe).await;
            if let Ok(Ok(pubsub)) = subscribed {
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                while alive() {
                    // Wake now and then to notice an owner that is gone.
                    let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
                    match next {
                        Err(_) => continue,
                        Ok(None) => break,
                        Ok(Some(message)) => {
                            let text: String = message.get_payload().unwrap_or_default();
                            match parse_switch(&text, &self.master) {
                                Some(address) => switched(address),
                                None => tracing::debug!(
                                    sentinel = self.index,
                                    "ignoring a +switch-master announcement not for our master"
                                ),
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_names_the_new_address() {
        assert_eq!(
            parse_switch("mymaster 127.0.0.1 6380 127.0.0.1 6381", "mymaster"),
            Some(("127.0.0.1".into(), 6381))
        );
        assert_eq!(
            parse_switch("mymaster ::1 6380 ::1 6381", "mymaster"),
            Some(("::1".into(), 6381))
        );
    }

    #[test]
    fn other_masters_and_malformed_text_are_ignored() {
        let master = "mymaster";
        for text in [
            "other 127.0.0.1 6380 127.0.0.1 6381",
            "mymaster 127.0.0.1 6380 127.0.0.1",
            "mymaster 127.0.0.1 6380 127.0.0.1 port",
            "mymaster 127.0.0.1 6380 127.0.0.1 70000",
            "mymaster 127.0.0.1 6380 127.0.0.1 6381 extra",
            "",
            "   ",
            "mymaster",
        ] {
            assert_eq!(parse_switch(text, master), None, "{text:?}");
        }
    }
}
