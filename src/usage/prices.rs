//! The price table: model name → USD per million tokens, loaded from our TOML (the shipped
//! `config/prices.toml`, user files, inline config) and from LiteLLM's
//! `model_prices_and_context_window.json`; the lookup order for a model name; the cost formula
//! (protocols.md §4).
//!
//! Decisions:
//! - A missing `cache_read` or `cache_write` price is the input price (no discount or surcharge
//!   known), so cached tokens are never free by omission.
//! - LiteLLM entries of every `mode` are kept (chat, responses, embedding, completion, …): the
//!   lookup is by name, so an extra entry costs only memory. Entries without both
//!   `input_cost_per_token` and `output_cost_per_token` (image, audio, per-second pricing) and the
//!   `sample_spec` documentation key are skipped, as are entries with a negative or non-finite
//!   number.
//! - Long-context tiers (`*_above_200k_tokens`, Sonnet 4/4.5): when the whole prompt is over
//!   200,000 tokens, every token of the request is priced at the tier's rates.
//! - Not modelled: Anthropic 1-hour cache writes (priced as 5-minute writes, the §4.2 rule when
//!   the breakdown is missing; `Usage` carries one write count) and OpenAI batch/flex/priority tiers.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use super::Usage;

/// Above this many prompt tokens (input + cache read + cache write) a long-context tier applies.
pub const LONG_CONTEXT_THRESHOLD: u64 = 200_000;

/// The shipped table, compiled in so the binary needs no file to price known models.
const BUILTIN_TOML: &str = include_str!("../../config/prices.toml");

/// LiteLLM's first key documents the format; its numbers are placeholders.
const LITELLM_SAMPLE_KEY: &str = "sample_spec";

/// Prices of one model, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Uncached input.
    pub input: f64,
    pub output: f64,
    /// Input read from the cache.
    pub cache_read: f64,
    /// Input written to the cache (Anthropic's 5-minute write).
    pub cache_write: f64,
    /// Rates for the whole request when the prompt is over `LONG_CONTEXT_THRESHOLD` tokens.
    pub above_200k: Option<LongContextPrice>,
}

/// The long-context tier of a `Price`, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LongContextPrice {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

/// One model's entry as written in TOML (`[models."name"]` in a prices file, or
/// `[prices.models."name"]` in the gateway config). Cache prices default to the input price.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
    #[serde(default)]
    pub above_200k: Option<LongContextSpec>,
}

/// The long-context tier as written in TOML; cache prices default to this tier's input price.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextSpec {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

/// A prices file: `[models."name"]` tables and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesFile {
    #[serde(default)]
    models: BTreeMap<String, PriceSpec>,
}

impl PriceSpec {
    /// The price, or every problem with it (negative or non-finite numbers).
    pub fn to_price(&self) -> Result<Price, Vec<String>> {
        let mut problems = Vec::new();
        let mut check = |what: &str, v: f64| {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{what} = {v} is not a finite price >= 0"));
            }
            v
        };
        let input = check("input", self.input);
        let price = Price {
            input,
            output: check("output", self.output),
            cache_read: check("cache_read", self.cache_read.unwrap_or(input)),
            cache_write: check("cache_write", self.cache_write.unwrap_or(input)),
            above_200k: self.above_200k.as_ref().map(|t| {
                let input = check("above_200k.input", t.input);
                LongContextPrice {
                    input,
                    output: check("above_200k.output", t.output),
                    cache_read: check("above_200k.cache_read", t.cache_read.unwrap_or(input)),
                    cache_write: check("above_200k.cache_write", t.cache_write.unwrap_or(input)),
                }
            }),
        };
        if problems.is_empty() {
            Ok(price)
        } else {
            Err(problems)
        }
    }
}

/// Model name → price. Built once at startup; lookups allocate nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    models: HashMap<String, Price>,
}

impl PriceTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shipped `config/prices.toml`. A unit test proves it parses, so the empty fallback is
    /// unreachable in a tested build.
    pub fn builtin() -> Self {
        Self::from_toml(BUILTIN_TOML).unwrap_or_default()
    }

    /// A prices file in our TOML format: `[models."name"] input = … output = …` with optional
    /// `cache_read`, `cache_write` and an `above_200k` table. Reports every problem at once.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: PricesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        Self::from_specs(&file.models)
    }

    /// Entries already deserialized (e.g. the gateway config's `[prices.models]`). Reports every
    /// problem at once, each prefixed with its model name.
    pub fn from_specs<'a, I, S>(specs: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = (&'a S, &'a PriceSpec)>,
        S: AsRef<str> + ?Sized + 'a,
    {
        let mut table = Self::new();
        let mut problems = Vec::new();
        for (name, spec) in specs {
            let name = name.as_ref();
            match spec.to_price() {
                Ok(price) => table.insert(name, price),
                Err(errs) => problems.extend(errs.into_iter().map(|e| format!("models.\"{name}\": {e}"))),
            }
        }
        if problems.is_empty() {
            Ok(table)
        } else {
            Err(problems.join("; "))
        }
    }

    /// LiteLLM's `model_prices_and_context_window.json` (USD per token, converted here to per
    /// million). Fails only when the text is not a JSON object; unusable entries are skipped
    /// (see the file header).
    pub fn from_litellm_json(bytes: &[u8]) -> Result<Self, String> {
        let doc: serde_json::Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| format!("LiteLLM prices: {e}"))?;
        let mut table = Self::new();
        for (name, entry) in &doc {
            if name == LITELLM_SAMPLE_KEY {
                continue;
            }
            if let Some(price) = litellm_price(entry) {
                table.insert(name, price);
            }
        }
        Ok(table)
    }

    /// Adds or replaces one model's price.
    pub fn insert(&mut self, model: &str, price: Price) {
        self.models.insert(model.to_owned(), price);
    }

    /// Adds every entry of `other`, replacing entries of the same name (later wins).
    pub fn merge(&mut self, other: PriceTable) {
        self.models.extend(other.models);
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The price under exactly this name.
    pub fn get(&self, model: &str) -> Option<&Price> {
        self.models.get(model)
    }

    /// The price of `model`: the exact name first, then its normalised forms in this order:
    /// without an `anthropic/` or `openai/` prefix; without a date suffix (`-YYYYMMDD`,
    /// `@YYYYMMDD`, `-YYYY-MM-DD`); without both. `None` for an unknown model.
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        self.lookup_first(&[model])
    }

    /// The price of the first of `names` known exactly, else the first known under a normalised
    /// form (see `lookup`). Pass the response's `model` then the request's (protocols.md §4.3).
    pub fn lookup_first(&self, names: &[&str]) -> Option<&Price> {
        names.iter().find_map(|n| self.get(n)).or_else(|| names.iter().find_map(|n| self.lookup_normalised(n)))
    }

    fn lookup_normalised(&self, model: &str) -> Option<&Price> {
        let bare = strip_provider(model);
        [bare, strip_date(model), strip_date(bare)]
            .into_iter()
            .filter(|candidate| *candidate != model)
            .find_map(|candidate| self.get(candidate))
    }
}

