//! The commander's deep check of a ZIM file, before it may land: the
//! structural checks libzim calls integrity checks — checksum, dirent
//! pointers, dirent order, title index, cluster pointers, cluster offsets,
//! dirent mimetypes — for format 5.x and 6.x (6.3 may have no v0 title
//! index, which is then skipped). Pure Rust: the default build needs
//! neither libzim nor its GPL binding (see the README).
//!
//! Memory stays bounded whatever the archive's size: the tables are read
//! with positional reads as they are walked, and a compressed cluster is
//! decompressed under a cap.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ark_core::formats::zim::{Header, StreamCheck, HEADER_LEN};

/// Problems reported per file before the check stops listing them.
const MAX_PROBLEMS: usize = 20;
/// Largest decompressed cluster accepted (libzim writes ~2 MiB clusters).
const MAX_CLUSTER: u64 = 256 << 20;
/// Longest dirent read (path + title + parameters).
const DIRENT_WINDOW: usize = 64 * 1024;

const REDIRECT: u16 = 0xffff;
const LINK_TARGET: u16 = 0xfffe;
const DELETED: u16 = 0xfffd;

/// The verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZimReport {
    pub header: Option<Header>,
    pub entries: u32,
    pub clusters: u32,
    /// Empty when the file is sound.
    pub problems: Vec<String>,
}

impl ZimReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
    /// One line for a person.
    pub fn reason(&self) -> String {
        self.problems.join("; ")
    }
}

struct Dirent {
    mimetype: u16,
    namespace: u8,
    /// Cluster and blob, or redirect target index.
    cluster_or_target: u32,
    blob: u32,
    path: Vec<u8>,
    title: Vec<u8>,
}

impl Dirent {
    fn title_key(&self) -> (u8, &[u8]) {
        let title = if self.title.is_empty() {
            &self.path
        } else {
            &self.title
        };
        (self.namespace, title.as_slice())
    }
    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.namespace as char,
            String::from_utf8_lossy(&self.path)
        )
    }
}

struct Reader<'a> {
    file: &'a std::fs::File,
    header: Header,
}

impl Reader<'_> {
    fn bytes(&self, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, at)?;
        Ok(buf)
    }
    fn u64(&self, at: u64) -> std::io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.bytes(at, 8)?.try_into().unwrap_or_default(),
        ))
    }
    fn u32(&self, at: u64) -> std::io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.bytes(at, 4)?.try_into().unwrap_or_default(),
        ))
    }

    fn dirent_ptr(&self, index: u32) -> std::io::Result<u64> {
        self.u64(self.header.path_ptr_pos + 8 * u64::from(index))
    }

    /// Parses the dirent at `at`; Err names what is wrong.
    fn dirent(&self, at: u64, data_start: u64) -> Result<Dirent, String> {
        let end = self.header.checksum_pos;
        if at < data_start || at + 12 > end {
            return Err(format!(
                "points at {at}, outside the dirent area ({data_start}..{end})"
            ));
        }
        let len = ((end - at) as usize).min(DIRENT_WINDOW);
        let b = self.bytes(at, len).map_err(|e| e.to_string())?;
        let mimetype = u16::from_le_bytes([b[0], b[1]]);
        let parameter_len = b[2] as usize;
        let namespace = b[3];
        let fixed = if mimetype == REDIRECT { 12 } else { 16 };
        if b.len() < fixed + 2 {
            return Err(format!(
                "dirent at {at} is cut short by the end of the data"
            ));
        }
        let cluster_or_target = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
        let blob = if mimetype == REDIRECT {
            0
        } else {
            u32::from_le_bytes(b[12..16].try_into().unwrap_or_default())
        };
        let rest = &b[fixed..];
        let path_end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| format!("dirent at {at}: its path is not terminated"))?;
        let after = &rest[path_end + 1..];
        let title_end = after
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| format!("dirent at {at}: its title is not terminated"))?;
        if after.len() < title_end + 1 + parameter_len {
            return Err(format!("dirent at {at}: its parameters run past the data"));
        }
        Ok(Dirent {
            mimetype,
            namespace,
            cluster_or_target,
            blob,
            path: rest[..path_end].to_vec(),
            title: after[..title_end].to_vec(),
        })
    }
}

