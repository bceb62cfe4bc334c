//! `ark-commander show-config`: the effective configuration as TOML.

use std::path::Path;

use super::serve::ConfigOverrides;

pub fn run(data: &Path, overrides: ConfigOverrides) -> anyhow::Result<()> {
    print!("{}", overrides.apply(data)?.to_toml());
    Ok(())
}
