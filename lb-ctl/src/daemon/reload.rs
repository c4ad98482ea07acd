//! Reloading the service file (on SIGHUP, or when [`super::watch`] sees it replaced or
//! changed and settled): a file that does not parse, or names addresses the director does not
//! own, is refused and the running config stays; a valid one replaces it, and the probes, the
//! quorum states and the MACs follow before the one apply.

use tokio::time::Instant;
use tracing::{error, info};

use super::{Daemon, RESOLVE_MIN};
use crate::config;

impl Daemon {
    /// Parses the file's `text` again; a valid one replaces the running config. Returns
    /// whether it did (then the caller hands the VRRP instances the new config).
    pub(super) fn reload(&mut self, text: Result<String, config::ConfigError>) -> bool {
        let file = self.opts.file.display().to_string();
        let config = text.and_then(|text| config::parse(&text, &file));
        let config = match config {
            Ok(c) => match crate::net::own_addresses::check(&c, &file, &self.ifindexes) {
                Ok(()) => c,
                Err(e) => {
                    let errors = format!("{e:#}").replace('\n', "; ");
                    self.live.reload(&file, "refused", errors.clone());
                    error!(file = %file, errors = %errors, "reload refused; the running config stays");
                    return false;
                }
            },
            Err(e) => {
                let diagnostics: Vec<String> =
                    e.diagnostics.iter().map(ToString::to_string).collect();
                self.live.reload(&file, "refused", diagnostics.join("; "));
                error!(
                    file = %self.opts.file.display(),
                    errors = %diagnostics.join("; "),
                    "reload refused: the file is not valid; the running config stays"
                );
                return false;
            }
        };
        if config == self.config {
            info!("reload: no changes");
            self.live.reload(&file, "unchanged", "no changes".into());
            return false;
        }
        if config.vrrp != self.config.vrrp
            || config.vrrp_scripts != self.config.vrrp_scripts
            || config.vrrp_sync_groups != self.config.vrrp_sync_groups
        {
            info!("reload: `vrrp:` changed; applied without a restart");
        }
        let sync_changed = config.sync != self.config.sync;
        self.config = config;
        if sync_changed {
            self.restart_sync();
        }
        self.sync_probes();
        self.reset_quorum();
        self.resolve();
        self.resolve_backoff = RESOLVE_MIN;
        self.resolve_due = Instant::now() + RESOLVE_MIN;
        self.apply("reload");
        self.live.reload(
            &file,
            "applied",
            format!("{} services", self.config.services.len()),
        );
        info!(
            services = self.config.services.len(),
            backends_checked = self.health_keys(),
            probes = self.probes.len(),
            "reloaded"
        );
        true
    }
}
