//! Upstream repositories built with the `git` CLI, for the tests of this
//! crate, of the commander's checks and of the whole swarm (one helper, not
//! three). Not used by the agent itself.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Refs;

/// Runs `git ARGS` in `dir` with a fixed identity and dates and no user
/// or system config; returns stdout, or an error carrying stderr.
pub fn git(dir: &Path, args: &[&str]) -> std::io::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Ark Test")
        .env("GIT_AUTHOR_EMAIL", "test@ark.invalid")
        .env("GIT_COMMITTER_NAME", "Ark Test")
        .env("GIT_COMMITTER_EMAIL", "test@ark.invalid")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "git {} in {} failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `git clone --mirror` of `up` into `root/name` (replacing what is
/// there): a mirror made by the git CLI, as the agent's `mirror` leaves it.
pub fn cli_mirror(root: &Path, up: &Upstream, name: &str) -> std::io::Result<PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    git(
        root,
        &[
            "clone",
            "-q",
            "--mirror",
            &up.bare.to_string_lossy(),
            &dir.to_string_lossy(),
        ],
    )?;
    Ok(dir)
}

/// The oracle for a landed mirror: `git fsck --full --strict` is clean
/// and `git clone` from it works. Returns the clone (in `into`).
pub fn fsck_and_clone(mirror: &Path, into: &Path) -> std::io::Result<PathBuf> {
    git(mirror, &["fsck", "--full", "--strict"])?;
    git(
        into.parent().unwrap_or(into),
        &[
            "clone",
            "-q",
            &mirror.to_string_lossy(),
            &into.to_string_lossy(),
        ],
    )?;
    Ok(into.to_path_buf())
}

/// `git ls-remote` of a repository (`HEAD` and peeled `^{}` lines left out).
pub fn ls_remote(repo: &Path) -> std::io::Result<Refs> {
    let text = git(repo, &["ls-remote", "."])?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, name)| name.starts_with("refs/") && !name.ends_with("^{}"))
        .map(|(id, name)| (name.to_string(), id.to_string()))
        .collect())
}

/// A bare upstream (`bare`) and the work clone that pushes to it (`work`).
#[derive(Debug)]
pub struct Upstream {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Upstream {
    /// An empty bare repository `root/NAME.git`.
    pub fn empty(root: &Path, name: &str) -> std::io::Result<Self> {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}.work"));
        std::fs::create_dir_all(&bare)?;
        git(&bare, &["init", "--bare", "-q", "-b", "main"])?;
        git(
            root,
            &[
                "clone",
                "-q",
                &bare.to_string_lossy(),
                &work.to_string_lossy(),
            ],
        )?;
        git(&work, &["symbolic-ref", "HEAD", "refs/heads/main"])?;
        Ok(Self { bare, work })
    }

    /// A bare upstream with branches `main` and `feature`, a nested
    /// directory, a lightweight tag, an annotated tag, a tag of that tag,
    /// a tag of a tree, and a notes ref.
    pub fn populated(root: &Path, name: &str) -> std::io::Result<Self> {
        let up = Self::empty(root, name)?;
        up.commit("README", "hello\n")?;
        up.commit("src/lib/a.txt", "a\n")?;
        up.commit("src/lib/b.txt", "b\n")?;
        git(&up.work, &["tag", "v1"])?;
        git(&up.work, &["tag", "-a", "v2", "-m", "release 2"])?;
        git(
            &up.work,
            &["tag", "-a", "v2-signed-off", "v2", "-m", "tag of a tag"],
        )?;
        git(
            &up.work,
            &["tag", "-a", "tree-tag", "HEAD^{tree}", "-m", "a tree"],
        )?;
        git(&up.work, &["notes", "add", "-m", "a note"])?;
        git(&up.work, &["checkout", "-q", "-b", "feature"])?;
        up.commit("src/lib/a.txt", "a on feature\n")?;
        git(&up.work, &["checkout", "-q", "main"])?;
        up.commit("src/main.txt", "main\n")?;
        up.push()?;
        Ok(up)
    }

    /// Commits `content` to `path` on the current branch (not pushed).
    pub fn commit(&self, path: &str, content: &str) -> std::io::Result<()> {
        let file = self.work.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, content)?;
        git(&self.work, &["add", "-A"])?;
        git(
            &self.work,
            &["commit", "-q", "-m", &format!("change {path}")],
        )?;
        Ok(())
    }

    /// Force-pushes every branch, tag and note, and prunes deleted ones.
    pub fn push(&self) -> std::io::Result<()> {
        git(
            &self.work,
            &[
                "push",
                "-q",
                "--force",
                "--prune",
                "origin",
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
                "+refs/notes/*:refs/notes/*",
            ],
        )?;
        Ok(())
    }

    /// Rewrites the tip of `branch` (a force-push after `push`).
    pub fn rewrite(&self, branch: &str) -> std::io::Result<()> {
        git(&self.work, &["checkout", "-q", branch])?;
        git(&self.work, &["commit", "-q", "--amend", "-m", "rewritten"])?;
        git(&self.work, &["checkout", "-q", "main"])?;
        Ok(())
    }

    /// Deletes `branch` locally (gone upstream after `push`).
    pub fn delete_branch(&self, branch: &str) -> std::io::Result<()> {
        git(&self.work, &["checkout", "-q", "main"])?;
        git(&self.work, &["branch", "-q", "-D", branch])?;
        Ok(())
    }

    /// The upstream's refs as `git ls-remote` reports them.
    pub fn refs(&self) -> std::io::Result<Refs> {
        ls_remote(&self.bare)
    }
}
