//! Piece verification: how a downloader checks each piece of a file, from any source, against the
//! file's BLAKE3 hash before writing it.
//!
//! A file is cut into pieces of [`PIECE_SIZE`] bytes (the last one may be shorter). Because the
//! piece size is a power of two number of BLAKE3 chunks, every piece is a complete subtree of the
//! file's BLAKE3 tree, and the tree above the pieces is the same left-balanced binary tree BLAKE3
//! builds over chunks. The sharer keeps the chaining value (CV) of every piece — 32 bytes per MiB
//! — and hands out, for a range of pieces, a *proof*: the CVs of those pieces plus the CVs of the
//! subtrees beside them. [`verify_proof`] rebuilds the root from the proof and compares it with
//! the file's hash; only then are the piece CVs trusted, and each downloaded piece is checked
//! against its CV with [`piece_cv`].
//!
//! A file of one piece (up to 1 MiB, including the empty file) has no interior tree: it is
//! verified by hashing it whole.
//!
//! Wire form of a proof: the CVs concatenated, 32 bytes each, in tree order (left to right).

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::FileHash;

/// Bytes per piece: 1 MiB, i.e. 1024 BLAKE3 chunks.
pub const PIECE_SIZE: u64 = 1 << 20;

/// Length of one chaining value on the wire.
pub const CV_LEN: usize = 32;

/// Chaining value of a piece or subtree.
pub type PieceCv = ChainingValue;

/// Why a proof or piece did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PieceError {
    /// The piece range is empty or beyond the end of the file.
    #[error("pieces {first}..{end} are not within the file's {count} pieces")]
    OutOfRange {
        /// First piece asked for.
        first: u64,
        /// One past the last piece asked for.
        end: u64,
        /// Pieces in the file.
        count: u64,
    },
    /// The proof has the wrong number of hashes for that range.
    #[error("proof has {got} hashes, expected {expected}")]
    ProofLength {
        /// Hashes expected.
        expected: usize,
        /// Hashes received.
        got: usize,
    },
    /// The proof does not lead to the file's hash.
    #[error("proof does not match the content hash")]
    ProofMismatch,
    /// The bytes of a piece do not match their verified hash.
    #[error("piece {0} does not match its hash")]
    PieceMismatch(u64),
}

/// Number of pieces of a file of `len` bytes (an empty file has one, empty, piece).
pub fn piece_count(len: u64) -> u64 {
    len.div_ceil(PIECE_SIZE).max(1)
}

/// Byte range of piece `index` in a file of `len` bytes.
pub fn piece_range(len: u64, index: u64) -> std::ops::Range<u64> {
    let start = index.saturating_mul(PIECE_SIZE).min(len);
    start..start.saturating_add(PIECE_SIZE).min(len)
}

