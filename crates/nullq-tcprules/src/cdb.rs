//! A reader for D. J. Bernstein's constant database (cdb), the format `tcprules` compiles
//! access rules into.
//!
//! This module owns the byte format only: it knows nothing of rules. The format, from
//! <https://cr.yp.to/cdb/cdb.txt>:
//!
//! * a 2048-byte header of 256 `(position, slot count)` pairs, each a little-endian `u32`,
//!   one per hash table;
//! * the records, each `key length (u32 LE)`, `data length (u32 LE)`, the key, the data;
//! * the 256 hash tables, each an array of `(hash, record position)` pairs of `u32 LE`;
//!   a position of 0 marks an empty slot.
//!
//! A key's hash is `h = 5381; for each byte c: h = ((h << 5) + h) ^ c` (mod 2³²). Its table is
//! `h % 256`, and the search starts at slot `(h / 256) % slots` and probes forward, wrapping,
//! until an empty slot. Among records with the same key, the one added first is found first,
//! which is how tcpserver makes the first of two rules for one address win.
//!
//! We write this reader instead of using a crate: the format is a page long, rules files are
//! small enough to read whole into memory (no mmap, no `unsafe`), and every offset read from
//! the file is bounds-checked here so a truncated or corrupt file gives an error naming what
//! is wrong instead of a panic. The cdb crates on crates.io either mmap the file or are no
//! longer maintained.

use std::fmt;

/// Size of the cdb header: 256 hash-table pointers of 8 bytes each.
pub const HEADER_LEN: usize = 2048;

/// What is wrong with a cdb file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CdbError {
    /// The file is shorter than the 2048-byte header.
    TooShort {
        /// The file's length in bytes.
        len: usize,
    },
    /// The file is larger than a cdb can be (4 GiB): offsets are 32-bit.
    TooLong {
        /// The file's length in bytes.
        len: usize,
    },
    /// A header entry points to a hash table that is not inside the file.
    TableOutOfBounds {
        /// Which of the 256 tables (0–255).
        table: usize,
        /// The table's position, as read from the header.
        pos: u32,
        /// The table's number of slots, as read from the header.
        slots: u32,
    },
    /// A record's key is not found through the hash tables.
    Unindexed {
        /// The key, with bad bytes replaced.
        key: String,
    },
    /// A record (its 8-byte length prefix, key or data) runs past its end of the file or area.
    RecordOutOfBounds {
        /// The record's position in the file.
        pos: u32,
    },
}

impl fmt::Display for CdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CdbError::TooShort { len } => write!(
                f,
                "not a cdb: {len} bytes, shorter than the {HEADER_LEN}-byte header"
            ),
            CdbError::TooLong { len } => {
                write!(f, "not a cdb: {len} bytes, more than 32-bit offsets reach")
            }
            CdbError::TableOutOfBounds { table, pos, slots } => write!(
                f,
                "corrupt cdb: hash table {table} at byte {pos} with {slots} slots lies outside the file"
            ),
            CdbError::Unindexed { key } => {
                write!(f, "corrupt cdb: the key {key:?} is not in its hash table")
            }
            CdbError::RecordOutOfBounds { pos } => {
                write!(f, "corrupt cdb: record at byte {pos} runs past the end of the records")
            }
        }
    }
}

impl std::error::Error for CdbError {}

/// The cdb hash of `key`: `h = 5381; h = ((h << 5) + h) ^ c` for each byte, modulo 2³².
pub fn hash(key: &[u8]) -> u32 {
    key.iter()
        .fold(5381u32, |h, &c| (h << 5).wrapping_add(h) ^ u32::from(c))
}

/// One record: `(key, data)`, borrowed from the [`Cdb`].
pub type Record<'a> = (&'a [u8], &'a [u8]);

/// A cdb held in memory.
///
/// [`Cdb::new`] checks the header; every other offset is checked where it is read, so no
/// method panics on a corrupt file.
#[derive(Clone)]
pub struct Cdb {
    bytes: Vec<u8>,
}

