//! A webhook action's settings: [`WebhookFields`] as written in
//! `[[actions]]`, checked into a [`WebhookConfig`], and what can be wrong
//! with them ([`WebhookProblem`], each message naming the field and the
//! fix).

use std::{collections::BTreeMap, path::PathBuf};

use hyper::{
    Uri,
    header::{
        AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, HeaderValue,
        PROXY_AUTHORIZATION, TRANSFER_ENCODING,
    },
};

/// Retries after a failed first attempt, unless `retries` says otherwise.
pub const DEFAULT_RETRIES: u32 = 3;
/// The most retries accepted: with the backoff capped at 10 s, ten retries
/// already hold a run (and its node's later events) for over a minute plus
/// eleven timeouts.
pub const MAX_RETRIES: u32 = 10;

/// What a webhook action posts to, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// An `http` or `https` URL with a host, without user or password.
    pub url: Uri,
    /// Sent with every request, in this order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Holds the `Authorization` header's value; read at every run.
    pub authorization_file: Option<PathBuf>,
    /// Attempts after the first; at most [`MAX_RETRIES`] in a valid config.
    pub retries: u32,
}

impl WebhookConfig {
    /// A webhook posting to `url` with no extra header, no authorization
    /// and [`DEFAULT_RETRIES`].
    pub fn new(url: &str) -> Result<Self, WebhookProblem> {
        Ok(Self {
            url: parse_url(url)?,
            headers: Vec::new(),
            authorization_file: None,
            retries: DEFAULT_RETRIES,
        })
    }

    /// The checks of values that parse but cannot work (made by
    /// `Config::validate`, like the exec actions' own).
    pub fn validate(&self) -> Result<(), WebhookProblem> {
        if self.retries > MAX_RETRIES {
            return Err(WebhookProblem::TooManyRetries {
                retries: self.retries,
            });
        }
        if self
            .authorization_file
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(WebhookProblem::AuthorizationFileEmpty);
        }
        Ok(())
    }

    /// `scheme://host[:port]`, for the logs: a URL's path may hold a
    /// secret (many chat services put the hook's token there).
    pub(crate) fn target(&self) -> String {
        let scheme = self.url.scheme_str().unwrap_or("http");
        let authority = self.url.authority().map_or("", |a| a.as_str());
        format!("{scheme}://{authority}")
    }
}

/// The webhook fields of an `[[actions]]` table, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookFields {
    pub url: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub authorization_file: Option<PathBuf>,
    pub retries: Option<u32>,
}

impl WebhookFields {
    /// The settings of a `kind = "webhook"` action.
    pub fn into_config(self) -> Result<WebhookConfig, WebhookProblem> {
        let url = self.url.ok_or(WebhookProblem::UrlMissing)?;
        let headers = self
            .headers
            .into_iter()
            .map(|(name, value)| header(&name, &value))
            .collect::<Result<_, _>>()?;
        Ok(WebhookConfig {
            url: parse_url(&url)?,
            headers,
            authorization_file: self.authorization_file,
            retries: self.retries.unwrap_or(DEFAULT_RETRIES),
        })
    }

    /// For an action of another kind: refuses the first webhook field
    /// given, which would otherwise be silently ignored.
    pub fn refuse_for(&self, kind: &'static str) -> Result<(), WebhookProblem> {
        let given = [
            ("url", self.url.is_some()),
            ("headers", !self.headers.is_empty()),
            ("authorization_file", self.authorization_file.is_some()),
            ("retries", self.retries.is_some()),
        ];
        match given.iter().find(|(_, given)| *given) {
            Some(&(field, _)) => Err(WebhookProblem::NotAWebhook { field, kind }),
            None => Ok(()),
        }
    }
}

/// What can be wrong with a webhook action's settings. The messages follow
/// "action `NAME`: " ([`crate::config::ConfigError::Webhook`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookProblem {
    #[error(
        "`kind = \"webhook\"` needs `url`: give the address to POST the events to, e.g. url = \"https://hooks.example.net/hb\""
    )]
    UrlMissing,
    #[error(
        "`url` {url:?} {reason}: give an http or https URL with a host, e.g. url = \"http://127.0.0.1:9000/hb\""
    )]
    BadUrl { url: String, reason: String },
    #[error(
        "`url` holds a user or password, which would not be sent and would show in logs: remove it and put the credentials in `authorization_file`"
    )]
    UrlUserinfo,
    #[error(
        "`{field}` is given with `kind = \"webhook\"`, which runs no program: remove `{field}` (or remove `kind` to run the program)"
    )]
    ProgramGiven { field: &'static str },
    #[error(
        "`{field}` is a webhook setting, but the action is of kind `{kind}`: add kind = \"webhook\" or remove `{field}`"
    )]
    NotAWebhook {
        field: &'static str,
        kind: &'static str,
    },
    #[error(
        "`headers`: {name:?} is not a valid header name: use letters, digits and '-', e.g. \"X-Team\""
    )]
    HeaderName { name: String },
    #[error(
        "`headers`: the value of {name:?} is not a valid header value: use visible ASCII and spaces, no line breaks"
    )]
    HeaderValue { name: String },
    #[error(
        "`headers` sets {name:?}, a credential, in the config file: put the value in a root-owned mode-0600 file and name it in `authorization_file`"
    )]
    CredentialHeader { name: String },
    #[error("`headers` sets {name:?}, which hb sets itself: remove it")]
    ReservedHeader { name: String },
    #[error(
        "`retries` is {retries}: set it to at most {MAX_RETRIES} (attempts after the first; the waits between them grow 0.5 s, 1 s, 2 s ... up to 10 s)"
    )]
    TooManyRetries { retries: u32 },
    #[error(
        "`authorization_file` is empty: give the path of the file holding the Authorization header's value, e.g. authorization_file = \"/etc/hb/webhook.auth\", or remove the setting"
    )]
    AuthorizationFileEmpty,
}

/// Checks `url`: http or https, a host, no user or password.
fn parse_url(url: &str) -> Result<Uri, WebhookProblem> {
    let bad = |reason: &str| WebhookProblem::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&format!("is not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(bad(&format!("has the scheme {other:?}"))),
        None => return Err(bad("has no scheme")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(WebhookProblem::UrlUserinfo);
    }
    if authority.host().is_empty() {
        return Err(bad("has no host"));
    }
    Ok(uri)
}

/// One configured header, refusing the ones hb sets and credentials.
fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), WebhookProblem> {
    let parsed =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| WebhookProblem::HeaderName {
            name: name.to_owned(),
        })?;
    if parsed == AUTHORIZATION || parsed == PROXY_AUTHORIZATION {
        return Err(WebhookProblem::CredentialHeader {
            name: name.to_owned(),
        });
    }
    if [CONTENT_TYPE, CONTENT_LENGTH, HOST, TRANSFER_ENCODING].contains(&parsed) {
        return Err(WebhookProblem::ReservedHeader {
            name: name.to_owned(),
        });
    }
    let value = HeaderValue::from_str(value).map_err(|_| WebhookProblem::HeaderValue {
        name: name.to_owned(),
    })?;
    Ok((parsed, value))
}
