//! The reference web-vitals plugin: drops bots, validates and normalises
//! `page_url`, cleans the TTI/TTAR metrics and enriches each event with
//! `page_group`, `device_class`, `country` and `event_date`.
//!
//! The rules live in [`rules`]; this file maps them over a batch. The plugin
//! is idempotent: its output, fed back in, comes out unchanged.

mod bytes;
pub mod rules;
mod url_map;

use weir_plugin_sdk::prelude::*;

/// Field handles into the input batch, resolved once at `init`.
struct Input {
    event_id: FieldRef<Str>,
    timestamp: FieldRef<TimestampMs>,
    page_url: FieldRef<Str>,
    tti_ms: FieldRef<F64>,
    ttar_ms: FieldRef<F64>,
    user_agent: FieldRef<Str>,
    country: FieldRef<Str>,
}

impl Input {
    /// Row `row`'s user agent; an empty one counts as none.
    #[inline(always)]
    fn user_agent<'b>(&self, batch: &'b Batch, row: usize) -> Option<&'b str> {
        batch.get(self.user_agent, row).filter(|ua| !ua.is_empty())
    }
}

/// A row kept, with what its first pass found.
struct Kept {
    row: u32,
    device_class: &'static str,
    tti_ms: Option<f64>,
    ttar_ms: Option<f64>,
}

/// Field handles into the output batch.
struct Out {
    event_id: FieldRef<Str>,
    timestamp: FieldRef<TimestampMs>,
    event_date: FieldRef<Date>,
    page_url: FieldRef<Str>,
    page_group: FieldRef<Str>,
    tti_ms: FieldRef<F64>,
    ttar_ms: FieldRef<F64>,
    device_class: FieldRef<Str>,
    country: FieldRef<Str>,
    user_agent: FieldRef<Str>,
}

/// The web-vitals plugin (no configuration keys).
pub struct WebVitals {
    input: Input,
    out: Out,
    /// `event_id`, `timestamp` and `session_id` pass through unchanged
    /// (when the input declares them as the output does); the rest is
    /// computed.
    columns: Columns,
    /// whether `event_id` and `timestamp` are pushed (the input declares
    /// them nullable, the output does not).
    push_ids: bool,
    url: String,
    group: String,
    /// the kept rows of the batch in hand.
    kept: Vec<Kept>,
}

/// The input schema the plugin is written for (extra fields are ignored).
pub fn input_schema() -> Schema {
    use FieldType::*;
    Schema::new(vec![
        Field::new("event_id", String, false),
        Field::new("timestamp", TimestampMs, false),
        Field::new("page_url", String, false),
        Field::new("tti_ms", Float64, true),
        Field::new("ttar_ms", Float64, true),
        Field::new("session_id", String, true),
        Field::new("user_agent", String, true),
        Field::new("country", String, true),
    ])
}

/// The output schema, in column order.
pub fn output_schema() -> Schema {
    use FieldType::*;
    Schema::new(vec![
        Field::new("event_id", String, false),
        Field::new("timestamp", TimestampMs, false),
        Field::new("event_date", Date, false),
        Field::new("page_url", String, false),
        Field::new("page_group", String, false),
        Field::new("tti_ms", Float64, true),
        Field::new("ttar_ms", Float64, true),
        Field::new("device_class", String, false),
        Field::new("country", String, true),
        Field::new("session_id", String, true),
        Field::new("user_agent", String, true),
    ])
}

