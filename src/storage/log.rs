//! The durable log behind a pipeline with a persistent queue: append-only segment files
//! of checksummed records, read back in order, freed by whole segments once everything
//! in them has left.
//!
//! Layout of a log directory:
//! - `<first seq, 20 digits>.seg`: records with consecutive sequence numbers, the first
//!   one in the name; a new segment starts when the current one passes
//!   [`SEGMENT_BYTES`], and the directory is fsynced when a segment is created;
//! - `acked`: the sequence number below which every record has left sieve (sent, or
//!   dropped and counted), with its own checksum; written by rename. It is a hint: a
//!   stale or damaged one only means more records are delivered again.
//!
//! A record is `magic (4) | version (1) | signal (1) | items (4) | seq (8) | length (4)
//! | crc32c (4) | payload`, little-endian, the checksum over everything from `version`
//! to the end of the payload. In version 2 the payload starts with the request metadata
//! the data carries (a tenant: `count (2)` then `key length (2) | key | value length (2)
//! | value` per entry), followed by the encoded OTLP export request sieve accepted, so
//! a write is a copy and a checksum. Version 3, written now, puts the address of the
//! client that sent the data between the two (`0`, or `4` and 4 bytes, or `6` and 16
//! bytes). Version 2 (no client) and version 1 records (no metadata) are read as before.
//!
//! When the log is full it refuses appends, or, with `drop_oldest`, deletes its oldest
//! segment that nothing has read yet and counts the items in it as dropped. Segments
//! the pipeline is still sending from are never dropped (a crash would lose them
//! without a count): if every full segment is being sent, the append is refused.
//! Dropped records leave a gap in the sequence numbers; the reader's position (`Reading`) knows
//! the gaps above its position, so a dropped record that still arrives through the
//! memory queue is not processed.
//!
//! Damage is expected, not trusted: on open every segment is scanned (streaming, never
//! loaded whole); a record that does not check out is skipped by searching for the next
//! magic whose record does, and counted; an unreadable end of the last segment (a write
//! torn by a crash) is cut off. A length over [`MAX_RECORD_BYTES`], an unknown version
//! or any other garbage is just damage: nothing in a file can make sieve panic or
//! allocate without bound. Every index is rebuilt from the segments at open.

use crate::model::{Metadata, Signal};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAGIC: [u8; 4] = *b"SVQ1";
const VERSION: u8 = 3;
/// Records written before the client's address was kept: metadata, then the request.
const VERSION_WITHOUT_CLIENT: u8 = 2;
/// Records written before metadata was kept: the payload is the request alone.
const VERSION_WITHOUT_METADATA: u8 = 1;
const HEADER_BYTES: usize = 26;
/// A segment is closed and a new one started past this size (or an eighth of the
/// log's limit, if smaller).
pub const SEGMENT_BYTES: u64 = 32 << 20;
/// The largest record read back; a longer length is damage.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// How appends reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Every append is on disk before it is acknowledged.
    Always,
    /// Appends are written to the operating system at once (a process kill loses
    /// nothing) and synced to disk every interval (a power loss loses at most that).
    Interval(Duration),
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub signal: Signal,
    pub items: usize,
    /// The request metadata the data came with (none in a version 1 record).
    pub metadata: Option<Metadata>,
    /// The address of the client that sent it (none before version 3).
    pub client: Option<std::net::IpAddr>,
    pub payload: Bytes,
}

/// The metadata block of a version 2 payload.
fn encode_metadata(metadata: Option<&Metadata>) -> Bytes {
    // receivers keep values of at most 1 KiB; a longer pair could not be written
    let fits = |(key, value): &&(String, String)| {
        key.len() <= u16::MAX as usize && value.len() <= u16::MAX as usize
    };
    let pairs: Vec<&(String, String)> = metadata
        .map_or(&[][..], Metadata::pairs)
        .iter()
        .filter(fits)
        .take(u16::MAX as usize)
        .collect();
    let mut block = Vec::with_capacity(2 + pairs.len() * 16);
    block.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    for (key, value) in pairs {
        for text in [key, value] {
            block.extend_from_slice(&(text.len() as u16).to_le_bytes());
            block.extend_from_slice(text.as_bytes());
        }
    }
    Bytes::from(block)
}

/// The client block of a version 3 payload.
fn encode_client(client: Option<std::net::IpAddr>) -> Bytes {
    match client {
        None => Bytes::from_static(&[0]),
        Some(std::net::IpAddr::V4(ip)) => [&[4u8][..], &ip.octets()].concat().into(),
        Some(std::net::IpAddr::V6(ip)) => [&[6u8][..], &ip.octets()].concat().into(),
    }
}