/// The chaining value of piece `index`, given its bytes. Only meaningful for files of two or
/// more pieces (a single piece is the root and is checked with `blake3::hash`).
pub fn piece_cv(index: u64, bytes: &[u8]) -> PieceCv {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * PIECE_SIZE);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// Pieces in the left subtree of a node spanning `n >= 2` pieces: the largest power of two below
/// `n`, exactly as BLAKE3 splits chunks.
fn left_pieces(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The CV of the subtree over `cvs` (non-root).
fn subtree_cv(cvs: &[PieceCv]) -> PieceCv {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let split = left_pieces(cvs.len() as u64) as usize;
    merge_subtrees_non_root(
        &subtree_cv(&cvs[..split]),
        &subtree_cv(&cvs[split..]),
        Mode::Hash,
    )
}

/// The file hash implied by the CVs of all its pieces (two or more).
pub fn root_from_cvs(cvs: &[PieceCv]) -> FileHash {
    if cvs.len() < 2 {
        // Callers never do this; a single piece is its own root and has no CV list.
        return FileHash::from_bytes(cvs.first().copied().unwrap_or_default());
    }
    let split = left_pieces(cvs.len() as u64) as usize;
    let root = merge_subtrees_root(
        &subtree_cv(&cvs[..split]),
        &subtree_cv(&cvs[split..]),
        Mode::Hash,
    );
    FileHash::from_bytes(*root.as_bytes())
}

fn check_range(count: u64, first: u64, end: u64) -> Result<(), PieceError> {
    if count < 2 || first >= end || end > count {
        return Err(PieceError::OutOfRange { first, end, count });
    }
    Ok(())
}

/// The proof for pieces `first..end`, from the CVs of all pieces of the file.
pub fn build_proof(cvs: &[PieceCv], first: u64, end: u64) -> Result<Vec<PieceCv>, PieceError> {
    check_range(cvs.len() as u64, first, end)?;
    let mut out = Vec::new();
    fn walk(cvs: &[PieceCv], lo: u64, first: u64, end: u64, out: &mut Vec<PieceCv>) {
        let hi = lo + cvs.len() as u64;
        if hi <= first || lo >= end {
            out.push(subtree_cv(cvs));
        } else if cvs.len() == 1 {
            out.push(cvs[0]);
        } else {
            let split = left_pieces(cvs.len() as u64) as usize;
            walk(&cvs[..split], lo, first, end, out);
            walk(&cvs[split..], lo + split as u64, first, end, out);
        }
    }
    walk(cvs, 0, first, end, &mut out);
    Ok(out)
}

/// Number of hashes in the proof for pieces `first..end` of a file of `count` pieces.
pub fn proof_len(count: u64, first: u64, end: u64) -> Result<usize, PieceError> {
    check_range(count, first, end)?;
    fn walk(lo: u64, n: u64, first: u64, end: u64) -> usize {
        let hi = lo + n;
        if hi <= first || lo >= end || n == 1 {
            1
        } else {
            let split = left_pieces(n);
            walk(lo, split, first, end) + walk(lo + split, n - split, first, end)
        }
    }
    Ok(walk(0, count, first, end))
}

/// Checks a proof for pieces `first..end` of the file `root` of `len` bytes and returns the
/// verified CVs of those pieces, in order.
pub fn verify_proof(
    root: &FileHash,
    len: u64,
    first: u64,
    end: u64,
    proof: &[PieceCv],
) -> Result<Vec<PieceCv>, PieceError> {
    let count = piece_count(len);
    let expected = proof_len(count, first, end)?;
    if proof.len() != expected {
        return Err(PieceError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    struct Walk<'a> {
        proof: std::slice::Iter<'a, PieceCv>,
        first: u64,
        end: u64,
        pieces: Vec<PieceCv>,
    }
    impl Walk<'_> {
        // Returns the CV of the node spanning `n` pieces from `lo`; the length check above
        // guarantees the proof has an item for every leaf visited.
        fn node(&mut self, lo: u64, n: u64) -> PieceCv {
            let hi = lo + n;
            if hi <= self.first || lo >= self.end || n == 1 {
                let cv = self.proof.next().copied().unwrap_or_default();
                if n == 1 && lo >= self.first && lo < self.end {
                    self.pieces.push(cv);
                }
                cv
            } else {
                let split = left_pieces(n);
                let left = self.node(lo, split);
                let right = self.node(lo + split, n - split);
                merge_subtrees_non_root(&left, &right, Mode::Hash)
            }
        }
    }
    let mut walk = Walk {
        proof: proof.iter(),
        first,
        end,
        pieces: Vec::with_capacity((end - first) as usize),
    };
    // The root always contains a piece in range (first < end <= count), so it is split here.
    let split = left_pieces(count);
    let left = walk.node(0, split);
    let right = walk.node(split, count - split);
    let computed = merge_subtrees_root(&left, &right, Mode::Hash);
    if computed.as_bytes() != root.as_bytes() {
        return Err(PieceError::ProofMismatch);
    }
    Ok(walk.pieces)
}

/// Checks the bytes of piece `index` against its verified CV (files of two or more pieces) or
/// against the root (a one-piece file).
pub fn verify_piece(
    root: &FileHash,
    len: u64,
    index: u64,
    expected_cv: Option<&PieceCv>,
    bytes: &[u8],
) -> Result<(), PieceError> {
    let range = piece_range(len, index);
    if bytes.len() as u64 != range.end - range.start {
        return Err(PieceError::PieceMismatch(index));
    }
    let ok = if piece_count(len) == 1 {
        blake3::hash(bytes).as_bytes() == root.as_bytes()
    } else {
        expected_cv.is_some_and(|cv| piece_cv(index, bytes) == *cv)
    };
    if ok {
        Ok(())
    } else {
        Err(PieceError::PieceMismatch(index))
    }
}

/// Concatenates CVs into their wire form.
pub fn encode_cvs(cvs: &[PieceCv]) -> Vec<u8> {
    cvs.concat()
}

/// Splits the wire form into CVs; `None` when the length is not a multiple of 32.
pub fn decode_cvs(bytes: &[u8]) -> Option<Vec<PieceCv>> {
    if !bytes.len().is_multiple_of(CV_LEN) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(CV_LEN)
            .map(|c| {
                let mut cv = [0u8; CV_LEN];
                cv.copy_from_slice(c);
                cv
            })
            .collect(),
    )
}

