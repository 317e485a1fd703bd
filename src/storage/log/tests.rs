//! The log against damage: torn tails, flipped bytes, zeroed and foreign segments,
//! arbitrary files, and writes cut at any point.

use super::*;
use proptest::prelude::*;

fn payload(n: u64) -> Vec<Bytes> {
    vec![Bytes::from(
        format!("record {n} ").repeat((n % 7 + 1) as usize),
    )]
}

fn open(dir: &Path) -> (Arc<Log>, Recovered) {
    let (log, found) =
        Log::open_with_segments(dir, u64::MAX, Fsync::Interval(Duration::from_secs(1)), 300)
            .unwrap();
    (Arc::new(log), found)
}

fn append_all(log: &Log, range: std::ops::Range<u64>) {
    for n in range {
        assert_eq!(
            log.append(Signal::Logs, 1, None, None, &payload(n))
                .unwrap(),
            n
        );
    }
}

/// Every record the reader gives from `from`, and the damaged stretches it skipped.
fn read_all(log: &Arc<Log>, from: u64) -> (Vec<u64>, u64) {
    let mut reader = log.reader(from);
    let (mut seqs, mut damaged) = (Vec::new(), 0);
    loop {
        let (record, skipped) = reader.read_next().unwrap();
        damaged += skipped;
        let Some(record) = record else {
            return (seqs, damaged);
        };
        assert_eq!(
            record.payload,
            payload(record.seq).concat(),
            "payload of {}",
            record.seq
        );
        seqs.push(record.seq);
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|first| segment_path(dir, first))
        .collect()
}

#[test]
fn records_come_back_in_order_across_segments_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    append_all(&log, 0..40);
    assert!(segments(dir.path()).len() > 3, "small segments rotate");
    assert_eq!(read_all(&log, 0), ((0..40).collect(), 0));
    assert_eq!(read_all(&log, 25).0, (25..40).collect::<Vec<_>>());
    drop(log);
    let (log, found) = open(dir.path());
    assert_eq!((found.records, found.corrupt, found.torn_bytes), (40, 0, 0));
    append_all(&log, 40..45);
    assert_eq!(read_all(&log, 0).0, (0..45).collect::<Vec<_>>());
}

#[test]
fn a_reader_follows_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    let mut reader = log.reader(0);
    for n in 0..30 {
        append_all(&log, n..n + 1);
        let (record, _) = reader.read_next().unwrap();
        assert_eq!(record.unwrap().seq, n);
        assert_eq!(reader.read_next().unwrap().0, None);
    }
}

#[test]
fn acknowledged_segments_are_deleted_and_reopening_resumes_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    append_all(&log, 0..40);
    let before = segments(dir.path()).len();
    log.acknowledge(30).unwrap();
    assert!(segments(dir.path()).len() < before);
    assert_eq!(
        read_all(&log, 0).0,
        (30..40).collect::<Vec<_>>(),
        "a reader behind the deleted segments resumes at the acknowledged position"
    );
    drop(log);
    let (log, found) = open(dir.path());
    assert_eq!(log.acked(), 30);
    assert_eq!(found.records, 10, "what was not acknowledged is replayed");
    assert_eq!(read_all(&log, log.acked()).0, (30..40).collect::<Vec<_>>());
}

/// Found by the full-disk test: a reader that had read to the end kept the last
/// segment open after it was acknowledged and deleted, so its space never came back.
#[test]
fn a_reader_lets_go_of_a_segment_the_log_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    append_all(&log, 0..3);
    let mut reader = log.reader(0);
    while reader.read_next().unwrap().0.is_some() {}
    let held = segments(dir.path());
    log.acknowledge(3).unwrap();
    assert!(
        held.iter().all(|path| !path.exists()),
        "everything acknowledged is deleted"
    );
    let open_deleted = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.unwrap().path()).ok())
            // a deleted file's link reads "<path> (deleted)"
            .filter(|target| {
                let target = target.to_string_lossy();
                held.iter()
                    .any(|path| target.starts_with(&*path.to_string_lossy()))
            })
            .count()
    };
    assert_eq!(
        open_deleted(),
        1,
        "the reader still holds the deleted segment"
    );
    reader.let_go_of_deleted();
    assert_eq!(open_deleted(), 0);
    append_all(&log, 3..5);
    let (record, _) = reader.read_next().unwrap();
    assert_eq!(
        record.unwrap().seq,
        3,
        "and reads on from the segment after it"
    );
}

#[test]
fn a_torn_tail_is_cut_off_and_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    append_all(&log, 0..10);
    drop(log);
    let last = segments(dir.path()).pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(&last).unwrap();
    file.write_all(&encode_header(10, Signal::Logs, 1, &payload(10))[..20])
        .unwrap();
    drop(file);
    let (log, found) = open(dir.path());
    assert_eq!((found.records, found.torn_bytes), (10, 20));
    append_all(&log, 10..12);
    assert_eq!(read_all(&log, 0), ((0..12).collect(), 0));
}