/// The client block at `at` and where it ends; `None` when it does not parse (damage).
fn decode_client(payload: &[u8], at: usize) -> Option<(Option<std::net::IpAddr>, usize)> {
    match *payload.get(at)? {
        0 => Some((None, at + 1)),
        4 => {
            let octets: [u8; 4] = payload.get(at + 1..at + 5)?.try_into().ok()?;
            Some((Some(octets.into()), at + 5))
        }
        6 => {
            let octets: [u8; 16] = payload.get(at + 1..at + 17)?.try_into().ok()?;
            Some((Some(octets.into()), at + 17))
        }
        _ => None,
    }
}

/// The metadata block at the start of a version 2 payload and where the request
/// starts; `None` when it does not parse (damage).
fn decode_metadata(payload: &[u8]) -> Option<(Option<Metadata>, usize)> {
    let mut at = 2;
    let count = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?) as usize;
    let mut text = || {
        let length = u16::from_le_bytes(payload.get(at..at + 2)?.try_into().ok()?) as usize;
        let bytes = payload.get(at + 2..at + 2 + length)?;
        at += 2 + length;
        std::str::from_utf8(bytes).ok().map(str::to_string)
    };
    let mut pairs = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        pairs.push((text()?, text()?));
    }
    let metadata = (count > 0).then(|| Metadata::from_pairs(pairs));
    Some((metadata, at))
}

/// Why an append was refused.
#[derive(Debug)]
pub enum AppendError {
    /// The log holds `max_bytes` already.
    Full,
    /// Writing failed (a full disk): the log is as it was before.
    Io(io::Error),
}

/// Items `drop_oldest` dropped, and how many of them were written before this process
/// opened the log (never offered to the pipeline in this process).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub items: u64,
    pub recovered: u64,
}

/// What opening a log found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Records kept from before, from the acknowledged position on.
    pub records: u64,
    pub items: u64,
    /// Records skipped as damaged, and bytes cut off a torn tail.
    pub corrupt: u64,
    pub torn_bytes: u64,
}

struct Segment {
    first_seq: u64,
    bytes: u64,
    items: u64,
    /// When it was created (for one from before this start: last written).
    created: std::time::SystemTime,
}

struct Writer {
    file: File,
    segments: VecDeque<Segment>,
    next_seq: u64,
    bytes: u64,
}

/// A pipeline's log: appended by receivers, read by the pipeline's worker.
pub struct Log {
    dir: PathBuf,
    max_bytes: AtomicU64,
    /// Whether a full log drops its oldest unread segment instead of refusing.
    drop_oldest: AtomicBool,
    /// Items dropped by `drop_oldest` not yet taken by [`Log::take_dropped`]: all of
    /// them, and those written before this process opened the log.
    dropped_items: AtomicU64,
    dropped_recovered_items: AtomicU64,
    /// The sequence number of the first record this process appended.
    opened_at: u64,
    segment_bytes: u64,
    fsync: Fsync,
    /// Where the newest reader is: a drop moves it past what it drops.
    reading: Mutex<Arc<Mutex<Reading>>>,
    writer: Mutex<Writer>,
    appended: Condvar,
    /// `next_seq` as last published, read without the lock.
    end: AtomicU64,
    /// Everything below has left sieve; only whole segments below it are deleted.
    acked: AtomicU64,
    /// Group commit of `fsync: always`.
    group: Mutex<SyncState>,
    synced_cv: Condvar,
    /// Where fsync durations are observed.
    fsync_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

/// Where a reader is: every record below `position` was taken, or dropped and counted,
/// and so was every record in `dropped`, the latest gaps drops left.
#[derive(Debug, Default)]
struct Reading {
    position: u64,
    dropped: VecDeque<Range<u64>>,
}

/// The gaps a reader remembers, so that a dropped record still arriving through the
/// memory queue is recognised (a segment is at least 64 KiB: this covers more than a
/// memory queue holds).
const GAPS_REMEMBERED: usize = 1024;

impl Reading {
    fn was_dropped(&self, seq: u64) -> bool {
        self.dropped.iter().any(|gap| gap.contains(&seq))
    }

    /// Takes record `seq` if it was neither taken nor dropped: the position moves past it.
    fn claim(&mut self, seq: u64) -> bool {
        if seq < self.position || self.was_dropped(seq) {
            return false;
        }
        self.advance_to(seq + 1);
        true
    }

