//! Fixed-size binary identifiers (content hashes, peer keys) and their lowercase hex form.

/// A value could not be parsed from hexadecimal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHexError {
    /// The text has the wrong number of characters.
    #[error("expected {expected} hex characters, got {got}")]
    Length {
        /// Characters required.
        expected: usize,
        /// Characters given.
        got: usize,
    },
    /// The text contains something other than `0-9a-f` / `A-F`.
    #[error("not a hex string")]
    NotHex,
}

/// Decodes exactly `N` bytes from hex, accepting either case.
pub(crate) fn decode_hex<const N: usize>(text: &str) -> Result<[u8; N], ParseHexError> {
    if text.len() != N * 2 {
        return Err(ParseHexError::Length {
            expected: N * 2,
            got: text.chars().count(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| ParseHexError::NotHex)?;
    Ok(out)
}

/// The BLAKE3 hash of a file's content: what peers, searches and downloads address content by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileHash([u8; 32]);

macro_rules! serde_as_hex {
    ($ty:ty, $what:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse()
                    .map_err(|e| serde::de::Error::custom(format_args!("invalid {}: {e}", $what)))
            }
        }
    };
}
pub(crate) use serde_as_hex;

/// The shared surface of 32-byte identifiers shown as hex: constructors, `fmt_short` for logs,
/// `Display`/`FromStr` as 64 hex characters, a short `Debug`, and serde as a hex string.
macro_rules! hex_id {
    ($ty:ident, $what:literal) => {
        impl $ty {
            /// Wraps 32 raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 10 hex characters, enough to tell values apart in logs.
            pub fn fmt_short(&self) -> String {
                hex::encode(&self.0[..5])
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.fmt_short())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::hash::ParseHexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::hash::decode_hex::<32>(s).map(Self)
            }
        }

        $crate::hash::serde_as_hex!($ty, $what);
    };
}
pub(crate) use hex_id;

hex_id!(FileHash, "hash");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_case() {
        let h = FileHash::from_bytes([0xab; 32]);
        let text = h.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<FileHash>(), Ok(h));
        assert_eq!(text.to_uppercase().parse::<FileHash>(), Ok(h));
        assert_eq!(h.fmt_short(), "ababababab");
    }

    #[test]
    fn rejects_bad_hex() {
        assert!(matches!(
            "abc".parse::<FileHash>(),
            Err(ParseHexError::Length { expected: 64, .. })
        ));
        assert_eq!(
            "zz".repeat(32).parse::<FileHash>(),
            Err(ParseHexError::NotHex)
        );
        let json = serde_json::from_str::<FileHash>("\"00\"").unwrap_err();
        assert!(json.to_string().contains("invalid hash"), "{json}");
    }
}
