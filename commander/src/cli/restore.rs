//! `ark-commander restore --from s3://bucket/prefix`: brings up a standby
//! commander in an empty data dir from the state Litestream replicated to
//! the archive's store, and the PKI backed up beside it (see
//! [`crate::replica`]). Then `serve` it: agents reconnect (same CA, same
//! identities), and its first recovery pass reconciles the store with the
//! restored ledger.

use std::path::Path;

use crate::config::CommanderConfig;

#[derive(Debug, clap::Args)]
pub struct RestoreCmd {
    /// The archive the lost commander replicated to (its `archive`).
    #[arg(long)]
    from: String,
    #[arg(long)]
    json: bool,
}

impl RestoreCmd {
    pub fn run(self, data: &Path) -> anyhow::Result<()> {
        let config = CommanderConfig::load(data)?;
        let restored = crate::replica::restore(&config, data, &self.from)?;
        // The restored state is opened once here: its schema brought up to
        // this build's, and a clear error now rather than at `serve`.
        let store = crate::state::Store::open(&restored.state)?;
        let (versions, bytes, _) = store.read(crate::archive::totals)?;
        if self.json {
            super::output::print_json(&serde_json::json!({
                "state": restored.state,
                "pki_files": restored.pki_files,
                "landed_versions": versions,
                "landed_bytes": bytes,
            }))?;
        } else {
            println!(
                "restored {} ({} landed versions, {}) and {} PKI files from {}; start it with `ark-commander --data {} serve`",
                restored.state.display(),
                versions,
                super::output::human_bytes(bytes),
                restored.pki_files,
                self.from,
                data.display()
            );
        }
        Ok(())
    }
}