    /// Moves on to `seq` at least, and past any gap it lands in.
    fn advance_to(&mut self, seq: u64) {
        self.position = self.position.max(seq);
        while let Some(gap) = self.dropped.iter().find(|g| g.contains(&self.position)) {
            self.position = gap.end;
        }
    }

    /// Records that `gap` was dropped.
    fn drop_gap(&mut self, gap: Range<u64>) {
        if self.dropped.len() == GAPS_REMEMBERED {
            self.dropped.pop_front();
        }
        self.dropped.push_back(gap);
        self.advance_to(self.position);
    }
}

/// Which records are on disk, and whether an appender is syncing for the others.
struct SyncState {
    /// Every record below this is on disk.
    synced: u64,
    syncing: bool,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segments of `dir`, by first sequence number.
fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut firsts: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            name.to_str()?.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

fn encode_header(seq: u64, signal: Signal, items: usize, payload: &[Bytes]) -> [u8; HEADER_BYTES] {
    let length: usize = payload.iter().map(Bytes::len).sum();
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&MAGIC);
    header[4] = VERSION;
    header[5] = signal as u8;
    header[6..10].copy_from_slice(&(items.min(u32::MAX as usize) as u32).to_le_bytes());
    header[10..18].copy_from_slice(&seq.to_le_bytes());
    header[18..22].copy_from_slice(&(length as u32).to_le_bytes());
    let mut crc = crc32c::crc32c(&header[4..22]);
    for part in payload {
        crc = crc32c::crc32c_append(crc, part);
    }
    header[22..26].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The record at the start of `bytes`, if it checks out, and its full length.
fn decode(bytes: &[u8]) -> Option<(Record, usize)> {
    let header = bytes.get(..HEADER_BYTES)?;
    if header[0..4] != MAGIC
        || !matches!(
            header[4],
            VERSION | VERSION_WITHOUT_CLIENT | VERSION_WITHOUT_METADATA
        )
    {
        return None;
    }
    let signal = *Signal::ALL.get(header[5] as usize)?;
    let items = u32::from_le_bytes(header[6..10].try_into().ok()?) as usize;
    let seq = u64::from_le_bytes(header[10..18].try_into().ok()?);
    let length = u32::from_le_bytes(header[18..22].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[22..26].try_into().ok()?);
    if length > MAX_RECORD_BYTES {
        return None;
    }
    let payload = bytes.get(HEADER_BYTES..HEADER_BYTES + length)?;
    let computed = crc32c::crc32c_append(crc32c::crc32c(&header[4..22]), payload);
    if computed != crc {
        return None;
    }
    let (metadata, client, request) = match header[4] {
        VERSION => {
            let (metadata, at) = decode_metadata(payload)?;
            let (client, at) = decode_client(payload, at)?;
            (metadata, client, at)
        }
        VERSION_WITHOUT_CLIENT => {
            let (metadata, at) = decode_metadata(payload)?;
            (metadata, None, at)
        }
        _ => (None, None, 0),
    };
    Some((
        Record {
            seq,
            signal,
            items,
            metadata,
            client,
            payload: Bytes::copy_from_slice(&payload[request..]),
        },
        HEADER_BYTES + length,
    ))
}

/// What a segment reader met next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Record(Record),
    /// Bytes that are not a record, skipped up to the next record that checks out.
    Damaged {
        bytes: u64,
    },
    /// The end of what is readable (a torn tail is an end too).
    End,
}

/// Reads one segment file front to back, in bounded memory.
pub struct SegmentReader {
    file: BufReader<File>,
    /// Offset of the next unread byte in the file.
    offset: u64,
    buffer: Vec<u8>,
}

impl SegmentReader {
    pub fn open(path: &Path, offset: u64) -> io::Result<SegmentReader> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(SegmentReader {
            file: BufReader::with_capacity(256 << 10, file),
            offset,
            buffer: Vec::new(),
        })
    }

    /// Offset just past the last record read (or skipped).
    pub fn offset(&self) -> u64 {
        self.offset - self.buffer.len() as u64
    }

    /// Reads until `buffer` holds `wanted` bytes or the file ends.
    fn fill(&mut self, wanted: usize) -> io::Result<()> {
        while self.buffer.len() < wanted {
            let have = self.buffer.len();
            let step = (wanted - have).max(64 << 10);
            self.buffer.resize(have + step, 0);
            let read = self.file.read(&mut self.buffer[have..])?;
            self.buffer.truncate(have + read);
            self.offset += read as u64;
            if read == 0 {
                break;
            }
        }
        Ok(())
    }

