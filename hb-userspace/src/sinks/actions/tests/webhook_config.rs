//! `kind = "webhook"` in `[[actions]]`: what parses, and the messages of
//! what does not (each names the field and the fix). Also the
//! authorization file's checks.

use std::{io::Write, os::unix::fs::PermissionsExt};

use hyper::header::HeaderValue;

use super::*;
use crate::{
    config::{Config, ConfigError},
    sinks::actions::webhook::{
        AuthorizationError, WebhookConfig, WebhookProblem, check_authorization_files,
        read_authorization,
    },
};

const BASE: &str =
    "interfaces = [\"eth0\"]\n[[actions]]\nname = \"notify\"\non = [\"down\", \"up\"]\n";

/// The config `BASE` plus `body`, parsed and validated.
fn load(body: &str) -> Result<Config, ConfigError> {
    let config = Config::parse(&format!("{BASE}{body}"), "test.toml")?;
    config.validate()?;
    Ok(config)
}

/// The webhook problem `body` is refused for, checked to name the action.
fn problem(body: &str) -> (WebhookProblem, String) {
    match load(body) {
        Ok(config) => panic!("accepted: {:?}\n{body}", config.actions),
        Err(ConfigError::Webhook { action, problem }) => {
            assert_eq!(action, "notify");
            let message = ConfigError::Webhook {
                action,
                problem: problem.clone(),
            }
            .to_string();
            assert!(message.starts_with("action `notify`: "), "{message}");
            (problem, message)
        }
        Err(other) => panic!("{other:?}, not a webhook problem\n{body}"),
    }
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
}

