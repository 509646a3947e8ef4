//! The soak's gateway setup (`switchyard-soak config`): a config and a flags file covering what the
//! soak exercises — both dialects, same-dialect and translated backends, a multivariate flag on a
//! route with fallback and cut-off, a boolean flag, a route without a flag, an admin token — with
//! tight backend timeouts so the upstream's stall and slow faults trip them. The run mode's
//! defaults (`ROUTES`, `VARIANT_MODELS`, `KILL_FLAG`) name what this writes.

use std::path::Path;

/// Routes the load calls, `model=flag`.
pub const ROUTES: &str = "soak-chat=soak-exp,soak-claude=soak-bool,soak-plain";
/// Models of the variants (faults scoped to them make the fallback serve).
pub const VARIANT_MODELS: &str = "gpt-4o-a,claude-b,gpt-4o-t";
/// The route with fallback and cut-off, where fault storms go.
pub const STORM_ROUTE: &str = "soak-chat";
/// The flag the kill switch toggles.
pub const KILL_FLAG: &str = "soak-exp";

pub struct Setup<'a> {
    pub upstream: &'a str,
    pub listen: &'a str,
    pub admin_token_env: &'a str,
    pub feedback_capacity: usize,
    pub first_byte_timeout: &'a str,
    pub idle_timeout: &'a str,
}

const FLAGS: &str = r#"{"flags": [
  {"id": 1, "key": "soak-exp", "name": "soak", "active": true, "filters": {
    "groups": [{"properties": [], "rollout_percentage": 100}],
    "multivariate": {"variants": [{"key": "a", "rollout_percentage": 50}, {"key": "b", "rollout_percentage": 50}]}}},
  {"id": 2, "key": "soak-bool", "name": "soak", "active": true, "filters": {
    "groups": [{"properties": [], "rollout_percentage": 50}]}}],
 "cohorts": {}, "group_type_mapping": {}}
"#;

impl Setup<'_> {
    /// The gateway config; relative paths resolve beside it.
    pub fn config(&self) -> String {
        let mut out = format!(
            "listen = \"{}\"\n\n[flags]\nfile = \"flags.json\"\nfile_poll_interval = \"250ms\"\n\n\
             [admin]\ntoken_env = \"{}\"\nstate_file = \"state.json\"\n\n\
             # Served requests remembered for feedback: kept small so that any RSS growth left is a leak.\n\
             [server]\nfeedback_capacity = {}\n",
            self.listen, self.admin_token_env, self.feedback_capacity
        );
        // Backend names start with their dialect: the soak client tells relayed from translated by them.
        for (name, kind) in [
            ("openai-ctl", "openai"),
            ("openai-var", "openai"),
            ("anthropic-ctl", "anthropic"),
            ("anthropic-var", "anthropic"),
        ] {
            out.push_str(&format!(
                "\n[backends.{name}]\nkind = \"{kind}\"\nbase_url = \"{}\"\nfirst_byte_timeout = \"{}\"\nidle_timeout = \"{}\"\ntotal_timeout = \"30s\"\n",
                self.upstream, self.first_byte_timeout, self.idle_timeout
            ));
        }
        out.push_str(
            r#"
[[routes]]
model = "soak-chat"
flag = "soak-exp"
control = { backend = "openai-ctl", model = "gpt-4o" }
variants = { "a" = { backend = "openai-var", model = "gpt-4o-a" }, "b" = { backend = "anthropic-var", model = "claude-b" } }
fallback = true
cutoff = { error_rate = 0.5, min_requests = 20, window = "2s", cooldown = "3s", probes = 3 }

[[routes]]
model = "soak-claude"
flag = "soak-bool"
control = { backend = "anthropic-ctl", model = "claude-sonnet-4-5" }
variants = { "true" = { backend = "openai-var", model = "gpt-4o-t" } }
fallback = true

[[routes]]
model = "soak-plain"
control = { backend = "openai-ctl", model = "gpt-4o" }
"#,
        );
        out
    }

    /// Writes `switchyard.toml` and `flags.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("switchyard.toml"), self.config())?;
        std::fs::write(dir.join("flags.json"), FLAGS)
    }
}