    /// The next record, a stretch of damage, or the end.
    pub fn read_next(&mut self) -> io::Result<Next> {
        if let Some((record, length)) = self.record_at_front()? {
            self.buffer.drain(..length);
            return Ok(Next::Record(record));
        }
        if self.buffer.is_empty() {
            return Ok(Next::End);
        }
        // damage: skip to the next magic whose record checks out
        let mut skipped = 0u64;
        loop {
            let from = 1.min(self.buffer.len());
            match find_magic(&self.buffer[from..]) {
                Some(at) => {
                    self.buffer.drain(..from + at);
                    skipped += (from + at) as u64;
                    if self.record_at_front()?.is_some() {
                        return Ok(Next::Damaged { bytes: skipped });
                    }
                }
                None => {
                    let keep = self.buffer.len().min(3);
                    let dropped = self.buffer.len() - keep;
                    self.buffer.drain(..dropped);
                    skipped += dropped as u64;
                    let before = self.buffer.len();
                    self.fill(before + (64 << 10))?;
                    if self.buffer.len() == before {
                        // nothing readable after the damage: a torn tail
                        self.buffer.clear();
                        return Ok(Next::End);
                    }
                }
            }
        }
    }

    /// The record at the front of the buffer and its length, if one checks out there.
    fn record_at_front(&mut self) -> io::Result<Option<(Record, usize)>> {
        self.fill(HEADER_BYTES)?;
        if self.buffer.len() < HEADER_BYTES || self.buffer[0..4] != MAGIC {
            return Ok(None);
        }
        let length = u32::from_le_bytes([
            self.buffer[18],
            self.buffer[19],
            self.buffer[20],
            self.buffer[21],
        ]) as usize;
        if length > MAX_RECORD_BYTES {
            return Ok(None);
        }
        self.fill(HEADER_BYTES + length)?;
        Ok(decode(&self.buffer))
    }
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == MAGIC)
}

/// Scans segment `first_seq` of `dir` to its end: its records from `from_seq` on are
/// counted into `found`, damage too; returns the offset past its last good record and
/// the sequence number after it.
fn scan_segment(
    dir: &Path,
    first_seq: u64,
    from_seq: u64,
    found: &mut Recovered,
) -> io::Result<(u64, u64, Segment)> {
    let mut reader = SegmentReader::open(&segment_path(dir, first_seq), 0)?;
    let path = segment_path(dir, first_seq);
    let mut segment = Segment {
        first_seq,
        bytes: 0,
        items: 0,
        created: fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| std::time::SystemTime::now()),
    };
    let mut next_seq = first_seq;
    let mut good_end = 0;
    loop {
        match reader.read_next()? {
            Next::Record(record) => {
                next_seq = record.seq + 1;
                good_end = reader.offset();
                segment.items += record.items as u64;
                if record.seq >= from_seq {
                    found.records += 1;
                    found.items += record.items as u64;
                }
            }
            Next::Damaged { .. } => found.corrupt += 1,
            Next::End => break,
        }
    }
    segment.bytes = good_end;
    Ok((good_end, next_seq, segment))
}

impl Log {
    /// Opens (creating it if needed) the log in `dir`: rebuilds the segment list from
    /// the files, cuts a torn tail off the last segment and starts a new segment for
    /// appends.
    pub fn open(dir: &Path, max_bytes: u64, fsync: Fsync) -> io::Result<(Log, Recovered)> {
        // at least eight segments fit, so space comes back while a backlog drains
        let segment_bytes = (max_bytes / 8).clamp(64 << 10, SEGMENT_BYTES);
        Log::open_with_segments(dir, max_bytes, fsync, segment_bytes)
    }

