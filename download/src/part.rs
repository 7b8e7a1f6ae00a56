//! A download in progress on disk: the partial file (`NAME.peerdex-part`, written piece by piece
//! at its offsets) and its state file (`NAME.peerdex-state`: content hash, size, the verified
//! piece hashes, and which pieces are written). Both sit beside the destination so that the
//! final rename is atomic; both names are skipped by the agent's scanner.
//!
//! The state is advisory: on resume every piece it marks done is read back and verified again,
//! so a torn write or a lost update costs a re-fetch, never a corrupt file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use peerdex_shared::FileHash;
use peerdex_shared::peer::{PART_SUFFIX, STATE_SUFFIX};
use peerdex_shared::pieces::{CV_LEN, PieceCv, piece_count};

const MAGIC: &[u8; 8] = b"PDXPART1";

/// Why a state file was not usable.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not a state file of this version, or is truncated.
    #[error("not a valid download state file")]
    Invalid,
}

/// The partial file and state file of one destination.
#[derive(Debug, Clone)]
pub struct PartPaths {
    /// Where the finished file goes.
    pub destination: PathBuf,
    /// The partial file.
    pub data: PathBuf,
    /// The state file.
    pub state: PathBuf,
}

impl PartPaths {
    /// The part and state paths beside `destination`.
    pub fn beside(destination: &Path) -> PartPaths {
        let with = |suffix: &str| {
            let mut name = destination.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        PartPaths {
            destination: destination.to_owned(),
            data: with(PART_SUFFIX),
            state: with(STATE_SUFFIX),
        }
    }
}

/// What is known about a download in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartState {
    /// The content.
    pub hash: FileHash,
    /// Its size.
    pub size: u64,
    /// Verified piece hashes (files of two or more pieces), once fetched.
    pub cvs: Option<Vec<PieceCv>>,
    /// Pieces written to the partial file.
    pub done: Vec<bool>,
}

impl PartState {
    /// A fresh state: nothing done.
    pub fn new(hash: FileHash, size: u64) -> PartState {
        PartState {
            hash,
            size,
            cvs: None,
            done: vec![false; piece_count(size) as usize],
        }
    }

    /// The binary form.
    pub fn encode(&self) -> Vec<u8> {
        let count = self.done.len();
        let mut out = Vec::with_capacity(64 + count * CV_LEN + count / 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.hash.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        match &self.cvs {
            Some(cvs) => {
                out.push(1);
                for cv in cvs {
                    out.extend_from_slice(cv);
                }
            }
            None => out.push(0),
        }
        let mut bits = vec![0u8; count.div_ceil(8)];
        for (i, _) in self.done.iter().enumerate().filter(|(_, d)| **d) {
            bits[i / 8] |= 1 << (i % 8);
        }
        out.extend_from_slice(&bits);
        out
    }

    /// Parses the binary form.
    pub fn decode(bytes: &[u8]) -> Result<PartState, StateError> {
        let mut rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(StateError::Invalid)?;
        let mut take = |n: usize| -> Result<&[u8], StateError> {
            if rest.len() < n {
                return Err(StateError::Invalid);
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let hash = FileHash::from_bytes(take(32)?.try_into().map_err(|_| StateError::Invalid)?);
        let size = u64::from_le_bytes(take(8)?.try_into().map_err(|_| StateError::Invalid)?);
        let count = piece_count(size) as usize;
        let cvs = match take(1)?[0] {
            0 => None,
            1 => Some(
                take(count.checked_mul(CV_LEN).ok_or(StateError::Invalid)?)?
                    .chunks_exact(CV_LEN)
                    .map(|c| {
                        let mut cv = [0u8; CV_LEN];
                        cv.copy_from_slice(c);
                        cv
                    })
                    .collect(),
            ),
            _ => return Err(StateError::Invalid),
        };
        let bits = take(count.div_ceil(8))?;
        let done = (0..count)
            .map(|i| bits[i / 8] & (1 << (i % 8)) != 0)
            .collect();
        Ok(PartState {
            hash,
            size,
            cvs,
            done,
        })
    }

    /// Reads a state file; `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<PartState>, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => PartState::decode(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the state file atomically (temp file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let mut file = File::create(&temp)?;
        file.write_all(&self.encode())?;
        file.sync_data()?;
        std::fs::rename(&temp, path)?;
        Ok(())
    }

    /// Pieces written.
    pub fn done_count(&self) -> u64 {
        self.done.iter().filter(|d| **d).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_rejects_garbage() {
        let mut state = PartState::new(FileHash::from_bytes([7; 32]), 5 * (1 << 20) + 3);
        state.cvs = Some(vec![[1; 32]; 6]);
        state.done[0] = true;
        state.done[5] = true;
        let bytes = state.encode();
        assert_eq!(PartState::decode(&bytes).unwrap(), state);
        assert!(PartState::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(PartState::decode(b"PDXPART0").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.peerdex-state");
        assert_eq!(PartState::load(&path).unwrap(), None);
        state.save(&path).unwrap();
        assert_eq!(PartState::load(&path).unwrap(), Some(state));
    }

    #[test]
    fn part_files_sit_beside_the_destination() {
        let paths = PartPaths::beside(Path::new("/d/song.mp3"));
        assert_eq!(paths.data, Path::new("/d/song.mp3.peerdex-part"));
        assert_eq!(paths.state, Path::new("/d/song.mp3.peerdex-state"));
    }
}
