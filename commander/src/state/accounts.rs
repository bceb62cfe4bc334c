//! Forge accounts in the store: the options of a git-account target, and
//! its repositories as git targets (created, kept when gone upstream,
//! brought back when they return). What the forge lists is
//! [`crate::sources::forge`]'s; what to do with it is [`crate::sources`]'s.

use super::*;

/// Records the options of git-account target `target` (forge resolved).
pub fn add_account(tx: &Connection, target: &str, o: &ark_proto::AccountOptions) -> Result<()> {
    let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT OR REPLACE INTO accounts (target, forge, token_file, include, exclude, no_forks, no_archived, no_wikis)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            target,
            o.forge,
            o.token_file,
            list(&o.include),
            list(&o.exclude),
            o.no_forks,
            o.no_archived,
            o.no_wikis
        ],
    )?;
    Ok(())
}

/// The options of git-account target `target`, if it is one.
pub fn account_of(conn: &Connection, target: &str) -> Result<Option<ark_proto::AccountOptions>> {
    let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    Ok(conn
        .query_row(
            "SELECT forge, token_file, include, exclude, no_forks, no_archived, no_wikis
               FROM accounts WHERE target = ?1",
            [target],
            |r| {
                Ok(ark_proto::AccountOptions {
                    forge: r.get(0)?,
                    token_file: r.get(1)?,
                    include: list(r.get(2)?),
                    exclude: list(r.get(3)?),
                    no_forks: r.get(4)?,
                    no_archived: r.get(5)?,
                    no_wikis: r.get(6)?,
                })
            },
        )
        .optional()?)
}

/// A repository target of an account: its name, URL and why it is gone
/// (empty: listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRepo {
    pub name: String,
    pub url: String,
    pub gone: String,
}

/// The repository targets of `account`.
pub fn account_repos(conn: &Connection, account: &str) -> Result<Vec<AccountRepo>> {
    let mut stmt = conn
        .prepare_cached("SELECT name, url, gone FROM targets WHERE account = ?1 ORDER BY name")?;
    let rows = stmt.query_map([account], |r| {
        Ok(AccountRepo {
            name: r.get(0)?,
            url: r.get(1)?,
            gone: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks repository target `name` gone upstream (`why`), or listed again
/// (empty `why`).
pub fn set_gone(tx: &Connection, name: &str, why: &str) -> Result<()> {
    tx.execute(
        "UPDATE targets SET gone = ?2 WHERE name = ?1",
        params![name, why],
    )?;
    Ok(())
}