#[test]
fn a_flipped_byte_skips_one_record_and_never_blocks_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    append_all(&log, 0..6);
    drop(log);
    let first = &segments(dir.path())[0];
    let mut bytes = fs::read(first).unwrap();
    let second_record = HEADER_BYTES + payload(0)[0].len();
    bytes[second_record + HEADER_BYTES + 2] ^= 0x40;
    fs::write(first, &bytes).unwrap();
    let (log, found) = open(dir.path());
    assert_eq!(found.corrupt, 1);
    let (seqs, damaged) = read_all(&log, 0);
    assert!(
        !seqs.contains(&1) && seqs.contains(&0) && seqs.contains(&5),
        "{seqs:?}"
    );
    assert_eq!(damaged, 1);
}

#[test]
fn zeroed_and_foreign_segments_are_damage_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    append_all(&log, 0..20);
    drop(log);
    let all = segments(dir.path());
    let zeroed = &all[1];
    let length = fs::metadata(zeroed).unwrap().len() as usize;
    fs::write(zeroed, vec![0u8; length]).unwrap();
    let foreign = &all[2];
    let mut bytes = fs::read(foreign).unwrap();
    bytes[4] = VERSION + 1; // a record of another version
    fs::write(foreign, &bytes).unwrap();
    let (log, found) = open(dir.path());
    assert!(found.corrupt >= 1, "{found:?}");
    let (seqs, _) = read_all(&log, 0);
    assert!(
        seqs.contains(&0) && seqs.contains(&19),
        "the rest is delivered: {seqs:?}"
    );
    append_all(&log, 20..21);
}

#[test]
fn a_full_log_refuses_and_takes_appends_again_once_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open_with_segments(dir.path(), 1000, Fsync::Always, 300).unwrap();
    let mut n = 0;
    while log.append(Signal::Logs, 1, None, None, &payload(n)).is_ok() {
        n += 1;
    }
    assert!(matches!(
        log.append(Signal::Logs, 1, None, None, &payload(n)),
        Err(AppendError::Full)
    ));
    log.acknowledge(n).unwrap();
    assert!(log.append(Signal::Logs, 1, None, None, &payload(n)).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any bytes as a segment: opening and reading end, in bounded memory.
    #[test]
    fn any_file_opens_and_reads_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..4096), magic_at in 0usize..4096) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = bytes;
        if magic_at + 4 <= bytes.len() {
            bytes[magic_at..magic_at + 4].copy_from_slice(&MAGIC);
        }
        fs::write(segment_path(dir.path(), 0), &bytes).unwrap();
        let (log, _) = open(dir.path());
        let mut reader = log.reader(0);
        while reader.read_next().unwrap().0.is_some() {}
        log.append(Signal::Traces, 1, None, None, &payload(1)).unwrap();
    }

    /// A crash that cuts the segment being written at any byte loses only the record
    /// being written: every record written completely before is read back.
    #[test]
    fn a_write_cut_anywhere_keeps_every_complete_record(records in 1u64..30, cut in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path());
        append_all(&log, 0..records);
        drop(log);
        let last = segments(dir.path()).pop().unwrap();
        let length = fs::metadata(&last).unwrap().len() as usize;
        let keep = cut.index(length + 1);
        OpenOptions::new().write(true).open(&last).unwrap().set_len(keep as u64).unwrap();
        let complete = {
            // records of the last segment that end at or before the cut
            let first = list_segments(dir.path()).unwrap().pop().unwrap();
            let mut end = 0usize;
            let mut n = first;
            // a record: its header, an empty metadata block (its count, 2 bytes), an empty
            // client block (1 byte), the request
            let size = |n: u64| HEADER_BYTES + 2 + 1 + payload(n)[0].len();
            while n < records && end + size(n) <= keep {
                end += size(n);
                n += 1;
            }
            n
        };
        let (log, found) = open(dir.path());
        prop_assert_eq!(found.corrupt, 0);
        let (seqs, _) = read_all(&log, 0);
        prop_assert_eq!(seqs, (0..complete).collect::<Vec<_>>());
    }
}

#[test]
fn inspection_reports_records_and_damage_without_changing_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    append_all(&log, 0..10);
    log.acknowledge(2).unwrap();
    drop(log);
    let last = segments(dir.path()).pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(&last).unwrap();
    file.write_all(b"torn").unwrap();
    drop(file);
    let before = fs::metadata(&last).unwrap().len();
    let found = inspect(dir.path()).unwrap();
    assert_eq!(found.acked, 2);
    assert_eq!(found.segments.iter().map(|s| s.records).sum::<u64>(), 10);
    assert_eq!(found.segments.last().unwrap().unreadable_tail, 4);
    assert_eq!(
        fs::metadata(&last).unwrap().len(),
        before,
        "inspection changes nothing"
    );
}

