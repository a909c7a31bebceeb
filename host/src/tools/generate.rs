//! Synthetic web-vitals events for demos, tests and benchmarks
//! (`weir generate`): realistic pages, user agents and metrics, with a
//! configurable share of bad events of every kind the pipeline must survive.

use std::fmt::Write;
use std::time::{Duration, Instant};

use crate::ingest::produce::{EventProducer, ProduceError};
use crate::pipeline::Pipeline;

/// A small, fast, seeded generator (xorshift64*); reproducible per seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const PAGES: [&str; 8] = [
    "https://shop.example.com/",
    "https://shop.example.com/products/{n}",
    "https://Shop.Example.com:443/cart/?step=2",
    "https://shop.example.com//search?q=shoes",
    "https://blog.example.com/posts/{uuid}/",
    "http://docs.example.org:8080/guide/intro#top",
    "https://shop.example.com/users/{n}/orders",
    "https://shop.example.com/checkout",
];

const AGENTS: [&str; 7] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];

const COUNTRIES: [&str; 8] = ["us", "DE", "fr", "GB", "jp", "br", "xx1", ""];

/// Settings of the generator.
#[derive(Clone, Debug)]
pub struct GeneratorOptions {
    /// seed for reproducible output.
    pub seed: u64,
    /// first event time, epoch ms.
    pub start_ms: i64,
    /// spread of event times after `start_ms`, in days.
    pub days: u32,
    /// share of events that are broken (bad JSON, wrong types, bad URLs, ...).
    pub bad_share: f64,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            seed: 1,
            start_ms: 1_795_478_400_000,
            days: 3,
            bad_share: 0.02,
        }
    }
}

/// Produces one JSON event per call.
#[derive(Debug)]
pub struct Generator {
    rng: Rng,
    options: GeneratorOptions,
    next_id: u64,
}

impl Generator {
    /// A generator with `options`.
    pub fn new(options: GeneratorOptions) -> Self {
        Generator {
            rng: Rng::new(options.seed),
            options,
            next_id: 0,
        }
    }

    /// Write the next event (without newline) into `out`, replacing its contents.
    pub fn next_into(&mut self, out: &mut String) {
        out.clear();
        self.next_id += 1;
        let r = &mut self.rng;
        let ts = self.options.start_ms
            + r.below(u64::from(self.options.days.max(1)) * 86_400_000) as i64;
        let id = format!("{:016x}-{}", self.options.seed, self.next_id);
        if r.unit() < self.options.bad_share {
            bad_event(r, &id, ts, out);
            return;
        }
        let page = r
            .pick(&PAGES)
            .replace("{n}", &r.below(5000).to_string())
            .replace(
                "{uuid}",
                &format!(
                    "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                    r.next_u64() as u32,
                    r.below(1 << 16),
                    r.below(1 << 12),
                    r.below(1 << 12),
                    r.below(1 << 48)
                ),
            );
        let tti = 400.0 + r.unit() * r.unit() * 9000.0;
        let ttar = 50.0 + r.unit() * 1200.0;
        let ua = r.pick(&AGENTS);
        let country = r.pick(&COUNTRIES);
        let _ = write!(
            out,
            r#"{{"event_id":"{id}","timestamp":{ts},"page_url":"{page}","tti_ms":{tti:.1},"ttar_ms":{ttar:.1},"session_id":"s{}","user_agent":"{ua}","country":"{country}","app_version":"4.2.{}"}}"#,
            r.below(100_000),
            r.below(10)
        );
    }
}

fn bad_event(r: &mut Rng, id: &str, ts: i64, out: &mut String) {
    let _ = match r.below(6) {
        0 => write!(
            out,
            r#"{{"event_id":"{id}","timestamp":{ts},"page_url":"https://x.org/a""#
        ),
        1 => write!(out, r#"["{id}",{ts}]"#),
        2 => write!(
            out,
            r#"{{"event_id":"{id}","timestamp":{ts},"tti_ms":100}}"#
        ),
        3 => write!(
            out,
            r#"{{"event_id":"{id}","timestamp":{ts},"page_url":"https://x.org/a","tti_ms":"slow"}}"#
        ),
        4 => write!(
            out,
            r#"{{"event_id":"{id}","timestamp":"2026-11-24T10:00:00","page_url":"https://x.org/a","tti_ms":1}}"#
        ),
        _ => write!(
            out,
            r#"{{"event_id":"{id}","timestamp":{ts},"page_url":"not a url","tti_ms":100}}"#
        ),
    };
}

/// Send `events` synthetic events, at most `rate` per second when given.
pub fn generate(
    pipeline: &Pipeline,
    events: u64,
    rate: Option<f64>,
    options: GeneratorOptions,
) -> Result<u64, ProduceError> {
    let mut producer = EventProducer::new(pipeline)?;
    let mut generator = Generator::new(options);
    let mut line = String::new();
    let started = Instant::now();
    for i in 0..events {
        if let Some(rate) = rate.filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        generator.next_into(&mut line);
        producer.send(line.as_bytes())?;
    }
    producer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::JsonDecoder;
    use crate::pipeline::DeclaredSchema;

    #[test]
    fn events_decode_except_the_bad_share() {
        let mut g = Generator::new(GeneratorOptions {
            bad_share: 0.1,
            ..GeneratorOptions::default()
        });
        let mut decoder = JsonDecoder::new(&DeclaredSchema::web_vitals(), 1000);
        let mut line = String::new();
        let mut refused = 0;
        for _ in 0..1000 {
            g.next_into(&mut line);
            refused += usize::from(decoder.push(line.as_bytes()).is_err());
        }
        assert!((40..=110).contains(&refused), "{refused} refused");
        assert_eq!(decoder.len() + refused, 1000);
    }
}
