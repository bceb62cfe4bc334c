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

/// Text files of [`Upstream::delta_heavy`]: few, so each is edited often.
pub const DELTA_HEAVY_FILES: usize = 3;

/// Bytes of the packs in `repo`'s `objects/pack` (what it would serve).
pub fn pack_bytes(repo: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(repo.join("objects/pack"))? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "pack") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
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
        std::fs::create_dir_all(&bare)?;
        git(&bare, &["init", "--bare", "-q", "-b", "main"])?;
        let up = Self::with_work(root, name, bare)?;
        git(&up.work, &["symbolic-ref", "HEAD", "refs/heads/main"])?;
        Ok(up)
    }

    /// `bare` with its work clone `root/NAME.work`.
    fn with_work(root: &Path, name: &str, bare: PathBuf) -> std::io::Result<Self> {
        let work = root.join(format!("{name}.work"));
        git(
            root,
            &[
                "clone",
                "-q",
                &bare.to_string_lossy(),
                &work.to_string_lossy(),
            ],
        )?;
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

    /// A bare upstream where deltas matter: `commits` commits on `main`,
    /// each editing a few lines of one of [`DELTA_HEAVY_FILES`] text files
    /// of ~100 KiB (written with `git fast-import`, then `git repack -adf`
    /// so it is served from one deltified pack, as a real host serves it).
    /// The work clone is made afterwards, so `commit` and `push` extend it.
    pub fn delta_heavy(root: &Path, name: &str, commits: usize) -> std::io::Result<Self> {
        use std::io::Write;
        let bare = root.join(format!("{name}.git"));
        std::fs::create_dir_all(&bare)?;
        git(&bare, &["init", "--bare", "-q", "-b", "main"])?;
        // A fixed LCG: the same repository on every run.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |below: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as usize) % below
        };
        let mut files: Vec<Vec<String>> = (0..DELTA_HEAVY_FILES)
            .map(|f| {
                (0..2_000)
                    .map(|l| format!("file {f} line {l}: {}", next(1 << 30)))
                    .collect()
            })
            .collect();
        let mut stream = Vec::new();
        for n in 0..commits {
            let f = n % DELTA_HEAVY_FILES;
            for _ in 0..1 + next(4) {
                let at = next(files[f].len());
                files[f][at] = format!("edited in commit {n}: {}", next(1 << 30));
            }
            let body = files[f].join(
                "
",
            ) + "
";
            write!(
                stream,
                "blob
mark :{}
data {}
{body}
",
                n + 1,
                body.len()
            )?;
            let when = 1_700_000_000 + n * 60;
            let message = format!(
                "edit f{f} ({n})
"
            );
            write!(
                stream,
                "commit refs/heads/main\nauthor Ark Test <test@ark.invalid> {when} +0000\n\
                 committer Ark Test <test@ark.invalid> {when} +0000\ndata {}\n{message}",
                message.len()
            )?;
            if n == 0 {
                // The first commit holds every file (later ones inherit them).
                for (k, lines) in files.iter().enumerate().filter(|(k, _)| *k != f) {
                    let other = lines.join(
                        "
",
                    ) + "
";
                    write!(
                        stream,
                        "M 100644 inline f{k}.txt
data {}
{other}
",
                        other.len()
                    )?;
                }
                write!(
                    stream,
                    "M 100644 inline README
data 6
hello

"
                )?;
            }
            write!(
                stream,
                "M 100644 :{} f{f}.txt

",
                n + 1
            )?;
        }
        let mut child = Command::new("git")
            .args(["fast-import", "--quiet"])
            .current_dir(&bare)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("git fast-import has no stdin"))?
            .write_all(&stream)?;
        if !child.wait()?.success() {
            return Err(std::io::Error::other("git fast-import failed"));
        }
        git(&bare, &["repack", "-adfq"])?;
        Self::with_work(root, name, bare)
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