impl fmt::Debug for Cdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cdb")
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Cdb {
    /// Takes the whole file's bytes and checks that its header's 256 tables lie inside it.
    pub fn new(bytes: Vec<u8>) -> Result<Cdb, CdbError> {
        let len = bytes.len();
        if len < HEADER_LEN {
            return Err(CdbError::TooShort { len });
        }
        if u32::try_from(len).is_err() {
            return Err(CdbError::TooLong { len });
        }
        let cdb = Cdb { bytes };
        for table in 0..256 {
            let (pos, slots) = cdb.table(table);
            let end = u64::from(pos) + u64::from(slots) * 8;
            if (pos as usize) < HEADER_LEN || end > len as u64 {
                return Err(CdbError::TableOutOfBounds { table, pos, slots });
            }
        }
        Ok(cdb)
    }

    /// The little-endian `u32` at `pos`, or `None` past the end.
    fn u32_at(&self, pos: usize) -> Option<u32> {
        let b = self.bytes.get(pos..pos.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Header entry `table` (0–255): `(position, slots)`. In bounds: the header was checked.
    fn table(&self, table: usize) -> (u32, u32) {
        let pos = self.u32_at(table * 8).unwrap_or(0);
        let slots = self.u32_at(table * 8 + 4).unwrap_or(0);
        (pos, slots)
    }

    /// The record at `pos`, which must end at or before `limit`: `(key, data, next position)`.
    fn record(&self, pos: u32, limit: usize) -> Result<(&[u8], &[u8], u32), CdbError> {
        let bad = CdbError::RecordOutOfBounds { pos };
        let p = pos as usize;
        let klen = self.u32_at(p).ok_or(bad.clone())? as usize;
        let dlen = self.u32_at(p + 4).ok_or(bad.clone())? as usize;
        let kstart = p + 8;
        let dstart = kstart.checked_add(klen).ok_or(bad.clone())?;
        let end = dstart.checked_add(dlen).ok_or(bad.clone())?;
        if end > limit {
            return Err(bad);
        }
        let next = u32::try_from(end).map_err(|_| bad)?;
        Ok((&self.bytes[kstart..dstart], &self.bytes[dstart..end], next))
    }

    /// The data of the first record whose key is `key`, as `cdb_find` in tcpserver finds it,
    /// or `None` when there is none.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>, CdbError> {
        let h = hash(key);
        let (tpos, slots) = self.table((h & 255) as usize);
        if slots == 0 {
            return Ok(None);
        }
        let mut slot = (h >> 8) % slots;
        for _ in 0..slots {
            // In bounds: `Cdb::new` checked that every table lies inside the file.
            let at = tpos as usize + slot as usize * 8;
            let (Some(sh), Some(rpos)) = (self.u32_at(at), self.u32_at(at + 4)) else {
                return Ok(None);
            };
            if rpos == 0 {
                return Ok(None);
            }
            if sh == h {
                let (k, d, _) = self.record(rpos, self.bytes.len())?;
                if k == key {
                    return Ok(Some(d));
                }
            }
            slot += 1;
            if slot == slots {
                slot = 0;
            }
        }
        Ok(None)
    }

    /// Every record in file order, as `cdbdump` lists them: `(key, data)` pairs, duplicates
    /// included. The records end where table 0 starts.
    pub fn records(&self) -> Result<Vec<Record<'_>>, CdbError> {
        let (eod, _) = self.table(0);
        let limit = eod as usize;
        let mut pos = HEADER_LEN as u32;
        let mut out = Vec::new();
        while (pos as usize) < limit {
            let (k, d, next) = self.record(pos, limit)?;
            out.push((k, d));
            pos = next;
        }
        Ok(out)
    }
}

