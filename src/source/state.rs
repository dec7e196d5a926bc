//! The on-disk copy of the last zone: what rpcdns serves when it starts
//! while etcd is unreachable, until the first full read replaces it.
//!
//! The copy is the etcd keys and values the sources read (not the answers
//! made of them), at one revision, so that loading it goes through the
//! same parsers as a live read. One file, `<state.dir>/zone.state`:
//!
//! ```text
//! magic "rpcdns-state\n" | version (1 octet) | fingerprint (32)
//! | zone (u16 length + text) | revision (i64) | written at (u64, Unix s)
//! | count (u64) | count × (key: u32 length + octets, value: u32 + octets)
//! | SHA-256 of everything before (32)
//! ```
//!
//! All numbers are big-endian. The fingerprint is the SHA-256 of the
//! zone and the sources' configuration: a file another configuration
//! wrote (another zone, other prefixes or formats) is refused, as is a
//! file whose checksum, version or layout is wrong, or one larger than
//! `state.max_bytes`. A write goes to a temporary file in the same
//! directory, is synced, and is renamed over the old copy, so a crash
//! leaves the old copy or the new one, never a mix.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ops::metrics::{Metrics, StateWrite};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "zone.state";
/// How often the copy is written at most, after the first: it is at most
/// this much behind the zone served.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(10);
const MAGIC: &[u8] = b"rpcdns-state\n";
const VERSION: u8 = 1;
const CHECKSUM_LEN: usize = 32;

/// What a state file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    pub revision: i64,
    /// When it was written (Unix seconds).
    pub written_at: u64,
    pub kvs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a state file is not served.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not an rpcdns state file")]
    NotOurs,
    #[error("state file version {0}, this rpcdns reads version {VERSION}")]
    Version(u8),
    #[error("checksum mismatch: the file is corrupt")]
    Checksum,
    #[error("the file is cut short or malformed at octet {0}")]
    Malformed(usize),
    #[error("written for another configuration (zone {zone}, or other sources): not ours to serve")]
    Foreign { zone: String },
    #[error("{size} octets, over state.max_bytes ({max})")]
    TooLarge { size: u64, max: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The fingerprint of a configuration: the zone and `sources`, a text
/// that names every source's format, prefix, patterns and suffix, and the
/// overlay.
pub fn fingerprint(zone: &str, sources: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"zone\0");
    hash.update(zone.as_bytes());
    hash.update(b"\0sources\0");
    hash.update(sources.as_bytes());
    hash.finalize().into()
}

/// The file's octets.
pub fn encode<'a>(
    fingerprint: &[u8; 32],
    zone: &str,
    revision: i64,
    written_at: u64,
    kvs: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(fingerprint);
    // Zone names are at most 255 octets.
    out.extend_from_slice(&(zone.len() as u16).to_be_bytes());
    out.extend_from_slice(zone.as_bytes());
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(&written_at.to_be_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_be_bytes());
    for (key, value) in kvs {
        // etcd caps requests at 1.5 MiB by default: lengths fit in u32.
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    let checksum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&checksum);
    out
}

/// Reads a file's octets back; refuses what [`encode`] did not write for
/// this `fingerprint`.
pub fn decode(bytes: &[u8], fingerprint: &[u8; 32]) -> Result<StateFile, StateError> {
    if !bytes.starts_with(MAGIC) {
        return Err(StateError::NotOurs);
    }
    let mut reader = Reader {
        bytes,
        at: MAGIC.len(),
    };
    let version = reader.take(1)?[0];
    if version != VERSION {
        return Err(StateError::Version(version));
    }
    let body_len = bytes
        .len()
        .checked_sub(CHECKSUM_LEN)
        .ok_or(StateError::Malformed(bytes.len()))?;
    let (body, checksum) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(StateError::Checksum);
    }
    reader.bytes = body;
    let written_for = reader.take(32)?;
    let zone_len = usize::from(u16::from_be_bytes(reader.array()?));
    let zone = String::from_utf8_lossy(reader.take(zone_len)?).into_owned();
    if written_for != fingerprint {
        return Err(StateError::Foreign { zone });
    }
    let revision = i64::from_be_bytes(reader.array()?);
    let written_at = u64::from_be_bytes(reader.array()?);
    let count = u64::from_be_bytes(reader.array()?);
    let mut kvs = Vec::new();
    for _ in 0..count {
        let key_len = u32::from_be_bytes(reader.array()?) as usize;
        let key = reader.take(key_len)?.to_vec();
        let value_len = u32::from_be_bytes(reader.array()?) as usize;
        let value = reader.take(value_len)?.to_vec();
        kvs.push((key, value));
    }
    if reader.at != body.len() {
        return Err(StateError::Malformed(reader.at));
    }
    Ok(StateFile {
        revision,
        written_at,
        kvs,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(StateError::Malformed(self.at))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }
}

