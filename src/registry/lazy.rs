//! The one registry client of a process, made on first use: a command that never
//! talks to a registry (an image in the store, a local source) never builds one (which
//! reads credentials and mirror configuration, and starts reqwest's runtime thread),
//! and every part of a command that does shares the same one, with its tokens and the
//! schemes it found.

use super::client::{Client, ClientOptions};
use super::error::RegistryError;
use std::sync::{Arc, OnceLock};

pub struct LazyClient {
    options: ClientOptions,
    client: OnceLock<Arc<Client>>,
}

impl LazyClient {
    pub fn new(options: ClientOptions) -> LazyClient {
        LazyClient { options, client: OnceLock::new() }
    }

    /// The client, built now if this is the first call. A failed build is not kept:
    /// the next call tries again.
    pub fn get(&self) -> Result<Arc<Client>, RegistryError> {
        if let Some(c) = self.client.get() {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(Client::new(self.options.clone())?);
        Ok(Arc::clone(self.client.get_or_init(|| c)))
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }
}