    /// [`Log::open`] with segments of `segment_bytes`.
    pub fn open_with_segments(
        dir: &Path,
        max_bytes: u64,
        fsync: Fsync,
        segment_bytes: u64,
    ) -> io::Result<(Log, Recovered)> {
        fs::create_dir_all(dir)?;
        let acked = read_acked(dir);
        let mut found = Recovered::default();
        let mut segments = VecDeque::new();
        let mut next_seq = acked;
        let firsts = list_segments(dir)?;
        for (index, &first) in firsts.iter().enumerate() {
            let (good_end, after, segment) = scan_segment(dir, first, acked, &mut found)?;
            let path = segment_path(dir, first);
            let length = fs::metadata(&path)?.len();
            if index + 1 == firsts.len() && length > good_end {
                found.torn_bytes = length - good_end;
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(good_end)?;
            }
            next_seq = next_seq.max(after).max(first);
            segments.push_back(segment);
        }
        let (file, first) = create_segment(dir, next_seq)?;
        segments.push_back(first);
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let log = Log {
            dir: dir.to_path_buf(),
            max_bytes: AtomicU64::new(max_bytes),
            drop_oldest: AtomicBool::new(false),
            dropped_items: AtomicU64::new(0),
            dropped_recovered_items: AtomicU64::new(0),
            opened_at: next_seq,
            segment_bytes,
            fsync,
            reading: Mutex::new(Arc::new(Mutex::new(Reading {
                position: acked,
                dropped: VecDeque::new(),
            }))),
            writer: Mutex::new(Writer {
                file,
                segments,
                next_seq,
                bytes,
            }),
            appended: Condvar::new(),
            end: AtomicU64::new(next_seq),
            acked: AtomicU64::new(acked),
            group: Mutex::new(SyncState {
                synced: next_seq,
                syncing: false,
            }),
            synced_cv: Condvar::new(),
            fsync_seconds: None,
        };
        Ok((log, found))
    }

    /// Sets the size limit and what happens at it (a reload may change both).
    pub fn set_limit(&self, max_bytes: u64, drop_oldest: bool) {
        self.max_bytes.store(max_bytes, Ordering::Release);
        self.drop_oldest.store(drop_oldest, Ordering::Release);
    }

    /// Items dropped to make room since the last call.
    pub fn take_dropped(&self) -> Dropped {
        Dropped {
            items: self.dropped_items.swap(0, Ordering::AcqRel),
            recovered: self.dropped_recovered_items.swap(0, Ordering::AcqRel),
        }
    }

    /// Observes every fsync's duration in `histogram`.
    pub fn with_fsync_histogram(
        mut self,
        histogram: prometheus_client::metrics::histogram::Histogram,
    ) -> Log {
        self.fsync_seconds = Some(histogram);
        self
    }

