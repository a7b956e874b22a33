//! Configuration loading: precedence of file, environment and flags on a real file; errors
//! that name the key, the layer and the fix; the documented example parses; secrets stay
//! out of `Debug` and printed output.

use std::time::Duration;

use peregrine_server::config::{Config, Sources};

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peregrine-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const FILE: &str = r#"
listen = "127.0.0.1:7000"
[token]
hmac_secret = "file-secret"
[client]
ping_interval = "11s"
pong_timeout = "5s"
max_subscriptions = 10
"#;

#[test]
fn file_then_environment_then_flags() {
    let file = temp_file("precedence.toml", FILE);
    let sources = Sources {
        file: Some(file),
        env: env(&[
            ("PEREGRINE_CLIENT__PING_INTERVAL", "22s"),
            ("PEREGRINE_CLIENT__MAX_SUBSCRIPTIONS", "20"),
        ]),
        overrides: vec!["client.max_subscriptions=30".into()],
    };
    let c = Config::load(&sources).unwrap();
    assert!(!c.development, "a file means the production base");
    assert_eq!(c.listen.port(), 7000, "file over default");
    assert_eq!(c.client.pong_timeout, Duration::from_secs(5), "file");
    assert_eq!(c.client.ping_interval, Duration::from_secs(22), "environment over file");
    assert_eq!(c.client.max_subscriptions, 30, "flag over environment");
    assert!(c.allowed_origins.is_empty(), "production default: same origin only");
}

#[test]
fn config_file_can_come_from_the_environment() {
    let file = temp_file("from-env.toml", FILE);
    let sources = Sources { env: env(&[("PEREGRINE_CONFIG", file.to_str().unwrap())]), ..Sources::default() };
    assert_eq!(Config::load(&sources).unwrap().listen.port(), 7000);
}

#[test]
fn unknown_key_in_a_file_is_named_with_the_nearest_key() {
    let file = temp_file("typo.toml", "[client]\nping_intervall = \"3s\"\n");
    let e =
        Config::load(&Sources { file: Some(file.clone()), ..Sources::default() }).unwrap_err().to_string();
    assert!(e.contains("`client.ping_intervall`"), "{e}");
    assert!(e.contains(&file.display().to_string()), "names the file: {e}");
    assert!(e.contains("did you mean `ping_interval`"), "{e}");
}

#[test]
fn bad_values_name_the_key_the_layer_and_the_expected_form() {
    let sources = Sources { env: env(&[("PEREGRINE_CLIENT__PONG_TIMEOUT", "soon")]), ..Sources::default() };
    let e = Config::load(&sources).unwrap_err().to_string();
    assert!(e.contains("`client.pong_timeout`") && e.contains("PEREGRINE_CLIENT__PONG_TIMEOUT"), "{e}");
    assert!(e.contains("25s"), "shows the form: {e}");

    let e = Config::load(&Sources { overrides: vec!["listen=nowhere".into()], ..Sources::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("`listen`") && e.contains("--set listen"), "{e}");

    let e = Config::load(&Sources { overrides: vec!["no-equals-sign".into()], ..Sources::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("KEY=VALUE"), "{e}");
}

#[test]
fn cross_key_rules_name_the_fix() {
    let file = temp_file("noauth.toml", "listen = \"127.0.0.1:7001\"\n");
    let e = Config::load(&Sources { file: Some(file), ..Sources::default() }).unwrap_err().to_string();
    assert!(e.contains("token.hmac_secret") && e.contains("allow_anonymous"), "{e}");

    let overrides = vec!["channels.named.chat.join_leave=true".into()];
    let e = Config::load(&Sources { overrides, ..Sources::default() }).unwrap_err().to_string();
    assert!(e.contains("channels.named.chat.presence = true"), "{e}");

    // Origin patterns are parsed where they are used, when the node is built (the
    // configuration imports nothing above it): `peregrine serve` stops there with the key.
    let overrides = vec!["allowed_origins=[\"example.com\"]".into()];
    let config = Config::load(&Sources { overrides, ..Sources::default() }).unwrap();
    let e = peregrine_server::node::Node::new(config).unwrap_err().to_string();
    assert!(e.contains("allowed_origins") && e.contains("example.com"), "{e}");

    let overrides = vec!["client.queue_max_bytes=10".into()];
    let e = Config::load(&Sources { overrides, ..Sources::default() }).unwrap_err().to_string();
    assert!(e.contains("raise queue_max_bytes"), "{e}");
}

#[test]
fn documented_example_parses() {
    let doc = include_str!("../../../docs/configuration.md");
    let start = doc.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    // The example's TLS files do not exist here: drop that section to check the rest.
    let without_tls =
        example.replace("[tls]\ncert = \"/etc/peregrine/cert.pem\"\nkey = \"/etc/peregrine/key.pem\"\n", "");
    let file = temp_file("doc-example.toml", &without_tls);
    let c = Config::load(&Sources { file: Some(file), ..Sources::default() })
        .expect("the documented example loads");
    assert_eq!(c.channels.named["chat"].history_size, 500);
    assert!(c.channels.named["team"].private);
    // And with the TLS section, the only complaint is the missing file.
    let file = temp_file("doc-example-tls.toml", example);
    let e = Config::load(&Sources { file: Some(file), ..Sources::default() }).unwrap_err().to_string();
    assert!(e.contains("tls.cert") && e.contains("no such file"), "{e}");
}

#[test]
fn secrets_never_show_in_debug_or_printed_config() {
    let overrides = vec!["api_key=\"k-123456\"".into(), "token.hmac_secret=\"h-654321\"".into()];
    let c = Config::load(&Sources { overrides, ..Sources::default() }).unwrap();
    assert_eq!(c.api_key.as_ref().unwrap().expose(), "k-123456");
    let debug = format!("{c:?}");
    let printed = c.redacted_toml();
    for shown in [&debug, &printed] {
        assert!(!shown.contains("k-123456") && !shown.contains("h-654321"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
