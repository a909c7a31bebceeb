//! Plugin configuration: key/value pairs from the pipeline file.

/// The `[plugin.config]` table of the pipeline file. Every key a plugin
/// reads is marked as known; keys never read are reported as unknown after
/// `init`, so a typo in the pipeline file is an error, not a silent default.
#[derive(Clone, Debug, Default)]
pub struct Config {
    entries: Vec<(String, String, bool)>,
}

impl Config {
    /// A configuration from key/value pairs.
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Config {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into(), false))
                .collect(),
        }
    }

    /// The value of `key`, if set; marks the key as known.
    pub fn get(&mut self, key: &str) -> Option<&str> {
        let entry = self.entries.iter_mut().find(|(k, _, _)| k == key)?;
        entry.2 = true;
        Some(entry.1.as_str())
    }

    /// The value of `key` parsed as `T`, or `default` when unset.
    pub fn parse_or<T: std::str::FromStr>(&mut self, key: &str, default: T) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("config key `{key}`: cannot parse `{v}`")),
        }
    }

    /// Fails naming every key that was never read.
    pub fn check_all_read(&self) -> Result<(), String> {
        let unknown: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| !e.2)
            .map(|e| e.0.as_str())
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!("unknown config key(s): {}", unknown.join(", ")))
        }
    }
}