    /// Syncs `file`, timing it.
    fn fsync(&self, file: &File) -> io::Result<()> {
        let started = Instant::now();
        let result = file.sync_data();
        if let Some(histogram) = &self.fsync_seconds {
            histogram.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// How long the oldest segment still on disk has existed: an upper bound of the
    /// oldest waiting item's age.
    pub fn oldest_age(&self) -> Duration {
        let w = self.writer.lock();
        w.segments
            .front()
            .filter(|_| self.acked() < w.next_seq)
            .map_or(Duration::ZERO, |s| s.created.elapsed().unwrap_or_default())
    }

    /// Appends one record of `payload` (an encoded request, in parts), the request
    /// `metadata` it came with and its `client`: written to the operating system before
    /// this returns, and on disk too with `fsync: always`. Returns its sequence number.
    pub fn append(
        &self,
        signal: Signal,
        items: usize,
        metadata: Option<&Metadata>,
        client: Option<std::net::IpAddr>,
        request: &[Bytes],
    ) -> Result<u64, AppendError> {
        let payload: Vec<Bytes> = [encode_metadata(metadata), encode_client(client)]
            .into_iter()
            .chain(request.iter().cloned())
            .collect();
        let payload = payload.as_slice();
        let mut w = self.writer.lock();
        let seq = loop {
            match self.write(&mut w, signal, items, payload) {
                Ok(seq) => break seq,
                Err(refused) => {
                    // room is made for a full log or disk, never for another error
                    let out_of_room = match &refused {
                        AppendError::Full => true,
                        AppendError::Io(e) => e.kind() == io::ErrorKind::StorageFull,
                    };
                    if !out_of_room
                        || !self.drop_oldest.load(Ordering::Acquire)
                        || !self.drop_oldest_unread(&mut w)
                    {
                        return Err(refused);
                    }
                }
            }
        };
        drop(w);
        self.appended.notify_all();
        if self.fsync == Fsync::Always {
            self.sync_through(seq).map_err(AppendError::Io)?;
        }
        Ok(seq)
    }

    /// Writes one record at the end, or leaves the log as it was.
    fn write(
        &self,
        w: &mut Writer,
        signal: Signal,
        items: usize,
        payload: &[Bytes],
    ) -> Result<u64, AppendError> {
        let length: usize = payload.iter().map(Bytes::len).sum();
        let size = (HEADER_BYTES + length) as u64;
        if w.bytes + size > self.max_bytes.load(Ordering::Acquire) && w.bytes > 0 {
            return Err(AppendError::Full);
        }
        if w.segments
            .back()
            .is_some_and(|s| s.bytes >= self.segment_bytes)
        {
            self.rotate(w).map_err(AppendError::Io)?;
        }
        let seq = w.next_seq;
        let header = encode_header(seq, signal, items, payload);
        let written = write_record(&mut w.file, &header, payload);
        let Writer { file, segments, .. } = &mut *w;
        let Some(segment) = segments.back_mut() else {
            return Err(AppendError::Io(io::ErrorKind::NotFound.into()));
        };
        if let Err(e) = written {
            // leave the log as it was: cut the partial record off
            let _ = file.set_len(segment.bytes);
            return Err(AppendError::Io(e));
        }
        segment.bytes += size;
        segment.items += items as u64;
        w.bytes += size;
        w.next_seq += 1;
        self.end.store(w.next_seq, Ordering::Release);
        Ok(seq)
    }

    /// Deletes the oldest segment nobody has read from (never the one being written),
    /// counting its items as dropped; false when there is none.
    fn drop_oldest_unread(&self, w: &mut Writer) -> bool {
        let reading = Arc::clone(&self.reading.lock());
        let mut reading = reading.lock();
        let Some(index) = w
            .segments
            .iter()
            .position(|s| s.first_seq >= reading.position)
            .filter(|&index| index + 1 < w.segments.len())
        else {
            return false;
        };
        let (first, end) = (w.segments[index].first_seq, w.segments[index + 1].first_seq);
        if fs::remove_file(segment_path(&self.dir, first)).is_err() {
            return false;
        }
        let Some(victim) = w.segments.remove(index) else {
            return false;
        };
        w.bytes -= victim.bytes;
        reading.drop_gap(first..end);
        self.dropped_items.fetch_add(victim.items, Ordering::AcqRel);
        if victim.first_seq < self.opened_at {
            // segments from before are closed at open: this one is wholly from before
            self.dropped_recovered_items
                .fetch_add(victim.items, Ordering::AcqRel);
        }
        true
    }

    /// Waits until record `seq` is on disk. Appenders share fsyncs (group commit): one
    /// syncs everything written so far while the others wait for it, and whoever
    /// finds its record synced returns at once. Inside the async runtime the wait
    /// hands the worker's other tasks to another thread first.
    fn sync_through(&self, seq: u64) -> io::Result<()> {
        let wait = || self.sync_through_blocking(seq);
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    fn sync_through_blocking(&self, seq: u64) -> io::Result<()> {
        let mut state = self.group.lock();
        loop {
            if state.synced > seq {
                return Ok(());
            }
            if state.syncing {
                self.synced_cv.wait(&mut state);
                continue;
            }
            state.syncing = true;
            drop(state);
            let (file, through) = {
                let w = self.writer.lock();
                (w.file.try_clone(), w.next_seq)
            };
            let result = file.and_then(|f| self.fsync(&f));
            state = self.group.lock();
            state.syncing = false;
            if result.is_ok() {
                state.synced = state.synced.max(through);
            }
            self.synced_cv.notify_all();
            result?;
        }
    }

    fn rotate(&self, w: &mut Writer) -> io::Result<()> {
        // what the old segment holds is on disk before appends move on
        self.fsync(&w.file)?;
        let (file, segment) = create_segment(&self.dir, w.next_seq)?;
        w.file = file;
        w.segments.push_back(segment);
        Ok(())
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The most the log holds on disk.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Acquire)
    }

    /// The sequence number the next append gets.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Everything below this has left sieve.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Waits until a record at or past `seq` is appended, or `deadline`.
    pub fn wait_past(&self, seq: u64, deadline: Option<Instant>) {
        let mut w = self.writer.lock();
        while w.next_seq <= seq {
            match deadline {
                Some(deadline) => {
                    if self.appended.wait_until(&mut w, deadline).timed_out() {
                        return;
                    }
                }
                None => self.appended.wait(&mut w),
            }
        }
    }

    /// Wakes whoever waits in [`Log::wait_past`] (a pipeline stopping).
    pub fn wake(&self) {
        self.appended.notify_all();
    }

    /// Records that everything below `seq` has left sieve: deletes the segments wholly
    /// below it and writes the `acked` file.
    pub fn acknowledge(&self, seq: u64) -> io::Result<()> {
        let advanced = seq > self.acked.fetch_max(seq, Ordering::AcqRel);
        let mut w = self.writer.lock();
        // everything has left: start afresh so the last segment can go too (checked on
        // every call, so that a rotation that failed is tried again)
        let everything_left = seq >= w.next_seq && w.segments.back().is_some_and(|s| s.bytes > 0);
        if !advanced && !everything_left {
            return Ok(());
        }
        let rotated = if everything_left {
            self.rotate(&mut w)
        } else {
            Ok(())
        };
        // space first: with a full disk, writing the `acked` file can only succeed after
        // (a crash in between only means records delivered again)
        let mut deleted = Ok(());
        while w.segments.len() > 1 && w.segments.get(1).is_some_and(|next| next.first_seq <= seq) {
            let Some(done) = w.segments.pop_front() else {
                break;
            };
            w.bytes -= done.bytes;
            if let Err(e) = fs::remove_file(segment_path(&self.dir, done.first_seq)) {
                deleted = Err(e);
            }
        }
        // under the lock, so two pipelines sharing the log (a reload) never interleave
        let written = write_acked(&self.dir, self.acked());
        rotated.and(deleted).and(written)
    }

    /// Syncs what was written to disk (the `fsync: interval` tick).
    pub fn sync(&self) -> io::Result<()> {
        let file = self.writer.lock().file.try_clone()?;
        self.fsync(&file)
    }

    /// Bytes and items in the segments on disk.
    pub fn size(&self) -> (u64, u64) {
        let w = self.writer.lock();
        (w.bytes, w.segments.iter().map(|s| s.items).sum())
    }

    /// A reader from record `seq` on. It becomes the reader whose position a drop
    /// moves (an older one, of a pipeline a reload retires, keeps its own).
    pub fn reader(self: &Arc<Self>, seq: u64) -> LogReader {
        let mut current = self.reading.lock();
        let dropped = current.lock().dropped.clone();
        let mut reading = Reading {
            position: seq,
            dropped,
        };
        reading.advance_to(seq);
        let reading = Arc::new(Mutex::new(reading));
        *current = Arc::clone(&reading);
        LogReader {
            log: Arc::clone(self),
            reading,
            segment: None,
        }
    }

    /// The segment holding `seq`, if it is still on disk.
    fn segment_of(&self, seq: u64) -> Option<u64> {
        let w = self.writer.lock();
        w.segments
            .iter()
            .rev()
            .find(|s| s.first_seq <= seq)
            .map(|s| s.first_seq)
    }

    /// The first sequence number still on disk.
    fn first_seq(&self) -> u64 {
        let w = self.writer.lock();
        w.segments.front().map_or(w.next_seq, |s| s.first_seq)
    }

    /// The first segment after the one starting at `first_seq`.
    fn segment_after(&self, first_seq: u64) -> Option<u64> {
        let w = self.writer.lock();
        w.segments
            .iter()
            .find(|s| s.first_seq > first_seq)
            .map(|s| s.first_seq)
    }
}

/// What one segment holds, read without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub first_seq: u64,
    pub records: u64,
    pub items: u64,
    pub bytes: u64,
    /// Damaged stretches skipped, and bytes after the last good record.
    pub damaged: u64,
    pub unreadable_tail: u64,
    /// Seconds since the segment was last written.
    pub age_seconds: u64,
}

/// What a log directory holds: its acknowledged position and its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub acked: u64,
    pub segments: Vec<SegmentReport>,
}