/// Runs every check on the file at `path`.
///
/// Long by design: one pass over the format's sections in file order
/// (header, checksum, mimetypes, pointer lists, dirents, clusters), each
/// refusal with its own message; split, the reader state would travel
/// between a dozen functions.
pub fn check(path: &Path) -> std::io::Result<ZimReport> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut report = ZimReport {
        header: None,
        entries: 0,
        clusters: 0,
        problems: Vec::new(),
    };
    // The header, the layout and the checksum: the same streaming check the
    // agent ran, repeated here on the commander's own copy.
    let mut stream = StreamCheck::new();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Err(e) = stream.update(&buf[..n]) {
            report.problems.push(e.0);
            return Ok(report);
        }
    }
    let header = match stream.finish(len) {
        Ok(h) => h,
        Err(e) => {
            // A wrong checksum still lets the structure be examined (and
            // reported): the structural fault is the more useful reason.
            let mut head = [0u8; HEADER_LEN];
            let parsed = file
                .read_exact_at(&mut head, 0)
                .ok()
                .and_then(|()| Header::parse(&head).ok())
                .filter(|h| h.check_layout(len).is_ok());
            report.problems.push(e.0);
            match parsed {
                Some(h) => h,
                None => return Ok(report),
            }
        }
    };
    report.header = Some(header);
    report.entries = header.entry_count;
    report.clusters = header.cluster_count;
    let r = Reader {
        file: &file,
        header,
    };

    // Mime type list: NUL-terminated printable strings, ending with "".
    let mimes = {
        let window = ((header.checksum_pos - HEADER_LEN as u64) as usize).min(64 * 1024);
        let b = r.bytes(HEADER_LEN as u64, window)?;
        let mut mimes = Vec::new();
        let mut at = 0;
        loop {
            let Some(end) = b[at..].iter().position(|&c| c == 0) else {
                problem(&mut report, "the mime type list is not terminated".into());
                return Ok(report);
            };
            if end == 0 {
                at += 1;
                break;
            }
            let mime = &b[at..at + end];
            if !mime.iter().all(|c| c.is_ascii_graphic()) {
                problem(
                    &mut report,
                    format!("mime type #{} is not printable ASCII", mimes.len()),
                );
                return Ok(report);
            }
            mimes.push(String::from_utf8_lossy(mime).into_owned());
            at += end + 1;
        }
        (mimes, HEADER_LEN as u64 + at as u64)
    };
    let (mimes, data_start) = mimes;

    // Cluster pointers, then each cluster's blob offsets.
    let mut blobs = vec![0u32; header.cluster_count as usize];
    let mut starts = Vec::with_capacity(header.cluster_count as usize);
    let before = report.problems.len();
    for i in 0..header.cluster_count {
        let at = r.u64(header.cluster_ptr_pos + 8 * u64::from(i))?;
        if at < data_start || at >= header.checksum_pos {
            problem(
                &mut report,
                format!(
                    "cluster pointer #{i} is {at}, outside the data ({data_start}..{})",
                    header.checksum_pos
                ),
            );
        }
        starts.push(at);
    }
    if report.problems.len() == before {
        // A cluster ends where the next thing begins. Not the title index:
        // since format 6.1 the writer stores it as a blob inside a cluster.
        let tables = [
            header.path_ptr_pos,
            header.cluster_ptr_pos,
            header.checksum_pos,
        ];
        for (i, &start) in starts.iter().enumerate() {
            let end = starts
                .iter()
                .chain(tables.iter())
                .copied()
                .filter(|&p| p > start)
                .min()
                .unwrap_or(header.checksum_pos);
            match cluster_blobs(&r, start, end) {
                Ok(n) => blobs[i] = n,
                Err(e) => problem(&mut report, format!("cluster #{i} at {start}: {e}")),
            }
        }
    }

    // Dirents: pointers, order, mimetypes, cluster/blob or redirect target.
    let mut previous: Option<Dirent> = None;
    for i in 0..header.entry_count {
        let at = r.dirent_ptr(i)?;
        let dirent = match r.dirent(at, data_start) {
            Ok(d) => d,
            Err(e) => {
                problem(&mut report, format!("dirent pointer #{i} {e}"));
                previous = None;
                continue;
            }
        };
        if let Some(prev) = &previous {
            if (prev.namespace, prev.path.as_slice()) >= (dirent.namespace, dirent.path.as_slice())
            {
                problem(
                    &mut report,
                    format!(
                        "the dirent table is not sorted: #{} {} comes before #{i} {}",
                        i - 1,
                        prev.name(),
                        dirent.name()
                    ),
                );
            }
        }
        match dirent.mimetype {
            REDIRECT if dirent.cluster_or_target >= header.entry_count => problem(
                &mut report,
                format!(
                    "dirent #{i} {} redirects to entry {} of {}",
                    dirent.name(),
                    dirent.cluster_or_target,
                    header.entry_count
                ),
            ),
            REDIRECT | LINK_TARGET | DELETED => {}
            m if usize::from(m) >= mimes.len() => problem(
                &mut report,
                format!(
                    "dirent #{i} {} has mimetype {m}; the list has {}",
                    dirent.name(),
                    mimes.len()
                ),
            ),
            _ => {
                let cluster = dirent.cluster_or_target as usize;
                match blobs.get(cluster) {
                    None => problem(
                        &mut report,
                        format!(
                            "dirent #{i} {} is in cluster {cluster} of {}",
                            dirent.name(),
                            header.cluster_count
                        ),
                    ),
                    Some(&n) if n > 0 && dirent.blob >= n => problem(
                        &mut report,
                        format!(
                            "dirent #{i} {} is blob {} of cluster {cluster}, which has {n}",
                            dirent.name(),
                            dirent.blob
                        ),
                    ),
                    _ => {}
                }
            }
        }
        previous = Some(dirent);
    }

    // The v0 title index: entry numbers in range, ordered by title.
    if header.has_title_index() {
        let mut previous: Option<(u32, Dirent)> = None;
        for i in 0..header.entry_count {
            let index = r.u32(header.title_ptr_pos + 4 * u64::from(i))?;
            if index >= header.entry_count {
                problem(
                    &mut report,
                    format!(
                        "title index entry #{i} is {index}, past the {} entries",
                        header.entry_count
                    ),
                );
                previous = None;
                continue;
            }
            let Ok(dirent) = r.dirent(r.dirent_ptr(index)?, data_start) else {
                previous = None;
                continue;
            };
            if let Some((prev_index, prev)) = &previous {
                if prev.title_key() > dirent.title_key() {
                    problem(
                        &mut report,
                        format!(
                            "the title index is not sorted: entry {prev_index} {} comes before entry {index} {}",
                            prev.name(),
                            dirent.name()
                        ),
                    );
                }
            }
            previous = Some((index, dirent));
        }
    }
    Ok(report)
}