/// A crash between creating a segment and syncing the directory leaves an empty
/// segment file, or none: either way the log opens and goes on.
#[test]
fn a_crash_around_segment_creation_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    append_all(&log, 0..12);
    drop(log);
    // the segment a crashed rotation created, empty
    fs::write(segment_path(dir.path(), 12), b"").unwrap();
    let (log, found) = open(dir.path());
    assert_eq!((found.records, found.corrupt), (12, 0));
    append_all(&log, 12..14);
    drop(log);
    // and one whose creation never reached the directory: gone after the crash
    let newest = segments(dir.path()).pop().unwrap();
    fs::remove_file(&newest).unwrap();
    let (log, _) = open(dir.path());
    let (seqs, damaged) = read_all(&log, 0);
    assert_eq!(damaged, 0);
    assert!(seqs.starts_with(&(0..12).collect::<Vec<_>>()), "{seqs:?}");
    let next = log.end();
    assert_eq!(
        log.append(Signal::Logs, 1, None, None, &payload(next))
            .unwrap(),
        next
    );
}

/// Whether record `seq` is in a segment file of the log.
fn on_disk(log: &Log, seq: u64) -> bool {
    let Some(first) = log.segment_of(seq) else {
        return false;
    };
    let mut reader = SegmentReader::open(&segment_path(log.dir(), first), 0).unwrap();
    loop {
        match reader.read_next().unwrap() {
            Next::Record(record) if record.seq == seq => return true,
            Next::End => return false,
            _ => {}
        }
    }
}

fn dropping_log(dir: &Path, max_bytes: u64) -> Arc<Log> {
    let (log, _) =
        Log::open_with_segments(dir, max_bytes, Fsync::Interval(Duration::from_secs(1)), 300)
            .unwrap();
    log.set_limit(max_bytes, true);
    Arc::new(log)
}

#[test]
fn a_full_log_with_drop_oldest_deletes_its_oldest_unread_segment_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dropping_log(dir.path(), 2000);
    append_all(&log, 0..200);
    let dropped = log.take_dropped();
    assert!(dropped.items > 0, "appends went on past the limit");
    assert_eq!(dropped.recovered, 0);
    assert!(log.size().0 <= 2000, "{:?}", log.size());
    let (seqs, damaged) = read_all(&log, 0);
    assert_eq!(damaged, 0);
    assert_eq!(
        seqs.len() as u64 + dropped.items,
        200,
        "every record is read or counted as dropped"
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert_eq!(*seqs.last().unwrap(), 199, "the newest are kept");
}

#[test]
fn drop_oldest_never_deletes_what_is_being_sent_and_refuses_when_only_that_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let log = dropping_log(dir.path(), 2000);
    let mut reader = log.reader(0);
    let mut n = 0;
    loop {
        match log.append(Signal::Logs, 1, None, None, &payload(n)) {
            Ok(_) => n += 1,
            Err(AppendError::Full) => break,
            Err(e) => panic!("{e:?}"),
        }
        // the reader takes everything as it comes: nothing is unread, so nothing can
        // be dropped, and the log fills with what is being sent
        while reader.read_next().unwrap().0.is_some() {}
    }
    assert_eq!(log.take_dropped().items, 0);
    assert!(
        segments(dir.path()).len() > 1,
        "what was read and not acknowledged stays on disk"
    );
    log.acknowledge(reader.position()).unwrap();
    assert!(log.append(Signal::Logs, 1, None, None, &payload(n)).is_ok());
}

