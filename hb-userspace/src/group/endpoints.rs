//! Which etcd member a monitor talks to: one at a time, the next one after
//! any failure. A client balancing over every member keeps sending some
//! requests to a member that is cut off (its connection is not closed, only
//! silent) until HTTP/2 pings notice, seconds later; like etcd's own Go
//! client, hb instead talks to one member and moves on at the first request
//! that fails or does not answer within `request_timeout`. A member that
//! lost its quorum answers at once with an error (requests are sent with
//! `require_leader`), so it is left at once too.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// The members, the one in use and its client.
pub struct Endpoints {
    urls: Vec<String>,
    options: ConnectOptions,
    timeout: Duration,
    current: usize,
    client: Option<Client>,
}

impl Endpoints {
    /// Starts with member `first` (modulo their number).
    pub fn new(
        urls: Vec<String>,
        options: ConnectOptions,
        timeout: Duration,
        first: usize,
    ) -> Self {
        let current = first % urls.len().max(1);
        Endpoints {
            urls,
            options,
            timeout,
            current,
            client: None,
        }
    }

    /// The client of the member in use, connected if need be (within the
    /// request timeout).
    pub async fn client(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            let url = self.urls[self.current].clone();
            let connect = Client::connect([url.as_str()], Some(self.options.clone()));
            let client = tokio::time::timeout(self.timeout, connect)
                .await
                .map_err(|_| format!("connecting to {url}: no answer within {:?}", self.timeout))?
                .map_err(|e| format!("connecting to {url}: {e}"))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// The client in use, if connected.
    pub fn connected(&mut self) -> Option<&mut Client> {
        self.client.as_mut()
    }

    /// The member in use.
    pub fn url(&self) -> &str {
        &self.urls[self.current]
    }

    /// Another handle on the same members, starting with the one in use
    /// (known to answer), with a connection of its own.
    pub fn fork(&self) -> Self {
        Endpoints::new(
            self.urls.clone(),
            self.options.clone(),
            self.timeout,
            self.current,
        )
    }

    /// A request to the member in use failed: the next request goes to the
    /// next member.
    pub fn failed(&mut self) {
        self.client = None;
        self.current = (self.current + 1) % self.urls.len().max(1);
    }
}
