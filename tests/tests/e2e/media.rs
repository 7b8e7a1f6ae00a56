//! Media tags and folders end to end: real audio files encoded and tagged by ffmpeg at test time
//! (an independent tool, not bytes made by hand), shared by real agents, searched by tag with the
//! CLI's filters, and whole albums found as one release on several peers and fetched at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use peerdex_tests::*;
use serde_json::Value;

use super::cli::{peerdex_in, succeeded};
use super::download::corrupt_in_place;

/// Encodes a tone of `secs` seconds to `out` with ffmpeg, with `codec` arguments and tags.
/// Fails loudly without ffmpeg: these tests need it (`.ci/run` installs it).
fn encode(out: &Path, freq: u32, secs: u32, codec: &[&str], tags: &[(&str, &str)]) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={freq}:duration={secs}"))
        .args(["-ac", "2"])
        .args(codec);
    for (key, value) in tags {
        cmd.arg("-metadata").arg(format!("{key}={value}"));
    }
    let status = cmd.arg(out).status().unwrap_or_else(|e| {
        panic!("ffmpeg is needed to make real tagged audio (apt-get install ffmpeg): {e}")
    });
    assert!(status.success(), "ffmpeg failed for {}", out.display());
}

/// The duration ffprobe reads, in seconds.
fn ffprobe_secs(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn search_json(work: &Path, me: &Path, server: &str, args: &[&str]) -> Value {
    let mut all = vec!["search", "--server", server, "--json"];
    all.extend_from_slice(args);
    let out = succeeded(peerdex_in(work, me, &all));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn names_of(found: &Value) -> Vec<String> {
    found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_make_music_searchable_by_artist_and_filterable_by_bitrate() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("music");
    let mp3_320 = ["-c:a", "libmp3lame", "-b:a", "320k"];
    let radiohead = [
        ("artist", "Radiohead"),
        ("album", "OK Computer"),
        ("title", "Airbag"),
        ("date", "1997"),
        ("track", "1"),
    ];
    encode(
        &share.join("misc/track01.mp3"),
        440,
        3,
        &mp3_320,
        &radiohead,
    );
    encode(
        &share.join("misc/track02.mp3"),
        450,
        3,
        &["-c:a", "libmp3lame", "-b:a", "128k"],
        &[("artist", "Radiohead"), ("title", "Lucky")],
    );
    encode(
        &share.join("misc/track03.flac"),
        460,
        3,
        &[],
        &[("artist", "Radiohead"), ("title", "Exit Music")],
    );
    write_file(&share, "radiohead stuff/notes.txt", b"setlists");
    encode(
        &share.join("x/track04.m4a"),
        470,
        3,
        &["-c:a", "aac", "-b:a", "128k"],
        &[("artist", "Motörhead"), ("title", "Ace of Spades")],
    );
    encode(
        &share.join("x/track05.ogg"),
        480,
        3,
        &["-c:a", "libvorbis"],
        &[("artist", "아이유"), ("title", "좋은 날")],
    );
    encode(
        &share.join("x/track06.opus"),
        490,
        3,
        &["-c:a", "libopus"],
        &[("artist", "千と千尋"), ("title", "Opening")],
    );
    encode(
        &share.join("x/track07.wav"),
        500,
        3,
        &[],
        &[("artist", "Wavy")],
    );
    // Malformed files: truncated, huge declared frame sizes, empty, random bytes.
    let track01 = std::fs::read(share.join("misc/track01.mp3")).unwrap();
    write_file(&share, "bad/truncated.mp3", &track01[..100]);
    let mut huge = b"ID3\x04\x00\x00\x7f\x7f\x7f\x7fTPE1\x7f\x7f\x7f\x7f\x00\x00\x03".to_vec();
    huge.extend(pseudo_random(4096, 1));
    write_file(&share, "bad/huge.mp3", &huge);
    write_file(&share, "bad/zero.flac", b"");
    write_file(&share, "bad/random.m4a", &pseudo_random(20_000, 2));
    write_file(&share, "bad/tagless.mp3", &track01[track01.len() / 2..]);

    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    let me = dir.path().join("me");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let url = server.url.clone();

    server.wait_for_hits("radiohead", 4).await;
    server.wait_for_hits("bad", 5).await;
    // A tag word is found, and a tag match ranks above the word in a folder name only.
    let found = search_json(&work, &me, &url, &["radiohead"]);
    let names = names_of(&found);
    assert_eq!(names.len(), 4, "{found}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("notes.txt"),
        "{found}"
    );
    let airbag = found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "track01.mp3")
        .unwrap();
    assert_eq!(airbag["tags"]["artist"], "Radiohead");
    assert_eq!(airbag["tags"]["album"], "OK Computer");
    assert_eq!(airbag["tags"]["year"], 1997);
    let secs = airbag["tags"]["duration_secs"].as_f64().unwrap();
    let probed = ffprobe_secs(&share.join("misc/track01.mp3"));
    assert!((secs - probed).abs() <= 1.0, "{secs} vs ffprobe {probed}");
    let kbps = airbag["tags"]["bitrate_kbps"].as_u64().unwrap();
    assert!((318..=322).contains(&kbps), "{kbps}");

    // Field queries, folding, Unicode tags.
    assert_eq!(
        names_of(&search_json(&work, &me, &url, &["artist:motorhead"])),
        ["track04.m4a"]
    );
    assert_eq!(
        names_of(&search_json(&work, &me, &url, &["아이유"])),
        ["track05.ogg"]
    );
    assert_eq!(
        names_of(&search_json(&work, &me, &url, &["千と千尋"])),
        ["track06.opus"]
    );
    assert_eq!(
        names_of(&search_json(&work, &me, &url, &["radiohead", "year:1997"])),
        ["track01.mp3"]
    );
    assert!(names_of(&search_json(&work, &me, &url, &["artist:stuff"])).is_empty());

    // Filters on media numbers.
    let high = search_json(
        &work,
        &me,
        &url,
        &["--kind", "audio", "--min-bitrate", "256", "radiohead"],
    );
    assert!(
        names_of(&high).contains(&"track01.mp3".to_owned()),
        "{high}"
    );
    assert!(
        !names_of(&high).contains(&"track02.mp3".to_owned()),
        "{high}"
    );
    for hit in high["hits"].as_array().unwrap() {
        assert!(
            hit["tags"]["bitrate_kbps"].as_u64().unwrap() >= 256,
            "{hit}"
        );
    }
    assert_eq!(
        names_of(&search_json(&work, &me, &url, &["--lossless", "radiohead"])),
        ["track03.flac"]
    );
    let lossless = search_json(&work, &me, &url, &["--lossless", "track"]);
    let mut lossless = names_of(&lossless);
    lossless.sort();
    assert_eq!(lossless, ["track03.flac", "track07.wav"]);
    assert!(
        names_of(&search_json(
            &work,
            &me,
            &url,
            &["--max-duration", "1", "radiohead"]
        ))
        .is_empty()
    );
    assert_eq!(
        names_of(&search_json(
            &work,
            &me,
            &url,
            &["--min-duration", "0:02", "artist:radiohead", "airbag"]
        )),
        ["track01.mp3"]
    );

    // The table shows artist – title (album, year), duration and bitrate.
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["search", "--server", &url, "airbag"],
    ));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("Radiohead \u{2013} Airbag (OK Computer, 1997)"),
        "{table}"
    );
    assert!(
        table.contains("0:03") && table.contains(&format!(" {kbps} ")),
        "{table}"
    );

    // Malformed files are shared (hashed, searchable by name) without tags; the agent runs on.
    let bad = search_json(&work, &me, &url, &["bad"]);
    let mut bad_names = names_of(&bad);
    bad_names.sort();
    assert_eq!(
        bad_names,
        [
            "huge.mp3",
            "random.m4a",
            "tagless.mp3",
            "truncated.mp3",
            "zero.flac"
        ],
        "{bad}"
    );
    for hit in bad["hits"].as_array().unwrap() {
        assert!(hit["tags"].get("artist").is_none(), "{hit}");
    }
    assert!(agent.status().server.online);

    // Re-tagging a file makes it a new version: the new artist is searchable soon after.
    let retagged = dir.path().join("retagged.mp3");
    encode(
        &retagged,
        450,
        3,
        &["-c:a", "libmp3lame", "-b:a", "128k"],
        &[("artist", "Portishead"), ("title", "Lucky")],
    );
    std::fs::rename(&retagged, share.join("misc/track02.mp3")).unwrap();
    wait_until(
        "the new artist to be searchable",
        Duration::from_secs(30),
        || {
            let found = server.search("portishead");
            async move {
                let found = found.await;
                (found.hits.len() == 1)
                    .then_some(())
                    .ok_or(format!("{:?}", found.hits))
            }
        },
    )
    .await;
    assert_eq!(
        names_of(&search_json(
            &work,
            &me,
            &url,
            &["artist:radiohead", "lucky"]
        ))
        .len(),
        0
    );
    agent.stop().await;
}