/// A set of pieces of one content, written `A-B,C-D` (each range with `B` exclusive; empty:
/// none) with the piece count: the verified pieces a partial download holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PieceSet {
    /// Pieces of the content.
    pub count: u64,
    /// Held ranges, ascending, disjoint, not adjacent, each non-empty and within `count`.
    ranges: Vec<(u64, u64)>,
}

/// Why a piece set could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid piece set: {0}")]
pub struct PieceSetError(&'static str);

/// Most ranges a piece set may have (a checkerboard of 8,192 pieces).
pub const MAX_PIECE_RANGES: usize = 4096;

impl PieceSet {
    /// The pieces marked `true`.
    pub fn from_done(done: &[bool]) -> PieceSet {
        let mut ranges = Vec::new();
        let mut start = None;
        for (i, &held) in done.iter().enumerate() {
            match (held, start) {
                (true, None) => start = Some(i as u64),
                (false, Some(s)) => {
                    ranges.push((s, i as u64));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            ranges.push((s, done.len() as u64));
        }
        PieceSet {
            count: done.len() as u64,
            ranges,
        }
    }

    /// Whether piece `i` is held.
    pub fn contains(&self, i: u64) -> bool {
        let at = self.ranges.partition_point(|&(_, end)| end <= i);
        self.ranges.get(at).is_some_and(|&(start, _)| start <= i)
    }

    /// Whether every piece of `first..end` is held.
    pub fn covers(&self, first: u64, end: u64) -> bool {
        first >= end
            || self
                .ranges
                .iter()
                .any(|&(start, stop)| start <= first && end <= stop)
    }

    /// The pieces held, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(start, end)| start..end)
    }

    /// Pieces held.
    pub fn held(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Reads the `A-B,C-D` form for a content of `count` pieces.
    pub fn parse(text: &str, count: u64) -> Result<PieceSet, PieceSetError> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            if ranges.len() >= MAX_PIECE_RANGES {
                return Err(PieceSetError("too many ranges"));
            }
            let (a, b) = part
                .split_once('-')
                .ok_or(PieceSetError("a range is A-B"))?;
            let (a, b): (u64, u64) = (
                a.parse().map_err(|_| PieceSetError("not a number"))?,
                b.parse().map_err(|_| PieceSetError("not a number"))?,
            );
            if a >= b || b > count {
                return Err(PieceSetError("a range is empty or past the last piece"));
            }
            if ranges.last().is_some_and(|&(_, end)| end >= a) {
                return Err(PieceSetError("ranges overlap, touch or are out of order"));
            }
            ranges.push((a, b));
        }
        Ok(PieceSet { count, ranges })
    }

    /// The `A-B,C-D` form.
    pub fn ranges_text(&self) -> String {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(a, b)| format!("{a}-{b}"))
            .collect();
        parts.join(",")
    }
}

impl serde::Serialize for PieceSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("PieceSet", 2)?;
        out.serialize_field("count", &self.count)?;
        out.serialize_field("held", &self.ranges_text())?;
        out.end()
    }
}

