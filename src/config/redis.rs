//! Validation of the `cluster.redis_*` keys that only make sense together:
//! the mode against the URL list, the Sentinel master name, and the TLS
//! files. Checks that need the network (is this seed a cluster node?) run
//! when the backend is built, in `crate::redis_conn`.

use std::path::Path;

use super::settings::{ClusterSettings, RedisMode};

impl ClusterSettings {
    /// The Redis URLs of `redis_url`: one in `standalone` mode, a
    /// comma-separated list (Sentinels, or cluster seeds) otherwise.
    pub fn redis_urls(&self) -> Vec<String> {
        self.redis_url
            .as_ref()
            .map(|url| {
                url.expose()
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks the Redis keys; returns the offending key and why. Never
    /// quotes a URL (it may carry a password).
    pub(super) fn validate_redis(&self) -> Result<(), (&'static str, String)> {
        let urls = self.redis_urls();
        match self.redis_mode {
            RedisMode::Standalone if urls.len() > 1 => {
                return Err((
                    "cluster.redis_url",
                    "lists several URLs; set cluster.redis_mode to sentinel or cluster".into(),
                ));
            }
            RedisMode::Sentinel | RedisMode::Cluster if urls.is_empty() => {
                return Err((
                    "cluster.redis_url",
                    "must list the Sentinels or the cluster seed nodes in this cluster.redis_mode"
                        .into(),
                ));
            }
            RedisMode::Sentinel if self.redis_sentinel_master.is_none() => {
                return Err((
                    "cluster.redis_sentinel_master",
                    "is required when cluster.redis_mode = \"sentinel\"".into(),
                ));
            }
            _ => {}
        }
        for url in &urls {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err((
                    "cluster.redis_url",
                    "every URL must start with redis:// or rediss://".into(),
                ));
            }
        }
        let files = [
            ("cluster.redis_tls_ca_path", &self.redis_tls_ca_path),
            ("cluster.redis_tls_cert_path", &self.redis_tls_cert_path),
            ("cluster.redis_tls_key_path", &self.redis_tls_key_path),
        ];
        for (key, path) in files {
            if let Some(path) = path {
                readable_file(path).map_err(|reason| (key, reason))?;
            }
        }
        match (&self.redis_tls_cert_path, &self.redis_tls_key_path) {
            (Some(_), None) => Err((
                "cluster.redis_tls_key_path",
                "must be set with cluster.redis_tls_cert_path".into(),
            )),
            (None, Some(_)) => Err((
                "cluster.redis_tls_cert_path",
                "must be set with cluster.redis_tls_key_path".into(),
            )),
            _ => Ok(()),
        }
    }
}

fn readable_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => std::fs::File::open(path)
            .map(drop)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Ok(_) => Err(format!("{} is not a file", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{RedisMode, Secret, Settings};

    fn with(url: &str, mode: RedisMode) -> Settings {
        let mut s = Settings::default();
        s.cluster.redis_url = Some(Secret::new(url));
        s.cluster.redis_mode = mode;
        s
    }

    fn failing_key(s: &Settings) -> &'static str {
        s.validate().expect_err("must be refused").0
    }

    #[test]
    fn sentinel_mode_needs_a_master_name() {
        let mut s = with("redis://a:26379,redis://b:26379", RedisMode::Sentinel);
        assert_eq!(failing_key(&s), "cluster.redis_sentinel_master");
        s.cluster.redis_sentinel_master = Some("mymaster".into());
        assert!(s.validate().is_ok());
    }

    #[test]
    fn several_urls_need_a_mode_that_reads_a_list() {
        let s = with("redis://a:1,redis://b:2", RedisMode::Standalone);
        assert_eq!(failing_key(&s), "cluster.redis_url");
        assert!(with("redis://a:1,redis://b:2", RedisMode::Cluster)
            .validate()
            .is_ok());
    }

    #[test]
    fn a_bad_scheme_is_refused_without_quoting_the_url() {
        let s = with("http://user:hunter2@a:1", RedisMode::Standalone);
        let (key, reason) = s.validate().unwrap_err();
        assert_eq!(key, "cluster.redis_url");
        assert!(!reason.contains("hunter2"));
    }

    #[test]
    fn every_bad_tls_path_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ok.pem");
        std::fs::write(&file, "x").unwrap();
        let missing = dir.path().join("missing.pem");
        let mut s = with("rediss://a:1", RedisMode::Standalone);
        s.cluster.redis_tls_ca_path = Some(missing.clone());
        assert_eq!(failing_key(&s), "cluster.redis_tls_ca_path");
        s.cluster.redis_tls_ca_path = Some(dir.path().to_owned());
        assert_eq!(failing_key(&s), "cluster.redis_tls_ca_path");
        s.cluster.redis_tls_ca_path = Some(file.clone());
        s.cluster.redis_tls_cert_path = Some(missing.clone());
        s.cluster.redis_tls_key_path = Some(file.clone());
        assert_eq!(failing_key(&s), "cluster.redis_tls_cert_path");
        s.cluster.redis_tls_cert_path = Some(file.clone());
        s.cluster.redis_tls_key_path = Some(missing);
        assert_eq!(failing_key(&s), "cluster.redis_tls_key_path");
        s.cluster.redis_tls_key_path = None;
        assert_eq!(failing_key(&s), "cluster.redis_tls_key_path");
        s.cluster.redis_tls_key_path = Some(file);
        assert!(s.validate().is_ok());
    }
}
