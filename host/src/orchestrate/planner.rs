//! From object keys to date partitions: which keys are commits of the
//! lake's data table (`_delta_log/<version>.json`; the commit's add actions
//! name the dates), duplicate notifications collapsed, bursts debounced so a
//! partition is aggregated once per burst.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::event::ObjectEvent;

/// Where the lake is, to recognise its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LakeLocation {
    /// the bucket (`None` for a local lake, which gets no notifications).
    pub bucket: Option<String>,
    /// the key prefix of the lake root, with a trailing `/` (or empty).
    pub prefix: String,
    /// the partition column (`event_date`).
    pub partition_by: String,
}

impl LakeLocation {
    /// The location of a lake URL (`s3://bucket/prefix` or a path).
    pub fn of(url: &str, partition_by: &str) -> Self {
        let (bucket, prefix) = match url.strip_prefix("s3://") {
            Some(rest) => {
                let (b, p) = rest.split_once('/').unwrap_or((rest, ""));
                let p = p.trim_matches('/');
                (
                    Some(b.to_string()),
                    if p.is_empty() {
                        String::new()
                    } else {
                        format!("{p}/")
                    },
                )
            }
            None => (None, String::new()),
        };
        LakeLocation {
            bucket,
            prefix,
            partition_by: partition_by.into(),
        }
    }
}

/// What an object event means for the orchestrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    /// a commit of the data table: its dates are read from its actions.
    Commit(i64),
    /// not the lake's data or commit log; the reason.
    Ignored(&'static str),
}

/// Classify one event against the lake's location.
pub fn classify(lake: &LakeLocation, event: &ObjectEvent) -> Touched {
    if lake.bucket.as_deref() != Some(event.bucket.as_str()) {
        return Touched::Ignored("another bucket");
    }
    if !event.event_name.starts_with("ObjectCreated") {
        return Touched::Ignored("not an object creation");
    }
    let Some(rel) = event.key.strip_prefix(&lake.prefix) else {
        return Touched::Ignored("outside the lake's prefix");
    };
    if rel.starts_with("_dead_letters/") {
        return Touched::Ignored("dead letters");
    }
    let Some(name) = rel.strip_prefix("_delta_log/") else {
        return Touched::Ignored("a data file (its commit names it) or outside the table");
    };
    match name.strip_suffix(".json").map(str::parse::<i64>) {
        Some(Ok(version)) if name.len() == 25 => Touched::Commit(version),
        _ => Touched::Ignored("a checkpoint or another log file"),
    }
}

/// Collapses duplicate notifications and debounces bursts per date.
#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    pending: BTreeMap<String, Instant>,
    seen: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

/// Notifications remembered for de-duplication.
const SEEN_CAPACITY: usize = 100_000;

impl Debouncer {
    /// Dates become ready after `quiet` without a new event for them.
    pub fn new(quiet: Duration) -> Self {
        Debouncer {
            quiet,
            pending: BTreeMap::new(),
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether this (key, sequencer) was seen before; remembers it.
    pub fn duplicate(&mut self, event: &ObjectEvent) -> bool {
        let id = (
            event.key.clone(),
            event.sequencer.clone().unwrap_or_default(),
        );
        if self.seen.contains(&id) {
            return true;
        }
        self.seen.insert(id.clone());
        self.order.push_back(id);
        if self.order.len() > SEEN_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        false
    }

    /// A date was touched at `now`.
    pub fn touch(&mut self, date: String, now: Instant) {
        self.pending.insert(date, now);
    }

    /// Dates quiet since `quiet`, removed from the pending set.
    pub fn ready(&mut self, now: Instant) -> Vec<String> {
        let ready: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= self.quiet)
            .map(|(d, _)| d.clone())
            .collect();
        for d in &ready {
            self.pending.remove(d);
        }
        ready
    }

    /// Dates waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, seq: &str) -> ObjectEvent {
        ObjectEvent {
            event_name: "ObjectCreated:Put".into(),
            bucket: "b".into(),
            key: key.into(),
            sequencer: Some(seq.into()),
            event_time: None,
        }
    }

    #[test]
    fn keys_are_classified() {
        let lake = LakeLocation::of("s3://b/weir/lake", "event_date");
        assert_eq!(lake.prefix, "weir/lake/");
        let c = |k: &str| classify(&lake, &ev(k, "1"));
        assert_eq!(
            c("weir/lake/_delta_log/00000000000000000012.json"),
            Touched::Commit(12)
        );
        assert!(matches!(
            c("weir/lake/_delta_log/00000000000000000010.checkpoint.parquet"),
            Touched::Ignored(_)
        ));
        assert!(matches!(
            c("weir/lake/_delta_log/_last_checkpoint"),
            Touched::Ignored(_)
        ));
        assert!(matches!(
            c("weir/lake/event_date=2026-11-20/t-p0-o1-2-d.parquet"),
            Touched::Ignored(_)
        ));
        assert!(matches!(
            c("weir/lake/_dead_letters/_delta_log/00000000000000000001.json"),
            Touched::Ignored(_)
        ));
        assert!(matches!(
            c("other/_delta_log/00000000000000000001.json"),
            Touched::Ignored(_)
        ));
        let mut other = ev("weir/lake/_delta_log/00000000000000000001.json", "1");
        other.bucket = "elsewhere".into();
        assert!(matches!(classify(&lake, &other), Touched::Ignored(_)));
    }

    #[test]
    fn duplicates_collapse_and_bursts_wait_for_quiet() {
        let mut d = Debouncer::new(Duration::from_millis(100));
        assert!(!d.duplicate(&ev("k", "1")));
        assert!(d.duplicate(&ev("k", "1")));
        assert!(!d.duplicate(&ev("k", "2")));
        let t0 = Instant::now();
        d.touch("2026-11-20".into(), t0);
        d.touch("2026-11-20".into(), t0 + Duration::from_millis(80));
        assert!(d.ready(t0 + Duration::from_millis(150)).is_empty());
        assert_eq!(d.ready(t0 + Duration::from_millis(190)), ["2026-11-20"]);
        assert_eq!(d.pending(), 0);
    }
}
