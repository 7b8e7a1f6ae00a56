//! Synthetic shared folders shaped like real collections, deterministic from a seed.
//!
//! A [`Corpus`] draws file lists for simulated peers and queries for simulated users:
//! - music (`Music/Artist/Album (Year)/07 - Title.mp3`), video (films and series episodes),
//!   documents (papers, books, manuals) and software (versioned installers and disk images), with
//!   sizes drawn from log-normal distributions per format;
//! - names in English, accented European words, Korean (Hangul) and Japanese, plus invented words
//!   for the long tail; words are drawn by a Zipf law over the vocabulary, as in real titles;
//! - popular content: part of every list comes from a shared catalogue, picked by a Zipf law over
//!   its rank, so one hash is held by many peers under the same or a different folder;
//! - queries of 1–3 words taken from names that exist (popular ones more often) or drawn from the
//!   vocabulary, some with a kind, extension or size filter.
//!
//! Everything is a pure function of the seed and the indexes asked for: the same peer's list is
//! identical in every run, so a data directory built once can be reused.

use std::collections::HashSet;

use peerdex_shared::FileHash;
use peerdex_shared::api::{ListEntry, MediaTags};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};

/// Common title words, most frequent first (the head of the Zipf law).
const ENGLISH: &[&str] = &[
    "the",
    "love",
    "of",
    "live",
    "night",
    "my",
    "in",
    "you",
    "remix",
    "me",
    "blue",
    "a",
    "day",
    "heart",
    "to",
    "time",
    "dream",
    "light",
    "life",
    "world",
    "song",
    "feat",
    "version",
    "best",
    "home",
    "dance",
    "rain",
    "summer",
    "edit",
    "fire",
    "girl",
    "man",
    "city",
    "baby",
    "road",
    "star",
    "sun",
    "moon",
    "gold",
    "black",
    "white",
    "red",
    "river",
    "ocean",
    "sky",
    "wild",
    "new",
    "old",
    "last",
    "first",
    "little",
    "sweet",
    "dark",
    "lost",
    "free",
    "young",
    "forever",
    "away",
    "together",
    "alone",
    "morning",
    "midnight",
    "winter",
    "spring",
    "autumn",
    "angel",
    "blues",
    "piano",
    "sonata",
    "symphony",
    "concerto",
    "suite",
    "acoustic",
    "session",
    "radio",
    "mix",
    "original",
    "extended",
    "instrumental",
    "theme",
    "overture",
    "prelude",
    "waltz",
    "nocturne",
    "ballad",
    "anthem",
    "echo",
    "shadow",
    "ghost",
    "silver",
    "glass",
    "paper",
    "story",
    "secret",
    "memory",
    "promise",
    "letter",
    "window",
    "garden",
    "mountain",
    "desert",
    "island",
    "train",
    "highway",
    "electric",
    "golden",
    "crystal",
    "velvet",
    "neon",
    "cherry",
    "honey",
    "sugar",
    "whisper",
    "thunder",
    "storm",
    "wind",
    "snow",
    "fever",
    "wonder",
    "magic",
    "mystery",
    "freedom",
    "kingdom",
    "empire",
    "revolution",
    "paradise",
    "heaven",
    "hell",
    "soul",
    "spirit",
    "mind",
    "body",
    "eyes",
    "hands",
    "kiss",
    "tears",
    "smile",
    "goodbye",
    "hello",
    "tonight",
    "tomorrow",
    "yesterday",
    "always",
    "never",
    "everything",
    "nothing",
    "somebody",
    "nobody",
];

/// Accented and other European words.
const EUROPEAN: &[&str] = &[
    "café",
    "déjà",
    "vu",
    "corazón",
    "été",
    "mañana",
    "über",
    "fräulein",
    "niño",
    "canción",
    "amour",
    "cœur",
    "noël",
    "señorita",
    "schön",
    "größe",
    "ångström",
    "smörgåsbord",
    "façade",
    "naïve",
    "rêve",
    "étoile",
    "soleil",
    "lune",
    "mer",
    "nuit",
    "jour",
    "vida",
    "alma",
    "fuego",
    "días",
    "tú",
    "música",
    "düsseldorf",
    "zürich",
    "kraków",
    "łódź",
    "mädchen",
    "straße",
    "fjörd",
    "sjön",
    "häst",
    "über",
    "été",
    "éclair",
    "señor",
    "açaí",
    "são",
    "coração",
];