impl<'de> serde::Deserialize<'de> for PieceSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wire {
            count: u64,
            held: String,
        }
        let wire = Wire::deserialize(deserializer)?;
        PieceSet::parse(&wire.held, wire.count).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_sets_round_trip_and_refuse_what_is_not_a_set() {
        let set = PieceSet::from_done(&[true, true, false, true, false, false, true]);
        assert_eq!(set.ranges_text(), "0-2,3-4,6-7");
        assert_eq!(set.held(), 4);
        assert!(set.contains(0) && set.contains(3) && set.contains(6));
        assert!(!set.contains(2) && !set.contains(5) && !set.contains(7));
        assert!(set.covers(0, 2) && !set.covers(0, 4) && set.covers(5, 5));
        assert_eq!(PieceSet::parse("0-2,3-4,6-7", 7).unwrap(), set);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(serde_json::from_str::<PieceSet>(&json).unwrap(), set);
        for bad in ["0-2,2-4", "3-4,0-2", "0-8", "2-2", "x-1", "1"] {
            assert!(PieceSet::parse(bad, 7).is_err(), "{bad}");
        }
        assert_eq!(PieceSet::parse("", 7).unwrap().held(), 0);
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn cvs_of(bytes: &[u8]) -> Vec<PieceCv> {
        let len = bytes.len() as u64;
        (0..piece_count(len))
            .map(|i| {
                let r = piece_range(len, i);
                piece_cv(i, &bytes[r.start as usize..r.end as usize])
            })
            .collect()
    }

    const P: usize = PIECE_SIZE as usize;

    #[test]
    fn piece_cvs_rebuild_the_blake3_hash() {
        for len in [P + 1, 2 * P, 2 * P + 1, 3 * P - 1, 5 * P + 77, 8 * P] {
            let bytes = data(len);
            let root = root_from_cvs(&cvs_of(&bytes));
            assert_eq!(
                root.as_bytes(),
                blake3::hash(&bytes).as_bytes(),
                "len {len}"
            );
        }
    }

    #[test]
    fn proofs_verify_every_range_and_reject_tampering() {
        let len = 7 * P + 5;
        let bytes = data(len);
        let root = FileHash::from_bytes(*blake3::hash(&bytes).as_bytes());
        let cvs = cvs_of(&bytes);
        for first in 0..8u64 {
            for end in first + 1..=8 {
                let proof = build_proof(&cvs, first, end).unwrap();
                assert_eq!(proof.len(), proof_len(8, first, end).unwrap());
                let pieces = verify_proof(&root, len as u64, first, end, &proof).unwrap();
                assert_eq!(pieces, cvs[first as usize..end as usize]);
                let mut bad = proof.clone();
                bad[0][0] ^= 1;
                assert_eq!(
                    verify_proof(&root, len as u64, first, end, &bad),
                    Err(PieceError::ProofMismatch)
                );
            }
        }
        let short = build_proof(&cvs, 0, 2).unwrap();
        assert!(matches!(
            verify_proof(&root, len as u64, 0, 3, &short),
            Err(PieceError::ProofLength { .. })
        ));
        assert!(build_proof(&cvs, 3, 9).is_err());
    }

    #[test]
    fn pieces_verify_and_a_flipped_bit_does_not() {
        let len = 3 * P - 1;
        let bytes = data(len);
        let root = FileHash::from_bytes(*blake3::hash(&bytes).as_bytes());
        let cvs = cvs_of(&bytes);
        let r = piece_range(len as u64, 2);
        let mut piece = bytes[r.start as usize..r.end as usize].to_vec();
        verify_piece(&root, len as u64, 2, Some(&cvs[2]), &piece).unwrap();
        piece[10] ^= 0x40;
        assert_eq!(
            verify_piece(&root, len as u64, 2, Some(&cvs[2]), &piece),
            Err(PieceError::PieceMismatch(2))
        );
        // The right bytes at the wrong offset do not verify either.
        let first = &bytes[..P];
        assert!(verify_piece(&root, len as u64, 1, Some(&cvs[1]), first).is_err());
    }

    #[test]
    fn single_piece_files_verify_against_the_root() {
        for len in [0, 1, P - 1, P] {
            let bytes = data(len);
            let root = FileHash::from_bytes(*blake3::hash(&bytes).as_bytes());
            assert_eq!(piece_count(len as u64), 1);
            verify_piece(&root, len as u64, 0, None, &bytes).unwrap();
            assert!(build_proof(&[], 0, 1).is_err());
        }
    }

    #[test]
    fn wire_form_round_trips() {
        let cvs = vec![[1u8; 32], [2u8; 32]];
        assert_eq!(decode_cvs(&encode_cvs(&cvs)).unwrap(), cvs);
        assert!(decode_cvs(&[0u8; 33]).is_none());
    }
}