#[test]
fn a_full_webhook_parses() {
    let config = load(
        "kind = \"webhook\"\nurl = \"https://hooks.example.net:8443/hb?x=1\"\n\
         headers = { \"X-Team\" = \"infra\", \"X-Env\" = \"prod\" }\n\
         authorization_file = \"/etc/hb/webhook.auth\"\ntimeout = \"5s\"\nretries = 10\nbatch = true\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let action = &config.actions[0];
    assert!(action.batch);
    assert_eq!(action.timeout, Duration::from_secs(5));
    let ActionRun::Webhook(hook) = &action.run else {
        panic!("not a webhook: {:?}", action.run);
    };
    assert_eq!(hook.url, "https://hooks.example.net:8443/hb?x=1");
    let headers: Vec<(&str, &str)> = hook
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().expect("ASCII")))
        .collect();
    assert_eq!(headers, [("x-env", "prod"), ("x-team", "infra")]);
    assert_eq!(
        hook.authorization_file.as_deref(),
        Some(Path::new("/etc/hb/webhook.auth"))
    );
    assert_eq!(hook.retries, 10);
    assert_eq!(hook.target(), "https://hooks.example.net:8443");

    // The defaults: 3 retries, the actions' timeout, one POST per event.
    let config = load("kind = \"webhook\"\nurl = \"http://127.0.0.1:9000/hb\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let action = &config.actions[0];
    assert_eq!(
        action.run,
        ActionRun::Webhook(WebhookConfig::new("http://127.0.0.1:9000/hb").expect("url"))
    );
    assert_eq!(action.timeout, crate::config::DEFAULT_ACTION_TIMEOUT);
    assert!(!action.batch);
    // `kind = "exec"` is the default, and may be written.
    let config = load("kind = \"exec\"\nshell = \"true\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.actions[0].run, ActionRun::Shell("true".into()));
}

#[test]
fn a_webhook_needs_a_good_url() {
    let (p, message) = problem("kind = \"webhook\"\n");
    assert_eq!(p, WebhookProblem::UrlMissing);
    assert_mentions(&message, &["`url`", "url = \"https://"]);
    let cases = [
        ("ftp://example.net/hb", "has the scheme \"ftp\""),
        ("example.net/hb", "is not a URL"),
        ("example.net", "has no scheme"),
        ("http://", "is not a URL"),
        ("not a url", "is not a URL"),
        ("/hb", "has no scheme"),
    ];
    for (url, reason) in cases {
        let (p, message) = problem(&format!("kind = \"webhook\"\nurl = {url:?}\n"));
        assert!(matches!(p, WebhookProblem::BadUrl { .. }), "{url}: {p:?}");
        assert_mentions(&message, &["`url`", url, reason, "http or https"]);
    }
    let (p, message) = problem("kind = \"webhook\"\nurl = \"https://me:pw@example.net/hb\"\n");
    assert_eq!(p, WebhookProblem::UrlUserinfo);
    assert_mentions(&message, &["`url`", "`authorization_file`"]);
    assert!(!message.contains("pw"), "{message}");
}

#[test]
fn a_webhook_runs_no_program_and_an_exec_action_posts_nothing() {
    for field in ["command = [\"/bin/true\"]", "shell = \"true\""] {
        let (p, message) = problem(&format!(
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9000/\"\n{field}\n"
        ));
        assert!(matches!(p, WebhookProblem::ProgramGiven { .. }), "{p:?}");
        let name = field.split(' ').next().expect("field name");
        assert_mentions(
            &message,
            &[&format!("`{name}`"), "kind = \"webhook\"", "remove"],
        );
    }
    let webhook_fields = [
        ("url", "url = \"http://127.0.0.1:9000/\""),
        ("headers", "headers = { \"X-Team\" = \"infra\" }"),
        ("authorization_file", "authorization_file = \"/etc/hb/a\""),
        ("retries", "retries = 1"),
    ];
    for (name, field) in webhook_fields {
        let (p, message) = problem(&format!("shell = \"true\"\n{field}\n"));
        assert!(matches!(p, WebhookProblem::NotAWebhook { .. }), "{p:?}");
        assert_mentions(
            &message,
            &[&format!("`{name}`"), "`exec`", "kind = \"webhook\""],
        );
    }
}

#[test]
fn retries_headers_and_the_authorization_file_are_checked() {
    let url = "kind = \"webhook\"\nurl = \"http://127.0.0.1:9000/\"\n";
    let (p, message) = problem(&format!("{url}retries = 11\n"));
    assert_eq!(p, WebhookProblem::TooManyRetries { retries: 11 });
    assert_mentions(&message, &["`retries` is 11", "at most 10"]);

    let (p, message) = problem(&format!("{url}authorization_file = \"\"\n"));
    assert_eq!(p, WebhookProblem::AuthorizationFileEmpty);
    assert_mentions(&message, &["`authorization_file`", "/etc/hb/webhook.auth"]);

    let cases = [
        ("\"Authorization\" = \"Bearer x\"", "`authorization_file`"),
        ("\"proxy-authorization\" = \"x\"", "`authorization_file`"),
        ("\"Content-Type\" = \"text/plain\"", "hb sets itself"),
        ("\"Host\" = \"x\"", "hb sets itself"),
        ("\"X Team\" = \"x\"", "not a valid header name"),
        ("\"X-Team\" = \"a\\nb\"", "not a valid header value"),
    ];
    for (header, needle) in cases {
        let (_, message) = problem(&format!("{url}headers = {{ {header} }}\n"));
        assert_mentions(&message, &["`headers`", needle]);
        assert!(!message.contains("Bearer"), "{message}");
    }
}

/// A mode-0600 file (owned by root: the tests run as root) with `bytes`.
fn auth_file(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path(name);
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(bytes).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

#[test]
fn the_authorization_file_is_checked_like_a_key_file() {
    let dir = TempDir::new("webhook-auth");
    let good = auth_file(&dir, "good", b"  Bearer abc.def\n");
    let value = read_authorization(&good).expect("a good file");
    assert_eq!(value, HeaderValue::from_static("Bearer abc.def"));
    assert!(value.is_sensitive());

    let open = auth_file(&dir, "open", b"Bearer abc.def");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let cases: [(PathBuf, &[&str]); 4] = [
        (
            open,
            &["webhook authorization file", "mode 0644", "chmod 600"],
        ),
        (dir.path("absent"), &["does not exist", "printf"]),
        (auth_file(&dir, "empty", b" \n"), &["it is empty"]),
        (
            auth_file(&dir, "control", b"Bearer abc\x01def"),
            &["a header cannot carry"],
        ),
    ];
    for (path, needles) in cases {
        let message = read_authorization(&path).expect_err("refused").to_string();
        assert_mentions(&message, needles);
        assert_mentions(&message, &[&path.display().to_string()]);
        assert!(!message.contains("abc"), "{message} shows the value");
    }

    // What the agent checks at start, --check-config and reload.
    let mut hook = WebhookConfig::new("http://127.0.0.1:9000/").expect("url");
    hook.authorization_file = Some(dir.path("absent"));
    let action = ActionConfig {
        name: "notify".into(),
        on: vec![Event::Down],
        run: ActionRun::Webhook(hook),
        timeout: Duration::from_secs(1),
        batch: false,
    };
    let error = check_authorization_files(std::slice::from_ref(&action)).expect_err("absent");
    assert!(matches!(error, AuthorizationError::File(_)), "{error:?}");
    let ActionRun::Webhook(hook) = &action.run else {
        unreachable!()
    };
    let mut good_hook = hook.clone();
    good_hook.authorization_file = Some(good);
    check_authorization_files(&[ActionConfig {
        run: ActionRun::Webhook(good_hook),
        ..action
    }])
    .expect("a good file");
}