/// Korean words (Hangul).
const KOREAN: &[&str] = &[
    "사랑",
    "노래",
    "하늘",
    "바다",
    "별",
    "밤",
    "꿈",
    "눈물",
    "우리",
    "시간",
    "너",
    "나",
    "봄",
    "여름",
    "가을",
    "겨울",
    "바람",
    "비",
    "눈",
    "마음",
    "이별",
    "그대",
    "추억",
    "행복",
    "안녕",
    "친구",
    "거리",
    "서울",
    "부산",
    "라이브",
    "리믹스",
    "첫사랑",
    "고백",
    "약속",
    "기억",
    "햇살",
    "달빛",
    "새벽",
    "오늘",
    "내일",
];

/// Japanese words (kanji and kana; the tokenizer indexes them as bigrams).
const JAPANESE: &[&str] = &[
    "東京",
    "夜",
    "桜",
    "愛",
    "夢",
    "空",
    "海",
    "雨",
    "君",
    "恋",
    "さくら",
    "ありがとう",
    "千と千尋",
    "花火",
    "星空",
    "月光",
];

/// Syllables common in Korean names and words, for invented Korean words.
const HANGUL_SYLLABLES: &[&str] = &[
    "김", "이", "박", "민", "수", "지", "현", "영", "서", "준", "하", "윤", "은", "정", "아", "우",
    "진", "희", "성", "연", "재", "소", "혜", "태", "경", "주", "빈", "다", "나", "라", "마", "바",
    "사", "도", "요", "유", "한", "상", "미", "선",
];

const CONSONANTS: &[&str] = &[
    "b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr", "st",
    "ch", "sh",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou", "ea"];

/// Kinds of collection a file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// Albums of tracks.
    Music,
    /// Films and series episodes.
    Video,
    /// Papers, books, manuals.
    Document,
    /// Installers, archives and disk images.
    Software,
}

impl Collection {
    /// The kind filter matching this collection (`peerdex search --kind`).
    pub fn kind(self) -> &'static str {
        match self {
            Collection::Music => "audio",
            Collection::Video => "video",
            Collection::Document => "document",
            Collection::Software => "archive",
        }
    }
}

/// One file as a peer would share it.
#[derive(Debug, Clone)]
pub struct Item {
    /// Path inside the share.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Content hash (the same for every copy of a catalogue item).
    pub hash: FileHash,
    /// Where it comes from.
    pub collection: Collection,
    /// Lowercase extension.
    pub ext: &'static str,
    /// The words of its title and author, for queries.
    pub words: Vec<String>,
    /// The tags a tagged copy has (music only; drawn from the item's hash, so the corpus's
    /// random streams are the same with or without them).
    pub tags: MediaTags,
}

impl Item {
    /// The list entry for this file in share `share`.
    pub fn entry(&self, share: &str) -> ListEntry {
        ListEntry {
            share: share.to_owned(),
            path: self.path.clone(),
            size: self.size,
            mtime: 1_700_000_000,
            hash: self.hash,
            tags: MediaTags::default(),
            visibility: Default::default(),
        }
    }

    /// [`Item::entry`] with the item's tags.
    pub fn tagged_entry(&self, share: &str) -> ListEntry {
        ListEntry {
            tags: self.tags.clone(),
            ..self.entry(share)
        }
    }
}

/// A query as a user would type it, with optional filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// The words.
    pub text: String,
    /// Kind filter.
    pub kind: Option<&'static str>,
    /// Extension filter.
    pub ext: Option<&'static str>,
    /// Smallest size, bytes.
    pub min_size: Option<u64>,
}

/// The generator: a vocabulary and a catalogue of popular content, both derived from the seed.
pub struct Corpus {
    seed: u64,
    vocabulary: Vec<String>,
    word_law: Zipf<f64>,
    catalogue_len: u64,
    catalogue_law: Zipf<f64>,
    shared_percent: u64,
}