/// A minimal cdb writer, for tests only: the same layout as `cdb_make` in ucspi-tcp, so tests
/// can build cdbs for cases the installed `tcprules` cannot (IPv6 keys).
#[cfg(test)]
pub(crate) fn make(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    let mut entries: Vec<(u32, u32)> = Vec::new();
    for (k, d) in records {
        let pos = out.len() as u32;
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(d.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(d);
        entries.push((hash(k), pos));
    }
    for table in 0..256u32 {
        let mine: Vec<(u32, u32)> = entries
            .iter()
            .copied()
            .filter(|(h, _)| h & 255 == table)
            .collect();
        let slots = (mine.len() * 2) as u32;
        let tpos = out.len() as u32;
        let mut t = vec![(0u32, 0u32); slots as usize];
        for (h, p) in mine {
            let mut s = ((h >> 8) % slots) as usize;
            while t[s].1 != 0 {
                s = (s + 1) % slots as usize;
            }
            t[s] = (h, p);
        }
        for (h, p) in t {
            out.extend_from_slice(&h.to_le_bytes());
            out.extend_from_slice(&p.to_le_bytes());
        }
        let i = table as usize * 8;
        out[i..i + 4].copy_from_slice(&tpos.to_le_bytes());
        out[i + 4..i + 8].copy_from_slice(&slots.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_djb() {
        assert_eq!(hash(b""), 5381);
        // ((5381 << 5) + 5381) ^ 'a' = 177573 ^ 97
        assert_eq!(hash(b"a"), 177_604);
    }

    #[test]
    fn empty_cdb() {
        let bytes = make(&[]);
        assert_eq!(bytes.len(), HEADER_LEN);
        let cdb = Cdb::new(bytes).unwrap();
        assert_eq!(cdb.get(b"").unwrap(), None);
        assert!(cdb.records().unwrap().is_empty());
    }

    #[test]
    fn first_of_duplicates_wins() {
        let cdb = Cdb::new(make(&[
            (b"k", b"one"),
            (b"other", b"x"),
            (b"k", b"two"),
            (b"", b"empty"),
        ]))
        .unwrap();
        assert_eq!(cdb.get(b"k").unwrap(), Some(&b"one"[..]));
        assert_eq!(cdb.get(b"other").unwrap(), Some(&b"x"[..]));
        assert_eq!(cdb.get(b"").unwrap(), Some(&b"empty"[..]));
        assert_eq!(cdb.get(b"missing").unwrap(), None);
        assert_eq!(cdb.records().unwrap().len(), 4);
    }

    #[test]
    fn many_keys() {
        let keys: Vec<String> = (0..2000)
            .map(|i| format!("10.{}.{}.", i / 256, i % 256))
            .collect();
        let recs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_bytes(), k.as_bytes())).collect();
        let cdb = Cdb::new(make(&recs)).unwrap();
        for k in &keys {
            assert_eq!(cdb.get(k.as_bytes()).unwrap(), Some(k.as_bytes()));
        }
    }

    #[test]
    fn short_and_corrupt_files_are_errors() {
        assert_eq!(
            Cdb::new(vec![0; 10]).unwrap_err(),
            CdbError::TooShort { len: 10 }
        );
        // A header pointing past the end.
        let mut bytes = make(&[(b"a", b"b")]);
        bytes[0..4].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(matches!(
            Cdb::new(bytes).unwrap_err(),
            CdbError::TableOutOfBounds { table: 0, .. }
        ));
        // A record whose data length runs past the records area.
        let mut bytes = make(&[(b"a", b"b")]);
        bytes[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let cdb = Cdb::new(bytes).unwrap();
        assert!(matches!(
            cdb.records(),
            Err(CdbError::RecordOutOfBounds { pos: 2048 })
        ));
        assert!(matches!(
            cdb.get(b"a"),
            Err(CdbError::RecordOutOfBounds { pos: 2048 })
        ));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = make(&[(b"1.2.3.4", b""), (b"", b"D\0")]);
        for n in 0..bytes.len() {
            if let Ok(cdb) = Cdb::new(bytes[..n].to_vec()) {
                let _ = cdb.records();
                let _ = cdb.get(b"1.2.3.4");
                let _ = cdb.get(b"");
            }
        }
    }
}