/// The tracks of one album, encoded and tagged once (every copy has the same bytes).
fn album(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let titles = [
        "Airbag",
        "Paranoid Android",
        "Subterranean Homesick Alien",
        "Exit Music",
    ];
    titles
        .iter()
        .enumerate()
        .map(|(i, title)| {
            let path = dir.join(format!("master{i}.mp3"));
            let track = (i + 1).to_string();
            encode(
                &path,
                300 + 40 * i as u32,
                2,
                &["-c:a", "libmp3lame", "-b:a", "192k"],
                &[
                    ("artist", "Radiohead"),
                    ("album", "OK Computer"),
                    ("date", "1997"),
                    ("title", title),
                    ("track", &track),
                ],
            );
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_album_on_three_peers_is_one_release_and_downloads_whole_despite_a_liar() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tracks = album(dir.path());
    // Alice: tidy names, a thumbnail cache and cover art. Bob: other folder and file names,
    // other mtimes, Windows junk. Carol: two of the four tracks.
    let alice = dir.path().join("alice");
    for (i, (_, bytes)) in tracks.iter().enumerate() {
        write_file(
            &alice,
            &format!("Radiohead/OK Computer (1997)/0{} song.mp3", i + 1),
            bytes,
        );
    }
    write_file(&alice, "Radiohead/OK Computer (1997)/Thumbs.db", b"thumbs");
    write_file(
        &alice,
        "Radiohead/OK Computer (1997)/cover.jpg",
        b"jpeg bytes",
    );
    let bob = dir.path().join("bob");
    for (i, (_, bytes)) in tracks.iter().enumerate() {
        let path = write_file(&bob, &format!("rips/okc/track{i}.mp3"), bytes);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(
            std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + i as u64),
        )
        .unwrap();
    }
    write_file(&bob, "rips/okc/desktop.ini", b"[.ShellClassInfo]");
    write_file(&bob, "rips/okc/folder.jpg", b"other jpeg");
    let carol = dir.path().join("carol");
    write_file(&carol, "misc/a.mp3", &tracks[0].1);
    write_file(&carol, "misc/b.mp3", &tracks[1].1);
    let agents = [
        TestAgent::start(&server.url, &[&alice], |_| {}).await,
        TestAgent::start(&server.url, &[&bob], |_| {}).await,
        TestAgent::start(&server.url, &[&carol], |_| {}).await,
    ];
    for agent in &agents {
        agent.wait_synced().await;
    }
    wait_for_sources(&server, content_hash(&tracks[0].1), 3).await;
    wait_for_sources(&server, content_hash(&tracks[3].1), 2).await;
    let me = dir.path().join("me");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let url = server.url.clone();

    // Every copy is indexed (the index commits on a timer after the lists are stored).
    wait_until(
        "the release on three peers",
        Duration::from_secs(20),
        || {
            let found = server.search("ok computer");
            async move {
                let found = found.await;
                let peers = found.folders.first().map(|f| f.peers_online);
                (peers == Some(3) && found.hits.len() == 6)
                    .then_some(())
                    .ok_or(format!(
                        "{} hits, folders {:?}",
                        found.hits.len(),
                        found.folders
                    ))
            }
        },
    )
    .await;
    let found = search_json(&work, &me, &url, &["ok", "computer"]);
    let folders = found["folders"].as_array().unwrap();
    assert_eq!(
        folders.len(),
        1,
        "one release, whatever the copies are called: {found}"
    );
    let release = &folders[0];
    assert_eq!(
        release["files"], 4,
        "junk and cover art do not count: {release}"
    );
    assert_eq!(release["peers_online"], 3, "{release}");
    assert_eq!(release["complete"], 2, "{release}");
    assert_eq!(release["partial"], 1, "{release}");
    assert_eq!(release["album"], "OK Computer");
    assert_eq!(release["artist"], "Radiohead");
    assert_eq!(release["year"], 1997);
    let id = release["id"].as_str().unwrap().to_owned();
    // The table lists it as a folder row.
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["search", "--server", &url, "ok", "computer"],
    ));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("F1  OK Computer (1997)"), "{table}");
    assert!(
        table.contains("on 3 peers, 2 complete, 1 partial"),
        "{table}"
    );

    // One source lies about a track: the folder still downloads whole and right.
    corrupt_in_place(
        &alice.join("Radiohead/OK Computer (1997)/01 song.mp3"),
        5000,
    );
    let out = succeeded(peerdex_in(&work, &me, &["get", "--dir", "out", "F1"]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("4 fetched"), "{said}");
    let release_dir = work
        .join("out")
        .join("OK Computer (1997) \u{2014} Radiohead");
    for (i, (_, bytes)) in tracks.iter().enumerate() {
        let got = std::fs::read(release_dir.join(format!("0{} song.mp3", i + 1))).unwrap();
        assert!(got == *bytes, "track {i} differs");
    }
    // Again: everything is there already, checked, and kept.
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["get", "--dir", "out", "--folder", &id],
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 fetched"),
        "{:?}",
        out
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 already there"));

    // Browse shows the share as folders, one level at a time; a folder row downloads whole.
    let nick = agents[1].status().nick;
    let top: Value = serde_json::from_slice(
        &succeeded(peerdex_in(
            &work,
            &me,
            &["browse", "--server", &url, "--json", &nick],
        ))
        .stdout,
    )
    .unwrap();
    assert_eq!(top["folders"][0]["share"], "bob", "{top}");
    assert!(top["files"].as_array().unwrap().is_empty());
    let rips = "bob/rips";
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["browse", "--server", &url, &nick, rips],
    ));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("1") && listing.contains("okc/"),
        "{listing}"
    );
    let inside: Value = serde_json::from_slice(
        &succeeded(peerdex_in(
            &work,
            &me,
            &["browse", "--server", &url, "--json", &nick, "bob/rips/okc"],
        ))
        .stdout,
    )
    .unwrap();
    assert_eq!(inside["files"].as_array().unwrap().len(), 6, "{inside}");
    assert_eq!(inside["folder"]["id"], id.as_str(), "{inside}");
    succeeded(peerdex_in(
        &work,
        &me,
        &["browse", "--server", &url, &nick, rips],
    ));
    let out = succeeded(peerdex_in(&work, &me, &["get", "--dir", "again", "1"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 fetched"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_dir(
            work.join("again")
                .join("OK Computer (1997) \u{2014} Radiohead")
        )
        .unwrap()
        .count(),
        4
    );
    for agent in agents {
        agent.stop().await;
    }
}