/// Settings of a [`Corpus`].
#[derive(Debug, Clone, Copy)]
pub struct CorpusConfig {
    /// Everything derives from it.
    pub seed: u64,
    /// Words in the vocabulary (the named lists first, invented words after).
    pub vocabulary: usize,
    /// Items of popular content that peers share copies of.
    pub catalogue: u64,
    /// Percentage of each list drawn from the catalogue (the rest is unique to the peer).
    pub shared_percent: u64,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        CorpusConfig {
            seed: 7,
            vocabulary: 20_000,
            catalogue: 100_000,
            shared_percent: 40,
        }
    }
}

fn rng_for(seed: u64, stream: u64, index: u64) -> SmallRng {
    // Independent streams per (purpose, index): mixing through BLAKE3 avoids correlated seeds.
    let mut input = [0u8; 24];
    input[..8].copy_from_slice(&seed.to_le_bytes());
    input[8..16].copy_from_slice(&stream.to_le_bytes());
    input[16..].copy_from_slice(&index.to_le_bytes());
    let digest = blake3::hash(&input);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_bytes());
    SmallRng::from_seed(bytes)
}

const STREAM_VOCABULARY: u64 = 1;
const STREAM_CATALOGUE: u64 = 2;
const STREAM_PEER: u64 = 3;
const STREAM_UNIQUE: u64 = 4;

fn invented_word(rng: &mut SmallRng) -> String {
    let syllables = rng.random_range(2..=4);
    let mut word = String::new();
    for _ in 0..syllables {
        word.push_str(CONSONANTS[rng.random_range(0..CONSONANTS.len())]);
        word.push_str(VOWELS[rng.random_range(0..VOWELS.len())]);
    }
    word
}

