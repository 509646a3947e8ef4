//! Config loading: every problem at once with its key path, defaults and secrets resolved.

use super::*;

fn env(name: &str) -> Option<String> {
    (name == "SET").then(|| "secret".to_owned())
}

fn problems(text: &str) -> Vec<String> {
    match parse(text, "t.toml", PathBuf::new(), &env) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|p| format!("{}: {}", p.path, p.why)).collect(),
    }
}

#[test]
fn every_problem_is_listed_with_its_key_path() {
    let got = problems(
        r#"
        listen = "nope"
        colour = 1
        [backends.a]
        kind = "openai"
        base_url = "ftp://x"
        api_key_env = "UNSET"
        [backends.b]
        kind = "anthropic"
        base_url = "https://api.anthropic.com"
        connect_timeout = "soon"
        [backends.c]
        kind = "openai"
        base_url = "https://api.openai.com"
        max_response_bytes = 0
        [[routes]]
        model = "m"
        control = { backend = "missing", model = "x" }
        variants = { v = { backend = "a", model = "y" } }
        [[routes]]
        model = "m"
        control = { backend = "a", model = "x", extra = 1 }
        "#,
    );
    let joined = got.join("\n");
    for needle in [
        "colour: unknown key",
        "listen: \"nope\" is not an address",
        "backends.a.base_url:",
        "backends.a.api_key_env: environment variable UNSET is not set",
        "backends.b.connect_timeout:",
        "backends.c.max_response_bytes: must be at least 1",
        "routes[0].control.backend: no backend named \"missing\"",
        "routes[0].variants: variants need a flag",
        "routes[1].control.extra",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
}

#[test]
fn a_valid_config_resolves_defaults_and_secrets() {
    let cfg = parse(
        r#"
        [backends.a]
        kind = "anthropic"
        base_url = "https://api.anthropic.com/"
        api_key_env = "SET"
        idle_timeout = "5s"
        [[routes]]
        model = "m"
        control = { backend = "a", model = "claude" }
        "#,
        "t.toml",
        PathBuf::new(),
        &env,
    )
    .expect("valid");
    let a = &cfg.backends["a"];
    assert_eq!(a.base_url, "https://api.anthropic.com");
    assert_eq!(a.idle_timeout, Duration::from_secs(5));
    assert_eq!(a.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(a.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
    assert!(a.api_key.is_some());
    assert_eq!(cfg.listen, DEFAULT_LISTEN);
    assert!(format!("{a:?}").find("secret").is_none(), "secrets never appear in Debug output");
}

#[test]
fn shared_overrides_take_a_redis_url_without_a_password_or_one_from_the_environment() {
    let cfg =
        parse("[overrides]\nredis_url = \"redis://127.0.0.1:6379\"", "t.toml", PathBuf::new(), &env).expect("valid");
    let o = cfg.overrides.expect("overrides configured");
    assert_eq!((o.key.as_str(), o.channel.as_str()), ("switchyard:overrides", "switchyard:overrides:changes"));
    let env_url = |name: &str| (name == "REDIS_URL").then(|| "redis://:hunter2@redis:6379/0".to_owned());
    let text = "[overrides]\nredis_url_env = \"REDIS_URL\"\nkey_prefix = \"fleet-a\"";
    let o = parse(text, "t.toml", PathBuf::new(), &env_url).expect("valid").overrides.expect("configured");
    assert_eq!(o.key, "fleet-a:overrides");
    assert!(!format!("{o:?}").contains("hunter2"), "the password never appears in Debug output");
    assert!(o.tls.is_none());
    // TLS against the system's roots needs no files.
    let o = parse("[overrides]\nredis_url = \"rediss://redis.internal:6380\"", "t.toml", PathBuf::new(), &env)
        .expect("valid")
        .overrides
        .expect("configured");
    assert!(o.tls.is_none(), "no CA and no client certificate: the redis client's own TLS defaults");
    assert!(problems("").is_empty());
}

#[test]
fn shared_overrides_refuse_a_password_in_the_file_and_other_mistakes_without_echoing_secrets() {
    let cases = [
        ("redis_url = \"redis://:hunter2@redis:6379\"", "overrides.redis_url: carries a password"),
        ("redis_url = \"redis://default:hunter2@redis\"", "overrides.redis_url: carries a password"),
        ("redis_url_env = \"UNSET\"", "overrides.redis_url_env: environment variable UNSET is not set"),
        ("redis_url = \"http://redis\"", "overrides.redis_url: must be a URL like redis://"),
        (
            "redis_url = \"rediss://redis/#insecure\"",
            "overrides.redis_url: takes no #fragment: certificates are always verified",
        ),
        (
            "redis_url = \"redis://redis\"\nca_file = \"ca.pem\"",
            "overrides: `ca_file` and the client certificate are only for a rediss:// URL",
        ),
        (
            "redis_url = \"rediss://redis\"\nclient_cert_file = \"c.pem\"",
            "overrides.client_cert_file: needs `client_key_file` too",
        ),
        (
            "redis_url = \"rediss://redis\"\nclient_key_file = \"k.pem\"",
            "overrides.client_key_file: needs `client_cert_file` too",
        ),
        (
            "redis_url = \"rediss://redis\"\nca_file = \"no-such-ca.pem\"",
            "overrides.ca_file: no-such-ca.pem: No such file",
        ),
        (
            "redis_url = \"redis://a\"\nredis_url_env = \"SET\"",
            "overrides: give `redis_url` or `redis_url_env`, not both",
        ),
        ("key_prefix = \"x\"", "overrides: needs `redis_url`"),
        ("redis_url = \"redis://a\"\ncolour = 1", "overrides.colour: unknown field `colour`"),
    ];
    for (body, want) in cases {
        let got = problems(&format!("[overrides]\n{body}")).join("\n");
        assert!(got.contains(want), "{body}: want {want:?} in {got:?}");
        assert!(!got.contains("hunter2"), "{body}: the password is never echoed: {got}");
    }
    assert_eq!(url_password("redis://user@host:1/0"), None);
    assert_eq!(url_password("redis://host:6379"), None);
}

#[test]
fn workers_default_to_one_per_cpu_and_are_bounded() {
    let base =
        "[backends.m]\nkind = \"mock\"\n[[routes]]\nmodel = \"x\"\ncontrol = { backend = \"m\", model = \"x\" }\n";
    let load = |extra: &str| parse(&format!("{base}{extra}"), "t.toml", PathBuf::new(), &env);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(load("").unwrap().server.workers, cpus.min(MAX_WORKERS));
    assert_eq!(load("[server]\nworkers = 0\n").unwrap().server.workers, cpus.min(MAX_WORKERS));
    assert_eq!(load("[server]\nworkers = 3\n").unwrap().server.workers, 3);
    assert_eq!(
        problems(&format!("{base}[server]\nworkers = 1000\n")),
        ["server.workers: 1000 worker threads; at most 256"]
    );
    assert_eq!(problems(&format!("{base}[server]\nworkers = -1\n")).len(), 1);
}

#[test]
fn feedback_capacity_defaults_and_is_bounded() {
    let base =
        "[backends.m]\nkind = \"mock\"\n[[routes]]\nmodel = \"x\"\ncontrol = { backend = \"m\", model = \"x\" }\n";
    let load = |extra: &str| parse(&format!("{base}{extra}"), "t.toml", PathBuf::new(), &env);
    assert_eq!(load("").unwrap().server.feedback_capacity, crate::feedback::FEEDBACK_CAPACITY);
    assert_eq!(load("[server]\nfeedback_capacity = 0\n").unwrap().server.feedback_capacity, 1);
    assert_eq!(load("[server]\nfeedback_capacity = 1000\n").unwrap().server.feedback_capacity, 1000);
    // Every slot's chunk index is allocated at start: a typo of a few zeros must not take the host down.
    assert_eq!(
        problems(&format!("{base}[server]\nfeedback_capacity = 100000000000\n")),
        ["server.feedback_capacity: 100000000000 slots; at most 67108864 (2 GiB once used)"]
    );
}