/// The cost of `usage` at `price`, in USD (protocols.md §4.2):
/// `(input·in + cache_read·cr + cache_write·cw + output·out) / 1e6`, at the long-context rates
/// for the whole request when the prompt is over `LONG_CONTEXT_THRESHOLD` and the price has them.
pub fn cost(price: &Price, usage: &Usage) -> f64 {
    let rates = match price.above_200k {
        Some(tier) if usage.prompt_total() > LONG_CONTEXT_THRESHOLD => tier,
        _ => LongContextPrice {
            input: price.input,
            output: price.output,
            cache_read: price.cache_read,
            cache_write: price.cache_write,
        },
    };
    (usage.input as f64 * rates.input
        + usage.cache_read as f64 * rates.cache_read
        + usage.cache_write as f64 * rates.cache_write
        + usage.output as f64 * rates.output)
        / 1_000_000.0
}

/// One LiteLLM entry as a price, when it has token prices and they are sane.
fn litellm_price(entry: &Value) -> Option<Price> {
    let per_million = |key: &str| {
        let v = entry.get(key)?.as_f64()?;
        // Round to 1e-6 USD per million: 3e-06 × 1e6 is not exactly 3.0 in binary.
        Some((v * 1e12).round() / 1e6)
    };
    let input = per_million("input_cost_per_token")?;
    let output = per_million("output_cost_per_token")?;
    let tier = match (
        per_million("input_cost_per_token_above_200k_tokens"),
        per_million("output_cost_per_token_above_200k_tokens"),
    ) {
        (Some(input), Some(output)) => Some(LongContextSpec {
            input,
            output,
            cache_read: per_million("cache_read_input_token_cost_above_200k_tokens"),
            cache_write: per_million("cache_creation_input_token_cost_above_200k_tokens"),
        }),
        _ => None,
    };
    PriceSpec {
        input,
        output,
        cache_read: per_million("cache_read_input_token_cost"),
        cache_write: per_million("cache_creation_input_token_cost"),
        above_200k: tier,
    }
    .to_price()
    .ok()
}

/// `anthropic/claude-…` → `claude-…`, `openai/gpt-…` → `gpt-…`; other names unchanged. Other
/// providers' prefixes stay: their prices differ from the vendor's and LiteLLM lists them.
fn strip_provider(model: &str) -> &str {
    ["anthropic/", "openai/"].into_iter().find_map(|p| model.strip_prefix(p)).unwrap_or(model)
}

/// `…-20250929`, `…@20250929` or `…-2024-08-06` → `…`; other names unchanged.
fn strip_date(model: &str) -> &str {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let split = |suffix_len: usize| {
        let at = model.len().checked_sub(suffix_len)?;
        Some((model.get(..at)?, model.get(at..)?)).filter(|(head, _)| !head.is_empty())
    };
    if let Some((head, tail)) = split(9) {
        if let Some(date) = tail.strip_prefix('-').or_else(|| tail.strip_prefix('@')) {
            if digits(date) {
                return head;
            }
        }
    }
    if let Some((head, tail)) = split(11) {
        let mut parts = tail.split('-');
        if let (Some(""), Some(y), Some(m), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        {
            if y.len() == 4 && m.len() == 2 && d.len() == 2 && digits(y) && digits(m) && digits(d) {
                return head;
            }
        }
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_suffixes_and_vendor_prefixes_are_stripped() {
        assert_eq!(strip_date("claude-sonnet-4-5-20250929"), "claude-sonnet-4-5");
        assert_eq!(strip_date("claude-sonnet-4-5@20250929"), "claude-sonnet-4-5");
        assert_eq!(strip_date("gpt-4o-2024-08-06"), "gpt-4o");
        assert_eq!(strip_date("gpt-4o"), "gpt-4o");
        assert_eq!(strip_date("o3-mini"), "o3-mini");
        assert_eq!(strip_date("-20250929"), "-20250929");
        assert_eq!(strip_date("x-2024-8-06"), "x-2024-8-06");
        assert_eq!(strip_provider("anthropic/claude-haiku-4-5"), "claude-haiku-4-5");
        assert_eq!(strip_provider("openai/gpt-4.1"), "gpt-4.1");
        assert_eq!(strip_provider("bedrock/claude"), "bedrock/claude");
        assert_eq!(strip_date("modèle-ünïcødé"), "modèle-ünïcødé");
    }
}