fn hangul_word(rng: &mut SmallRng) -> String {
    // Two or three of the syllables common in Korean names and words.
    let len = rng.random_range(2..=3);
    (0..len)
        .map(|_| HANGUL_SYLLABLES[rng.random_range(0..HANGUL_SYLLABLES.len())])
        .collect()
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Words as they appear in a title: each capitalized, separated by spaces.
fn title_case(words: &[String]) -> String {
    words
        .iter()
        .map(|w| capitalized(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn size_between(rng: &mut SmallRng, median: f64, spread: f64, min: u64, max: u64) -> u64 {
    LogNormal::new(median.ln(), spread)
        .map_or(min, |law| law.sample(rng) as u64)
        .clamp(min, max)
}

impl Corpus {
    /// Builds the vocabulary and the laws. Cheap: items are generated on demand.
    pub fn new(config: CorpusConfig) -> Corpus {
        let mut rng = rng_for(config.seed, STREAM_VOCABULARY, 0);
        let mut seen = HashSet::new();
        let mut vocabulary = Vec::with_capacity(config.vocabulary);
        // The named words interleaved by frequency: English leads, the other scripts follow close.
        let named: Vec<&str> = (0..ENGLISH.len())
            .flat_map(|i| {
                [
                    ENGLISH.get(i),
                    KOREAN.get(i / 2),
                    EUROPEAN.get(i / 2),
                    JAPANESE.get(i / 4),
                ]
            })
            .flatten()
            .copied()
            .collect();
        for word in named {
            if seen.insert(word.to_owned()) {
                vocabulary.push(word.to_owned());
            }
        }
        let target = config.vocabulary.max(vocabulary.len() + 1);
        while vocabulary.len() < target {
            let word = if rng.random_bool(0.15) {
                hangul_word(&mut rng)
            } else {
                invented_word(&mut rng)
            };
            if seen.insert(word.clone()) {
                vocabulary.push(word);
            }
        }
        let word_law = Zipf::new(vocabulary.len() as f64, 1.0)
            .unwrap_or_else(|_| unreachable!("the vocabulary is not empty"));
        let catalogue_len = config.catalogue.max(1);
        let catalogue_law = Zipf::new(catalogue_len as f64, 0.9)
            .unwrap_or_else(|_| unreachable!("the catalogue is not empty"));
        Corpus {
            seed: config.seed,
            vocabulary,
            word_law,
            catalogue_len,
            catalogue_law,
            shared_percent: config.shared_percent.min(100),
        }
    }

    /// The vocabulary, most frequent first.
    pub fn vocabulary(&self) -> &[String] {
        &self.vocabulary
    }

    fn word(&self, rng: &mut SmallRng) -> &str {
        let rank = self.word_law.sample(rng) as usize;
        &self.vocabulary[rank.clamp(1, self.vocabulary.len()) - 1]
    }

    fn words(&self, rng: &mut SmallRng, min: usize, max: usize) -> Vec<String> {
        let n = rng.random_range(min..=max);
        let mut words: Vec<String> = Vec::with_capacity(n);
        while words.len() < n {
            let w = self.word(rng).to_owned();
            if !words.contains(&w) {
                words.push(w);
            }
        }
        words
    }

    /// A person or band: invented names (unique-ish) or title words.
    fn author(&self, rng: &mut SmallRng) -> Vec<String> {
        match rng.random_range(0..10) {
            0..=3 => vec![
                capitalized(&invented_word(rng)),
                capitalized(&invented_word(rng)),
            ],
            4..=5 => vec![hangul_word(rng)],
            6 => vec!["The".into(), capitalized(self.word(rng))],
            _ => self
                .words(rng, 1, 2)
                .iter()
                .map(|w| capitalized(w))
                .collect(),
        }
    }

    /// Item `index` of the popular catalogue: the same path, size and hash for every peer.
    pub fn catalogue_item(&self, index: u64) -> Item {
        let mut rng = rng_for(self.seed, STREAM_CATALOGUE, index);
        self.item(&mut rng, &format!("catalogue {index}"))
    }

    /// Item `index` unique to peer `peer`.
    pub fn unique_item(&self, peer: u64, index: u64) -> Item {
        let mut rng = rng_for(self.seed, STREAM_UNIQUE, peer.wrapping_mul(1 << 32) ^ index);
        self.item(&mut rng, &format!("peer {peer} item {index}"))
    }

    fn item(&self, rng: &mut SmallRng, identity: &str) -> Item {
        let hash = FileHash::from_bytes(*blake3::hash(identity.as_bytes()).as_bytes());
        match rng.random_range(0..100) {
            0..=54 => self.music(rng, hash),
            55..=69 => self.video(rng, hash),
            70..=87 => self.document(rng, hash),
            _ => self.software(rng, hash),
        }
    }

    fn music(&self, rng: &mut SmallRng, hash: FileHash) -> Item {
        let artist = self.author(rng);
        let album = self.words(rng, 1, 3);
        let title = self.words(rng, 1, 4);
        let year = rng.random_range(1960..=2026);
        let track = rng.random_range(1..=16);
        let (ext, size) = match rng.random_range(0..10) {
            0..=5 => ("mp3", size_between(rng, 7e6, 0.4, 1_000_000, 30_000_000)),
            6..=7 => ("flac", size_between(rng, 30e6, 0.4, 5_000_000, 200_000_000)),
            8 => ("m4a", size_between(rng, 8e6, 0.4, 1_000_000, 40_000_000)),
            _ => ("ogg", size_between(rng, 6e6, 0.4, 1_000_000, 30_000_000)),
        };
        let title_text = title_case(&title);
        let path = format!(
            "Music/{}/{} ({year})/{track:02} - {title_text}.{ext}",
            artist.join(" "),
            title_case(&album),
        );
        let draw = hash.as_bytes()[0];
        let lossless = ext == "flac";
        let bitrate = if lossless {
            700 + u32::from(draw) * 2
        } else {
            [128, 192, 256, 320][usize::from(draw % 4)]
        };
        let tags = MediaTags {
            artist: Some(artist.join(" ")),
            album: Some(title_case(&album)),
            title: Some(title_text.clone()),
            year: Some(year),
            track: Some(track),
            genre: Some(["Rock", "Jazz", "Pop", "Classical"][usize::from(draw % 4)].to_owned()),
            duration_secs: Some((size * 8 / 1000 / u64::from(bitrate)).max(1) as u32),
            bitrate_kbps: Some(bitrate),
            sample_rate: Some(44_100),
            channels: Some(2),
            lossless: Some(lossless),
            ..MediaTags::default()
        };
        let words = artist.into_iter().chain(album).chain(title).collect();
        Item {
            path,
            size,
            hash,
            collection: Collection::Music,
            ext,
            words,
            tags,
        }
    }

    fn video(&self, rng: &mut SmallRng, hash: FileHash) -> Item {
        let title = self.words(rng, 1, 3);
        let title_text = title_case(&title);
        let ext = if rng.random_bool(0.7) { "mkv" } else { "mp4" };
        let quality = ["720p", "1080p", "1080p", "2160p"][rng.random_range(0..4)];
        let (path, size, words) = if rng.random_bool(0.5) {
            let year = rng.random_range(1950..=2026);
            let dotted = title_text.replace(' ', ".");
            (
                format!("Videos/Movies/{title_text} ({year})/{dotted}.{year}.{quality}.{ext}"),
                size_between(rng, 2.5e9, 0.6, 300_000_000, 60_000_000_000),
                title,
            )
        } else {
            let episode_title = self.words(rng, 1, 3);
            let (season, episode) = (rng.random_range(1..=8), rng.random_range(1..=24));
            let episode_text = title_case(&episode_title);
            (
                format!(
                    "Videos/TV/{title_text}/Season {season:02}/{title_text} - S{season:02}E{episode:02} - {episode_text}.{ext}"
                ),
                size_between(rng, 8e8, 0.5, 100_000_000, 8_000_000_000),
                title.into_iter().chain(episode_title).collect(),
            )
        };
        Item {
            path,
            size,
            hash,
            collection: Collection::Video,
            ext,
            words,
            tags: MediaTags::default(),
        }
    }

    fn document(&self, rng: &mut SmallRng, hash: FileHash) -> Item {
        let author = self.author(rng);
        let title = self.words(rng, 2, 5);
        let (folder, ext, median) = match rng.random_range(0..10) {
            0..=3 => ("Papers", "pdf", 1.5e6),
            4..=5 => ("Books", "epub", 2e6),
            6 => ("Books", "pdf", 8e6),
            7 => ("Manuals", "pdf", 4e6),
            8 => ("Notes", "docx", 1e5),
            _ => ("Notes", "txt", 2e4),
        };
        let title_text = title_case(&title);
        let path = format!(
            "Documents/{folder}/{} - {title_text}.{ext}",
            author.join(" ")
        );
        Item {
            path,
            size: size_between(rng, median, 0.9, 1_000, 500_000_000),
            hash,
            collection: Collection::Document,
            ext,
            words: author.into_iter().chain(title).collect(),
            tags: MediaTags::default(),
        }
    }

    fn software(&self, rng: &mut SmallRng, hash: FileHash) -> Item {
        let name = self.words(rng, 1, 2).join("-");
        let version = format!(
            "{}.{}.{}",
            rng.random_range(0..20),
            rng.random_range(0..30),
            rng.random_range(0..10)
        );
        let arch = ["x86_64", "aarch64", "amd64", "arm64"][rng.random_range(0..4)];
        let (ext, median) = match rng.random_range(0..10) {
            0..=3 => ("gz", 2e7),
            4..=5 => ("zip", 3e7),
            6..=7 => ("iso", 1.5e9),
            _ => ("dmg", 2e8),
        };
        let file = if ext == "gz" {
            format!("{name}-{version}-{arch}.tar.gz")
        } else {
            format!("{name}-{version}-{arch}.{ext}")
        };
        Item {
            path: format!("Software/{name}/{file}"),
            size: size_between(rng, median, 0.8, 100_000, 10_000_000_000),
            hash,
            collection: Collection::Software,
            ext,
            words: name.split('-').map(str::to_owned).collect(),
            tags: MediaTags::default(),
        }
    }

    /// Peer `peer`'s list of `len` entries: `shared_percent` from the catalogue (popular items
    /// more often, never twice), the rest unique to the peer. Paths are unique within the list.
    pub fn peer_list(&self, peer: u64, len: usize) -> Vec<ListEntry> {
        self.peer_list_with(peer, len, false)
    }

    /// [`Corpus::peer_list`], the music tagged (`tags`) or not: the same files either way.
    pub fn peer_list_with(&self, peer: u64, len: usize, tags: bool) -> Vec<ListEntry> {
        let mut rng = rng_for(self.seed, STREAM_PEER, peer);
        let mut taken = HashSet::new();
        let mut paths = HashSet::new();
        let mut list = Vec::with_capacity(len);
        let mut unique = 0u64;
        // Some peers keep downloads in their own folder instead of the canonical layout.
        let prefix = match peer % 4 {
            0 => "Downloads/",
            _ => "",
        };
        while list.len() < len {
            let rank = (rng.random_range(0..100) < self.shared_percent)
                .then(|| (self.catalogue_law.sample(&mut rng) as u64).clamp(1, self.catalogue_len));
            // An item the peer already holds is replaced by one of its own.
            let item = if let Some(rank) = rank.filter(|r| taken.insert(*r)) {
                let mut item = self.catalogue_item(rank - 1);
                item.path = format!("{prefix}{}", item.path);
                item
            } else {
                unique += 1;
                self.unique_item(peer, unique)
            };
            if paths.insert(item.path.clone()) {
                list.push(if tags {
                    item.tagged_entry("shared")
                } else {
                    item.entry("shared")
                });
            }
        }
        list
    }

    /// A query as users type them, from the stream `rng`: most take 1–3 consecutive words of a
    /// name that exists (popular catalogue items more often), some draw words from the
    /// vocabulary, and one in five carries a filter.
    pub fn query(&self, rng: &mut SmallRng) -> Query {
        let len = match rng.random_range(0..100) {
            0..=49 => 1,
            50..=84 => 2,
            _ => 3,
        };
        let (words, item) = if rng.random_range(0..100) < 70 {
            let rank = (self.catalogue_law.sample(rng) as u64).clamp(1, self.catalogue_len);
            let item = self.catalogue_item(rank - 1);
            let len = len.min(item.words.len()).max(1);
            let start = rng.random_range(0..=item.words.len().saturating_sub(len));
            let words: Vec<String> = item.words.iter().skip(start).take(len).cloned().collect();
            (words, Some(item))
        } else {
            (self.words(rng, len, len), None)
        };
        let mut query = Query {
            text: words.join(" ").to_lowercase(),
            ..Query::default()
        };
        match rng.random_range(0..100) {
            0..=9 => {
                query.kind = Some(item.as_ref().map_or("audio", |i| i.collection.kind()));
            }
            10..=14 => query.ext = Some(item.as_ref().map_or("mp3", |i| i.ext)),
            15..=19 => query.min_size = Some(100_000_000),
            _ => {}
        }
        query
    }

    /// A random stream for query generator `client`.
    pub fn query_stream(&self, client: u64) -> SmallRng {
        rng_for(self.seed, 5, client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Corpus {
        Corpus::new(CorpusConfig {
            seed: 1,
            vocabulary: 2_000,
            catalogue: 1_000,
            shared_percent: 40,
        })
    }

    #[test]
    fn lists_are_deterministic_and_paths_unique() {
        let corpus = small();
        let a = corpus.peer_list(3, 500);
        let b = small().peer_list(3, 500);
        assert_eq!(a, b);
        let paths: HashSet<&str> = a.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths.len(), 500);
        assert_ne!(a, corpus.peer_list(4, 500));
    }

    #[test]
    fn popular_content_is_shared_by_many_peers() {
        let corpus = small();
        let mut holders = std::collections::HashMap::<FileHash, usize>::new();
        for peer in 0..50 {
            for entry in corpus.peer_list(peer, 200) {
                *holders.entry(entry.hash).or_default() += 1;
            }
        }
        let most = holders.values().copied().max().unwrap_or(0);
        assert!(
            most >= 20,
            "the most popular content has only {most} holders"
        );
        // Unique items dominate the number of distinct contents.
        assert!(holders.len() > 50 * 100);
    }

    #[test]
    fn names_mix_scripts_and_collections() {
        let corpus = small();
        let list = corpus.peer_list(9, 2_000);
        let has = |f: &dyn Fn(&ListEntry) -> bool| list.iter().any(f);
        assert!(has(&|e| e
            .path
            .chars()
            .any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c))));
        assert!(has(&|e| e.path.contains('é')
            || e.path.contains('ü')
            || e.path.contains('ñ')));
        for top in ["Music/", "Videos/", "Documents/", "Software/"] {
            assert!(has(&|e| e.path.contains(top)), "no {top} entry");
        }
    }

    #[test]
    fn queries_are_deterministic_and_not_empty() {
        let corpus = small();
        let mut a = corpus.query_stream(1);
        let mut b = corpus.query_stream(1);
        for _ in 0..200 {
            let q = corpus.query(&mut a);
            assert!(!q.text.trim().is_empty());
            assert_eq!(q, corpus.query(&mut b));
        }
    }
}
