//! Key reload (SIGHUP): re-reads the config file's `[auth] keys` and
//! installs them in the datapath. Any problem keeps the keys in use (a
//! failed reload never drops a key) and is logged.

use hb_common::admission::Unauthenticated;

use crate::{config::Config, datapath::Datapath, keys::Keyring};

/// Reloads the keys; returns the new key ids if they were installed.
pub fn reload_keys(config: &Config, datapath: &mut Datapath) -> Option<Vec<u8>> {
    let Some(path) = &config.loaded_from else {
        tracing::warn!("SIGHUP: no config file to reload the keys from; keys unchanged");
        return None;
    };
    let reloaded = match Config::load(path, &Default::default()) {
        Ok(reloaded) => reloaded,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keys unchanged");
            return None;
        }
    };
    if reloaded.auth.unauthenticated() != config.auth.unauthenticated() {
        tracing::warn!(
            "SIGHUP: whether unauthenticated heartbeats are accepted changes only with a restart; \
             reloading the keys alone"
        );
    }
    let keyring = match Keyring::load(&reloaded.auth.keys) {
        Ok(keyring) => keyring,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keys unchanged");
            return None;
        }
    };
    if keyring.is_empty() && config.auth.unauthenticated() == Unauthenticated::Refuse {
        tracing::error!(
            "SIGHUP: [auth] keys is now empty, which would refuse every heartbeat; keys unchanged"
        );
        return None;
    }
    if let Err(e) = datapath.set_keys(&keyring.slots()) {
        tracing::error!("SIGHUP: installing the keys: {:#}", anyhow::Error::from(e));
        return None;
    }
    tracing::info!(key_ids = ?keyring.ids(), "SIGHUP: keys reloaded");
    Some(keyring.ids())
}