/// Reads the log in `dir` without changing it (for `sieve queue inspect`).
pub fn inspect(dir: &Path) -> io::Result<Inspection> {
    let mut segments = Vec::new();
    for first_seq in list_segments(dir)? {
        let path = segment_path(dir, first_seq);
        let metadata = fs::metadata(&path)?;
        let age_seconds = metadata
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .map_or(0, |age| age.as_secs());
        let mut reader = SegmentReader::open(&path, 0)?;
        let mut report = SegmentReport {
            first_seq,
            records: 0,
            items: 0,
            bytes: metadata.len(),
            damaged: 0,
            unreadable_tail: 0,
            age_seconds,
        };
        let mut good_end = 0;
        loop {
            match reader.read_next()? {
                Next::Record(record) => {
                    report.records += 1;
                    report.items += record.items as u64;
                    good_end = reader.offset();
                }
                Next::Damaged { .. } => report.damaged += 1,
                Next::End => break,
            }
        }
        report.unreadable_tail = metadata.len().saturating_sub(good_end);
        segments.push(report);
    }
    Ok(Inspection {
        acked: read_acked(dir),
        segments,
    })
}

fn write_record(file: &mut File, header: &[u8], payload: &[Bytes]) -> io::Result<()> {
    file.write_all(header)?;
    for part in payload {
        file.write_all(part)?;
    }
    Ok(())
}