fn problem(report: &mut ZimReport, p: String) {
    if report.problems.len() < MAX_PROBLEMS {
        report.problems.push(p);
    }
}

/// Reads one cluster (`[start, end)` of the file) and checks its blob
/// offsets; returns how many blobs it holds.
fn cluster_blobs(r: &Reader<'_>, start: u64, end: u64) -> Result<u32, String> {
    if end <= start + 1 {
        return Err("empty".into());
    }
    let info = r.bytes(start, 1).map_err(|e| e.to_string())?[0];
    let extended = info & 0x10 != 0;
    let raw = std::io::Read::take(
        PositionalReader {
            file: r.file,
            at: start + 1,
            end,
        },
        MAX_CLUSTER + 1,
    );
    let mut data = Vec::new();
    match info & 0x0f {
        0 | 1 => {
            let mut raw = raw;
            raw.read_to_end(&mut data).map_err(|e| e.to_string())?;
        }
        5 => {
            let decoder =
                ruzstd::decoding::StreamingDecoder::new(raw).map_err(|e| format!("zstd: {e}"))?;
            read_capped(decoder, &mut data, "zstd")?;
        }
        4 => {
            let mut raw = std::io::BufReader::new(raw);
            let mut out = CappedWriter { data: &mut data };
            lzma_rs::xz_decompress(&mut raw, &mut out).map_err(|e| format!("xz: {e}"))?;
        }
        other => {
            return Err(format!(
                "compression type {other} is not one a ZIM reader supports"
            ))
        }
    }
    if data.len() as u64 > MAX_CLUSTER {
        return Err(format!("decompresses to more than {MAX_CLUSTER} bytes"));
    }
    let width = if extended { 8 } else { 4 };
    let offset = |i: usize| -> Option<u64> {
        let b = data.get(i * width..(i + 1) * width)?;
        Some(if extended {
            u64::from_le_bytes(b.try_into().ok()?)
        } else {
            u64::from(u32::from_le_bytes(b.try_into().ok()?))
        })
    };
    let first = offset(0).ok_or("too short for its offset table")?;
    if first == 0 || first % width as u64 != 0 || first > data.len() as u64 {
        return Err(format!(
            "its first blob offset {first} is not a valid table size"
        ));
    }
    let count = (first / width as u64) as usize;
    let mut previous = first;
    for i in 1..count {
        let next = offset(i).ok_or("its offset table runs past the data")?;
        if next < previous {
            return Err(format!(
                "blob offset #{i} is {next}, before the previous {previous}"
            ));
        }
        previous = next;
    }
    if previous > data.len() as u64 {
        return Err(format!(
            "its last blob ends at {previous}, past the {} bytes of data",
            data.len()
        ));
    }
    Ok(u32::try_from(count.saturating_sub(1)).unwrap_or(u32::MAX))
}

fn read_capped(mut reader: impl Read, data: &mut Vec<u8>, what: &str) -> Result<(), String> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("{what}: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        data.extend_from_slice(&buf[..n]);
        if data.len() as u64 > MAX_CLUSTER {
            return Err(format!("decompresses to more than {MAX_CLUSTER} bytes"));
        }
    }
}

struct CappedWriter<'a> {
    data: &'a mut Vec<u8>,
}

impl std::io::Write for CappedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.data.len() + buf.len()) as u64 > MAX_CLUSTER {
            return Err(std::io::Error::other("cluster decompresses past the cap"));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `Read` over `[at, end)` of a file, with positional reads.
struct PositionalReader<'a> {
    file: &'a std::fs::File,
    at: u64,
    end: u64,
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min((self.end - self.at) as usize);
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.at)?;
        self.at += got as u64;
        Ok(got)
    }
}