impl Plugin for WebVitals {
    fn init(input: &Schema, _config: &mut Config) -> Result<(Self, Schema), String> {
        let schema = output_schema();
        let inp = Input {
            event_id: input.field("event_id")?,
            timestamp: input.field("timestamp")?,
            page_url: input.field("page_url")?,
            tti_ms: input.field("tti_ms")?,
            ttar_ms: input.field("ttar_ms")?,
            user_agent: input.field("user_agent")?,
            country: input.field("country")?,
        };
        // passed through, so only its presence and type are checked
        input.field::<Str>("session_id")?;
        let out = Out {
            event_id: schema.field("event_id")?,
            timestamp: schema.field("timestamp")?,
            event_date: schema.field("event_date")?,
            page_url: schema.field("page_url")?,
            page_group: schema.field("page_group")?,
            tti_ms: schema.field("tti_ms")?,
            ttar_ms: schema.field("ttar_ms")?,
            device_class: schema.field("device_class")?,
            country: schema.field("country")?,
            user_agent: schema.field("user_agent")?,
        };
        let mut columns = Columns::plan(input, &schema)?
            .computed("event_date")?
            .computed("page_url")?
            .computed("page_group")?
            .computed("device_class")?
            .computed("tti_ms")?
            .computed("ttar_ms")?
            .computed("country")?
            .computed("user_agent")?;
        // session_id is nullable on both sides, so it always passes through
        let push_ids = !columns.passes(out.event_id) || !columns.passes(out.timestamp);
        if push_ids {
            columns = columns.computed("event_id")?.computed("timestamp")?;
        }
        let plugin = WebVitals {
            input: inp,
            out,
            columns,
            push_ids,
            url: String::new(),
            group: String::new(),
            kept: Vec::new(),
        };
        Ok((plugin, schema))
    }

    fn process(&mut self, batch: Batch) -> Result<Output, String> {
        let (i, o) = (&self.input, &self.out);
        let mut output = self.columns.output(batch);
        let (batch, out) = output.split();
        // first pass: each row's verdict, and the URL columns of kept rows;
        // the other columns follow one at a time over the kept rows, so each
        // loop keeps few values live (as Wasm, a loop over ten columns at
        // once spends much of its time moving them to and from the stack)
        self.kept.clear();
        for row in 0..batch.num_rows() {
            let (Some(_), Some(_), Some(page_url)) = (
                batch.get(i.event_id, row),
                batch.get(i.timestamp, row),
                batch.get(i.page_url, row),
            ) else {
                out.reject_row(row, "missing required field");
                continue;
            };
            let traits = i.user_agent(batch, row).map(rules::scan_user_agent);
            if traits.is_some_and(|t| t.bot) {
                out.drop_row(row, "bot");
                continue;
            }
            if !rules::normalize(page_url, &mut self.url, Some(&mut self.group)) {
                out.reject_row(row, "invalid page_url");
                continue;
            }
            let tti_ms = rules::clean_metric(batch.get(i.tti_ms, row));
            let ttar_ms = rules::clean_metric(batch.get(i.ttar_ms, row));
            if tti_ms.is_none() && ttar_ms.is_none() {
                out.drop_row(row, "no valid metrics");
                continue;
            }
            out.push(o.page_url, Some(self.url.as_str()));
            out.push(o.page_group, Some(self.group.as_str()));
            self.kept.push(Kept {
                row: row as u32,
                device_class: rules::device_class_of(traits),
                tti_ms,
                ttar_ms,
            });
        }
        let kept = &self.kept;
        let rows = || kept.iter().map(|k| k.row as usize);
        if self.push_ids {
            for row in rows() {
                out.push(o.event_id, batch.get(i.event_id, row));
            }
            for row in rows() {
                out.push(o.timestamp, batch.get(i.timestamp, row));
            }
        }
        for row in rows() {
            // present: the first pass kept only rows with a timestamp
            let timestamp = batch.get(i.timestamp, row).unwrap_or_default();
            out.push(o.event_date, Some(rules::event_date(timestamp)));
        }
        for k in kept {
            out.push(o.tti_ms, k.tti_ms);
        }
        for k in kept {
            out.push(o.ttar_ms, k.ttar_ms);
        }
        for k in kept {
            out.push(o.device_class, Some(k.device_class));
        }
        for row in rows() {
            let country = batch.get(i.country, row).and_then(rules::country);
            out.push(o.country, country.as_ref().map(rules::CountryCode::as_str));
        }
        for row in rows() {
            out.push(o.user_agent, i.user_agent(batch, row));
        }
        output.finish()
    }
}

export_plugin!(WebVitals);