#[test]
fn a_dropped_record_arriving_through_memory_is_not_processed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dropping_log(dir.path(), 2000);
    let mut reader = log.reader(0);
    append_all(&log, 0..200);
    assert!(log.take_dropped().items > 0);
    assert!(
        !reader.arrived(0),
        "record 0 was in the oldest segment, dropped"
    );
    assert!(reader.arrived(199), "the newest was kept");
    let (record, _) = reader.read_next().unwrap();
    assert!(record.unwrap().seq > 0, "reading resumes after the gap");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Appends, reads through the log or the memory queue, and acknowledgements in any
    /// order, with drop_oldest: every record is processed once or counted as dropped,
    /// in order, and what was taken stays on disk until acknowledged.
    #[test]
    fn drop_oldest_accounts_for_every_record(steps in proptest::collection::vec(0u8..5, 1..400)) {
        let dir = tempfile::tempdir().unwrap();
        let log = dropping_log(dir.path(), 1500);
        let mut reader = log.reader(0);
        let (mut appended, mut taken, mut dropped) = (Vec::new(), Vec::new(), 0u64);
        for step in steps {
            match step {
                0 | 1 => {
                    let n = log.end();
                    if log.append(Signal::Logs, 1, None, None, &payload(n)).is_ok() {
                        appended.push(n);
                    }
                }
                2 => {
                    if let (Some(record), _) = reader.read_next().unwrap() {
                        taken.push(record.seq);
                    }
                }
                3 => {
                    // everything taken but the last few has left
                    let sent = taken.len().saturating_sub(3);
                    if let Some(&below) = taken.get(sent) {
                        log.acknowledge(below).unwrap();
                    }
                }
                _ => {
                    // the newest record arrives through the memory queue
                    if let Some(&n) = appended.last() {
                        if reader.position() <= n && taken.last().is_none_or(|&t| t < n) {
                            while reader.position() < n {
                                match reader.read_next().unwrap().0 {
                                    Some(record) => taken.push(record.seq),
                                    None => break,
                                }
                            }
                            if reader.arrived(n) {
                                taken.push(n);
                            }
                        }
                    }
                }
            }
            dropped += log.take_dropped().items;
            for seq in taken.iter().filter(|&&seq| seq >= log.acked()) {
                prop_assert!(on_disk(&log, *seq), "taken {} deleted", seq);
            }
        }
        while let (Some(record), _) = reader.read_next().unwrap() {
            taken.push(record.seq);
        }
        prop_assert!(taken.windows(2).all(|w| w[0] < w[1]), "once, in order: {:?}", taken);
        prop_assert_eq!(taken.len() as u64 + dropped, appended.len() as u64);
    }
}

/// The request metadata (a tenant) and the client's address go into the record and come
/// back with it; records written before the client was kept (version 2) and before
/// metadata was kept (version 1) still read, without them.
#[test]
fn metadata_and_client_survive_the_log_and_old_records_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    let tenant = Metadata::from_pairs([("x-scope-orgid".to_string(), "team-a".to_string())]);
    let v4: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    let v6: std::net::IpAddr = "fd00::7".parse().unwrap();
    log.append(Signal::Logs, 1, Some(&tenant), Some(v4), &payload(0))
        .unwrap();
    log.append(Signal::Logs, 1, None, Some(v6), &payload(1))
        .unwrap();
    drop(log);
    let segment = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    // records as sieve wrote them before: version 2 (an empty metadata block, then the
    // request) and version 1 (the request alone)
    let old = |seq: u64, version: u8, prefix: &[u8]| {
        let body = [prefix, &payload(seq).concat()[..]].concat();
        let mut header = [0u8; HEADER_BYTES];
        header[0..4].copy_from_slice(&MAGIC);
        header[4] = version;
        header[5] = Signal::Logs as u8;
        header[6..10].copy_from_slice(&1u32.to_le_bytes());
        header[10..18].copy_from_slice(&seq.to_le_bytes());
        header[18..22].copy_from_slice(&(body.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[4..22]), &body);
        header[22..26].copy_from_slice(&crc.to_le_bytes());
        [&header[..], &body].concat()
    };
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&old(2, VERSION_WITHOUT_CLIENT, &[0, 0]))
        .unwrap();
    file.write_all(&old(3, VERSION_WITHOUT_METADATA, &[]))
        .unwrap();
    drop(file);
    let (log, found) = open(dir.path());
    assert_eq!(found.corrupt, 0);
    let mut reader = log.reader(0);
    let mut read = Vec::new();
    while let (Some(record), _) = reader.read_next().unwrap() {
        assert_eq!(record.payload, payload(record.seq).concat());
        read.push((record.seq, record.metadata, record.client));
    }
    assert_eq!(
        read,
        [
            (0, Some(tenant), Some(v4)),
            (1, None, Some(v6)),
            (2, None, None),
            (3, None, None)
        ]
    );
}

/// A rotation that fails when everything has left (the new segment cannot be created)
/// is tried again at the next acknowledgement of the same position, so the last
/// segment's space comes back; before, the log kept it until more data came and left.
#[test]
fn a_failed_rotation_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    append_all(&log, 0..3);
    // a directory where the next segment would be created makes the rotation fail
    fs::create_dir(segment_path(dir.path(), 3)).unwrap();
    assert!(log.acknowledge(3).is_err());
    assert!(log.size().0 > 0, "the delivered segment is still there");
    fs::remove_dir(segment_path(dir.path(), 3)).unwrap();
    log.acknowledge(3).unwrap();
    assert_eq!(
        log.size(),
        (0, 0),
        "the retried rotation freed the delivered segment"
    );
}
