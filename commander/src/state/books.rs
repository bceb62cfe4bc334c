//! Kiwix books in the store: which zim targets follow a book, the listing's
//! validators and the newest release seen upstream (what to harvest is
//! [`crate::sources`]'s decision).

use super::*;

/// A book target's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    pub target: String,
    /// The book's name without its date (`wikipedia_en_all_nopic`).
    pub book: String,
    /// The listing (Kiwix mirror directory or OPDS catalog): the target's URL.
    pub listing: String,
    /// The listing's validators, for a conditional request.
    pub etag: String,
    pub last_modified: String,
    /// The newest release seen upstream (name, URL, published SHA-256 and
    /// where it was published).
    pub newest: String,
    pub newest_url: String,
    pub newest_sha256: String,
    pub newest_source: String,
    /// When the listing was last read (None: never).
    pub checked_at: Option<i64>,
}

/// Records that `target` follows `book`.
pub fn add_book(tx: &Connection, target: &str, book: &str) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO books (target, book) VALUES (?1, ?2)",
        params![target, book],
    )?;
    Ok(())
}

/// The book `target` follows, if it follows one.
pub fn book_of(conn: &Connection, target: &str) -> Result<Option<Book>> {
    Ok(conn
        .query_row(
            "SELECT b.target, b.book, t.url, b.etag, b.last_modified, b.newest, b.newest_url,
                    b.newest_sha256, b.newest_source, b.checked_at
               FROM books b JOIN targets t ON t.name = b.target WHERE b.target = ?1",
            [target],
            |r| {
                Ok(Book {
                    target: r.get(0)?,
                    book: r.get(1)?,
                    listing: r.get(2)?,
                    etag: r.get(3)?,
                    last_modified: r.get(4)?,
                    newest: r.get(5)?,
                    newest_url: r.get(6)?,
                    newest_sha256: r.get(7)?,
                    newest_source: r.get(8)?,
                    checked_at: r.get(9)?,
                })
            },
        )
        .optional()?)
}

/// Records a read of the listing (validators, newest release) at `now`.
pub fn book_checked(tx: &Connection, b: &Book, now: i64) -> Result<()> {
    tx.execute(
        "UPDATE books SET etag = ?2, last_modified = ?3, newest = ?4, newest_url = ?5,
           newest_sha256 = ?6, newest_source = ?7, checked_at = ?8, reason = '' WHERE target = ?1",
        params![
            b.target,
            b.etag,
            b.last_modified,
            b.newest,
            b.newest_url,
            b.newest_sha256,
            b.newest_source,
            now
        ],
    )?;
    Ok(())
}

/// The URL of the version of `target` landed last, if any.
pub fn landed_url(conn: &Connection, target: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT url FROM versions WHERE target = ?1 AND state = 'landed' ORDER BY id DESC LIMIT 1",
            [target],
            |r| r.get(0),
        )
        .optional()?)
}