/// Reads `<dir>/zone.state`: `None` when there is none.
pub fn load(dir: &Path, fingerprint: &[u8; 32], max: u64) -> Result<Option<StateFile>, StateError> {
    let path = dir.join(FILE_NAME);
    let size = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    if size > max {
        return Err(StateError::TooLarge { size, max });
    }
    let bytes = std::fs::read(&path)?;
    decode(&bytes, fingerprint).map(Some)
}

/// Writes `bytes` as `<dir>/zone.state`: a temporary file, synced, then
/// renamed over the old one, and the directory synced.
pub fn store(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let path = dir.join(FILE_NAME);
    let temporary = dir.join(format!("{FILE_NAME}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------
// The writer task
// ---------------------------------------------------------------------------

/// The keys and values the zone is made of, at a revision: what the
/// watcher hands the writer task after each change.
pub type Kvs = imbl::OrdMap<Vec<u8>, Vec<u8>>;

/// Where the watcher leaves the latest state for the writer task.
#[derive(Debug, Default)]
pub struct Keeper {
    latest: Mutex<Option<(Kvs, i64)>>,
    notify: Notify,
}

impl Keeper {
    /// Offers the state at `revision` (a persistent map: the clone is
    /// cheap); the task writes the newest it finds when it wakes.
    pub fn offer(&self, kvs: Kvs, revision: i64) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        *latest = Some((kvs, revision));
        drop(latest);
        self.notify.notify_one();
    }

    fn take(&self) -> Option<(Kvs, i64)> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What the writer task needs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub dir: PathBuf,
    pub fingerprint: [u8; 32],
    pub zone: String,
    pub max_bytes: u64,
}

/// Writes what the keeper is offered, at most once per [`WRITE_INTERVAL`],
/// until `shutdown`; the last offer is written before it returns.
pub async fn run_writer(
    config: WriterConfig,
    keeper: Arc<Keeper>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut too_large_warned = false;
    loop {
        // Shutdown first: the last offer is written, once, and the task ends.
        let stopping = tokio::select! {
            biased;
            () = shutdown.cancelled() => true,
            () = keeper.notify.notified() => false,
        };
        if let Some((kvs, revision)) = keeper.take() {
            let job = config.clone();
            let written = tokio::task::spawn_blocking(move || write(&job, &kvs, revision)).await;
            match written {
                Ok(Ok(size)) => {
                    metrics.state_write(StateWrite::Written);
                    too_large_warned = false;
                    tracing::debug!(revision, size, "state file written");
                }
                Ok(Err(WriteError::TooLarge(size))) => {
                    metrics.state_write(StateWrite::TooLarge);
                    if !too_large_warned {
                        too_large_warned = true;
                        tracing::warn!(
                            size,
                            max = config.max_bytes,
                            "the zone's copy is over state.max_bytes: not written, and the old copy removed"
                        );
                    }
                }
                Ok(Err(WriteError::Io(error))) => {
                    metrics.state_write(StateWrite::Failed);
                    tracing::warn!(dir = %config.dir.display(), %error, "cannot write the state file");
                }
                Err(_) => metrics.state_write(StateWrite::Failed),
            }
        }
        if stopping {
            return;
        }
        // Whatever comes meanwhile is written on the next turn (after
        // shutdown, at once).
        tokio::select! {
            () = tokio::time::sleep(WRITE_INTERVAL) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

enum WriteError {
    TooLarge(u64),
    Io(std::io::Error),
}

fn write(config: &WriterConfig, kvs: &Kvs, revision: i64) -> Result<u64, WriteError> {
    let bytes = encode(
        &config.fingerprint,
        &config.zone,
        revision,
        now(),
        kvs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    );
    let size = bytes.len() as u64;
    if size > config.max_bytes {
        // An old copy would be served at the next start as if current.
        let _ = std::fs::remove_file(config.dir.join(FILE_NAME));
        return Err(WriteError::TooLarge(size));
    }
    store(&config.dir, &bytes).map_err(WriteError::Io)?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b"sms.rpc/1".to_vec(), b"10.0.0.5:8001".to_vec()),
            (
                b"/skydns/local/svc/x".to_vec(),
                br#"{"host":"10.0.0.9"}"#.to_vec(),
            ),
            (b"empty/1".to_vec(), Vec::new()),
        ]
    }

    fn encoded(fp: &[u8; 32]) -> Vec<u8> {
        let kvs = sample();
        encode(
            fp,
            "svc.local.",
            42,
            1_700_000_000,
            kvs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
    }

    #[test]
    fn what_is_written_reads_back() {
        let fp = fingerprint("svc.local.", "gozero \"\" [*.rpc] \"\"");
        let file = decode(&encoded(&fp), &fp).unwrap();
        assert_eq!(
            file,
            StateFile {
                revision: 42,
                written_at: 1_700_000_000,
                kvs: sample()
            }
        );
    }

    #[test]
    fn corrupt_foreign_and_other_files_are_refused() {
        let fp = fingerprint("svc.local.", "gozero");
        let good = encoded(&fp);
        // Any flipped bit: the checksum.
        for at in [MAGIC.len() + 1, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(
                matches!(decode(&bad, &fp), Err(StateError::Checksum)),
                "at {at}"
            );
        }
        // Cut short: the checksum no longer matches either.
        assert!(matches!(
            decode(&good[..good.len() - 5], &fp),
            Err(StateError::Checksum)
        ));
        assert!(matches!(
            decode(&good[..MAGIC.len() + 1], &fp),
            Err(StateError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"{\"zone\":1}", &fp),
            Err(StateError::NotOurs)
        ));
        assert!(matches!(decode(b"", &fp), Err(StateError::NotOurs)));
        let mut future = good.clone();
        future[MAGIC.len()] = 9;
        assert!(matches!(decode(&future, &fp), Err(StateError::Version(9))));
        // Another zone or other sources.
        let other = fingerprint("svc.local.", "kratos");
        match decode(&good, &other) {
            Err(StateError::Foreign { zone }) => assert_eq!(zone, "svc.local."),
            other => panic!("{other:?}"),
        }
        // A well-checksummed file whose count promises more than it has.
        let mut body = good[..good.len() - CHECKSUM_LEN].to_vec();
        let count_at = MAGIC.len() + 1 + 32 + 2 + "svc.local.".len() + 16;
        body[count_at..count_at + 8].copy_from_slice(&1_000u64.to_be_bytes());
        let checksum: [u8; 32] = Sha256::digest(&body).into();
        body.extend_from_slice(&checksum);
        assert!(matches!(decode(&body, &fp), Err(StateError::Malformed(_))));
    }

    #[test]
    fn stored_atomically_and_bounded_on_load() {
        let dir = std::env::temp_dir().join(format!("rpcdns-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fp = fingerprint("svc.local.", "gozero");
        assert!(load(&dir, &fp, 1 << 20).unwrap().is_none());
        let bytes = encoded(&fp);
        store(&dir, &bytes).unwrap();
        assert_eq!(load(&dir, &fp, 1 << 20).unwrap().unwrap().revision, 42);
        assert!(matches!(
            load(&dir, &fp, 10),
            Err(StateError::TooLarge { .. })
        ));
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