fn create_segment(dir: &Path, first_seq: u64) -> io::Result<(File, Segment)> {
    let path = segment_path(dir, first_seq);
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    let bytes = file.metadata()?.len();
    sync_dir(dir)?;
    Ok((
        file,
        Segment {
            first_seq,
            bytes,
            items: 0,
            created: std::time::SystemTime::now(),
        },
    ))
}

fn read_acked(dir: &Path) -> u64 {
    let Ok(bytes) = fs::read(dir.join("acked")) else {
        return 0;
    };
    match bytes.as_slice() {
        [seq @ .., a, b, c, d] if seq.len() == 8 => {
            let crc = u32::from_le_bytes([*a, *b, *c, *d]);
            if crc32c::crc32c(seq) == crc {
                u64::from_le_bytes(seq.try_into().unwrap_or_default())
            } else {
                0
            }
        }
        _ => 0,
    }
}

fn write_acked(dir: &Path, seq: u64) -> io::Result<()> {
    let mut bytes = seq.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&seq.to_le_bytes()).to_le_bytes());
    let temporary = dir.join("acked.tmp");
    fs::write(&temporary, &bytes)?;
    fs::rename(&temporary, dir.join("acked"))
}

/// Reads a log's records in order from a position, following appends and segment
/// changes, skipping damage (counted).
pub struct LogReader {
    log: Arc<Log>,
    reading: Arc<Mutex<Reading>>,
    segment: Option<(u64, SegmentReader)>,
}

impl LogReader {
    /// The sequence number of the next record to read.
    pub fn position(&self) -> u64 {
        self.reading.lock().position
    }

    /// Record `seq` arrived another way (the memory queue): false if it was dropped to
    /// make room (and counted), so it must not be processed; if it is the next one to
    /// read, the position moves past it.
    pub fn arrived(&mut self, seq: u64) -> bool {
        let mut reading = self.reading.lock();
        if reading.was_dropped(seq) {
            return false;
        }
        if reading.position == seq {
            reading.advance_to(seq + 1);
        }
        true
    }

    fn advance_to(&self, seq: u64) {
        self.reading.lock().advance_to(seq);
    }

    /// Closes the segment being read if the log has deleted it (everything in it was
    /// acknowledged). An open file keeps a deleted file's space taken, and a reader at
    /// the end of the log reads nothing more until a record is appended: on a full disk,
    /// appends would wait for that space for ever.
    pub fn let_go_of_deleted(&mut self) {
        if self
            .segment
            .as_ref()
            .is_some_and(|(first, _)| *first < self.log.first_seq())
        {
            self.segment = None;
        }
    }

    /// The next record if one was appended, skipping damaged stretches (returned as a
    /// count) and records below the position.
    pub fn read_next(&mut self) -> io::Result<(Option<Record>, u64)> {
        let mut damaged = 0;
        loop {
            let position = self.position();
            if position >= self.log.end() {
                return Ok((None, damaged));
            }
            let Some((first, reader)) = self.segment.as_mut() else {
                let Some(first) = self.log.segment_of(position) else {
                    // deleted underneath (acknowledged): go on from what is left
                    let next = self.log.first_seq().max(self.log.acked());
                    self.advance_to(next.max(position + 1));
                    continue;
                };
                let reader = SegmentReader::open(&segment_path(&self.log.dir, first), 0)?;
                self.segment = Some((first, reader));
                continue;
            };
            match reader.read_next()? {
                Next::Record(record) => {
                    // one below the position was read already; one in a gap was dropped
                    if self.reading.lock().claim(record.seq) {
                        return Ok((Some(record), damaged));
                    }
                }
                Next::Damaged { .. } => damaged += 1,
                Next::End => match self.log.segment_after(*first) {
                    Some(after) => {
                        // records missing before the next segment were lost to damage
                        // or dropped to make room
                        self.advance_to(after);
                        self.segment = None;
                    }
                    None => {
                        // appended records this segment cannot give: damage
                        self.advance_to(self.log.end());
                        return Ok((None, damaged + 1));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
