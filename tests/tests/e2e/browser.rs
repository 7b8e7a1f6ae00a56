//! The server's pages in a real browser: Debian's Chromium, driven by chromedriver over
//! WebDriver (fantoccini). Search, a shared URL, back and forward, a sharer's page, browsing
//! into folders by keyboard and mouse, one page of a big folder only, no console errors, and
//! screenshots at desktop and phone widths (saved under `target/tmp/screenshots/`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator, key::Key};
use peerdex_shared::scope::Visibility;
use peerdex_tests::{TestAgent, TestPeer, TestServer, entry, http, wait_until, write_file};
use reqwest::StatusCode;

/// How long a page condition may take before the test fails.
const PAGE_WAIT: Duration = Duration::from_secs(15);

/// A headless Chromium behind its own chromedriver; both are killed on drop.
struct Browser {
    client: Client,
    driver: Child,
    webdriver: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = {
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "chromedriver is installed (.ci/run installs Debian's chromium and chromium-driver)",
                )
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let status = format!("{webdriver}/status");
        wait_until("chromedriver to answer", Duration::from_secs(20), || {
            let status = status.clone();
            async move {
                match http().get(&status).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        capabilities.insert(
            "goog:loggingPrefs".into(),
            serde_json::json!({ "browser": "ALL" }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .expect("chromedriver starts a headless Chromium session");
        Browser {
            client,
            driver,
            webdriver,
            _profile: profile,
        }
    }

    /// Waits for an element matching `css`.
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    /// Waits until the text of `css` contains `text`; returns it.
    async fn text_of(&self, css: &str, text: &str) -> String {
        let client = self.client.clone();
        wait_until(&format!("{css} to say {text:?}"), PAGE_WAIT, || {
            let client = client.clone();
            async move {
                let element = client
                    .find(Locator::Css(css))
                    .await
                    .map_err(|e| e.to_string())?;
                let shown = element.text().await.map_err(|e| e.to_string())?;
                if shown.contains(text) {
                    Ok(shown)
                } else {
                    Err(shown)
                }
            }
        })
        .await
    }

    /// What the browser logged as errors (failed loads, CSP violations, script errors).
    async fn console_errors(&self) -> Vec<String> {
        let session = self.client.session_id().await.unwrap().unwrap();
        let log: serde_json::Value = http()
            .post(format!("{}/session/{session}/se/log", self.webdriver))
            .json(&serde_json::json!({ "type": "browser" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        log["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Saves a screenshot at `width`×`height` as `NAME.png` and checks nothing overflows the
    /// width (no sideways scrolling).
    async fn screenshot(&self, name: &str, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let fits = self
            .client
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, serde_json::json!(true), "{name} overflows {width} px");
        let png = self.client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        self.client.set_window_size(1280, 800).await.unwrap();
    }

    async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_searches_opens_a_sharers_page_and_browses_its_folders_in_chromium() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let music = root.path().join("Music");
    write_file(&music, "Beyoncé/I Am Sasha Fierce/Halo.mp3", b"halo-bytes");
    write_file(
        &music,
        "Beatles/Abbey Road/Come Together.mp3",
        b"come-together",
    );
    write_file(&music, "ジブリ/千と千尋の神隠し.mkv", b"spirited-away");
    let alice = TestAgent::start(&server.url, &[&music], |c| c.nick = Some("alice".into())).await;
    alice.wait_synced().await;
    server.wait_for_hits("halo", 1).await;
    // A big folder of another sharer: 5,000 files, listed 200 at a time.
    let big = TestPeer::join(&server.url, "bigshare").await;
    let entries: Vec<_> = (0..5000)
        .map(|i| {
            entry(
                &format!("dump/file-{i:04}.bin"),
                1000 + i,
                &format!("big-{i}"),
            )
        })
        .collect();
    big.client.upload_full(1, &entries).await.unwrap();
    server.wait_for_hits("file", 100).await;

    let browser = Browser::start().await;
    let b = &browser.client;
    b.goto(&format!("{}/", server.url)).await.unwrap();
    browser
        .text_of(".intro h1", "Search what people here share")
        .await;
    browser.screenshot("server-home-desktop", 1280, 800).await;

    // The keyboard alone: type the words, press Enter.
    let input = browser.element("input#q").await;
    input.send_keys("beyonce").await.unwrap();
    input
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    let name = browser.text_of(".hit .name", "Halo.mp3").await;
    assert_eq!(name, "Halo.mp3");
    assert!(
        browser.url().await.ends_with("/?q=beyonce"),
        "{}",
        browser.url().await
    );
    browser.text_of("#count", "1 result").await;
    browser
        .text_of(".hit .where", "Beyoncé/I Am Sasha Fierce")
        .await;
    browser.screenshot("server-search-desktop", 1280, 800).await;
    browser.screenshot("server-search-phone", 375, 812).await;

    // A shared URL gives the same page; back returns to the earlier one.
    b.goto(&format!("{}/?q=神隠し", server.url)).await.unwrap();
    browser.text_of(".hit .name", "千と千尋の神隠し.mkv").await;
    b.back().await.unwrap();
    browser.text_of(".hit .name", "Halo.mp3").await;
    b.forward().await.unwrap();
    browser.text_of(".hit .name", "千と千尋").await;
    b.back().await.unwrap();
    browser.text_of(".hit .name", "Halo.mp3").await;

    // The sharer's page, then into its folders by clicks.
    browser.element("a.sharer").await.click().await.unwrap();
    browser.text_of("#nick", "alice").await;
    browser.text_of("#presence", "online now").await;
    browser.text_of("#totals", "shares 3 files").await;
    browser.text_of(".listing .dir a", "Music/").await;
    browser
        .element(".listing .dir a")
        .await
        .click()
        .await
        .unwrap();
    browser.text_of(".crumbs", "Music").await;
    let folders = b.find_all(Locator::Css(".listing .dir a")).await.unwrap();
    let mut names = Vec::new();
    for folder in &folders {
        names.push(folder.text().await.unwrap());
    }
    assert_eq!(names, ["Beatles/", "Beyoncé/", "ジブリ/"]);
    folders[1].click().await.unwrap();
    browser
        .text_of(".listing .dir a", "I Am Sasha Fierce/")
        .await;
    // Keyboard: focus the link and press Enter.
    let link = browser.element(".listing .dir a").await;
    link.send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of(".listing .file .name", "Halo.mp3").await;
    browser
        .text_of(".crumbs", "alice / Music / Beyoncé / I Am Sasha Fierce")
        .await;
    browser.screenshot("server-sharer-desktop", 1280, 800).await;
    browser.screenshot("server-sharer-phone", 375, 812).await;

    // A folder of 5,000 files: one page of 200, and the next page from its link.
    b.goto(&format!("{}/u/bigshare?path=music/dump", server.url))
        .await
        .unwrap();
    browser
        .text_of(".listing .file .name", "file-0000.bin")
        .await;
    let rows = b.find_all(Locator::Css(".listing li")).await.unwrap();
    assert_eq!(rows.len(), 200);
    let nodes = b
        .execute("return document.getElementsByTagName('*').length", vec![])
        .await
        .unwrap();
    assert!(nodes.as_u64().unwrap() < 3000, "{nodes} DOM nodes");
    browser.element("a[rel=next]").await.click().await.unwrap();
    browser
        .text_of(".listing .file .name", "file-0200.bin")
        .await;
    assert!(browser.url().await.contains("offset=200"));

    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.clone().close().await.unwrap();
}

#[tokio::test]
async fn pages_show_guests_only_public_files_and_say_when_guests_are_not_served() {
    let server = TestServer::start().await;
    let alice = TestPeer::join(&server.url, "alice").await;
    let mut members_only = entry("lab/secret-results.csv", 100, "secret");
    members_only.visibility = "members".parse::<Visibility>().unwrap();
    alice
        .client
        .upload_full(
            1,
            &[entry("open/readme-results.txt", 10, "readme"), members_only],
        )
        .await
        .unwrap();
    server.wait_for_hits("results", 1).await;
    let page = |path: &str| {
        let url = format!("{}{path}", server.url);
        async move {
            let r = http().get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, html) = page("/?q=results").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("readme-results.txt"), "{html}");
    assert!(
        !html.contains("secret"),
        "a members-only file reached a guest's page"
    );
    let (_, html) = page("/?q=secret").await;
    assert!(html.contains("Nothing found"), "{html}");
    let (_, html) = page("/u/alice").await;
    assert!(html.contains("shares 1 file you may see"), "{html}");
    let (_, html) = page("/u/alice?path=music/lab").await;
    assert!(!html.contains("secret-results"), "{html}");
    // Hostile input gets a page that says what is wrong, not a stack trace.
    let (status, html) = page("/u/no-such-person").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("no one here is called"), "{html}");
    let (status, _) = page("/?q=x&offset=banana").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, html) = page("/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert!(!html.contains("<script>"), "the query is escaped");

    let closed = TestServer::start_with(|c| c.accounts.guests = false).await;
    let r = http()
        .get(format!("{}/?q=results", closed.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("Sign-in required"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_searches_downloads_plays_browses_and_shares_in_the_agents_web_client() {
    use peerdex_agent::config::{ConfigFile, ShareConfig};
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let music = root.path().join("Music");
    let track = peerdex_tests::pseudo_random(3 << 20, 11);
    write_file(&music, "Artist/Album/Track One.mp3", &track);
    write_file(&music, "notes/readme.txt", b"hello from alice");
    let alice = TestAgent::start(&server.url, &[&music], |c| c.nick = Some("alice".into())).await;
    alice.wait_synced().await;
    // Bob's shares come from a config file, so the page can change them.
    let mine = root.path().join("Mine");
    write_file(&mine, "mine.txt", b"bob's own");
    let later = root.path().join("Later");
    write_file(&later, "later.txt", b"shared from the page");
    let config = root.path().join("bob.toml");
    ConfigFile::edit(&config, |file| {
        file.share(ShareConfig {
            path: mine.clone(),
            name: None,
            exclude: vec![],
            follow_symlinks: false,
            include_hidden: false,
            visibility: Default::default(),
            scopes: Vec::new(),
        })
    })
    .unwrap();
    let bob = TestAgent::start(&server.url, &[&mine], |c| {
        c.nick = Some("bob".into());
        c.shares_file = Some(config.clone());
    })
    .await;
    bob.wait_synced().await;
    server.wait_for_hits("track", 1).await;
    let addr = bob.handle.ui_addr.expect("the web client listens");
    let token = peerdex_agent::web::load_or_create_token(&bob.config.state).unwrap();

    let browser = Browser::start().await;
    let b = &browser.client;
    // The address `peerdex ui` prints signs the browser in and lands on the start page.
    b.goto(&peerdex_agent::web::sign_in_url(addr, &token))
        .await
        .unwrap();
    browser.text_of("#nick", "bob").await;
    browser.text_of("#connection", "Connected to").await;
    assert!(
        !browser.url().await.contains("token"),
        "the token leaves the address bar"
    );
    browser.screenshot("agent-home-desktop", 1280, 800).await;

    // Search with the keyboard alone.
    let input = browser.element("input#q").await;
    input.send_keys("track").await.unwrap();
    input
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of(".hit .name", "Track One.mp3").await;
    assert!(browser.url().await.contains("/search?q=track"));
    browser.text_of(".hit .sources", "1 person online").await;
    browser.screenshot("agent-search-desktop", 1280, 800).await;
    browser.screenshot("agent-search-phone", 375, 812).await;

    // The result's page: who has it, and a player that streams it from the agent.
    browser.element(".hit a.name").await.click().await.unwrap();
    browser.text_of("#name", "Track One.mp3").await;
    browser.text_of("#sources", "alice").await;
    let player = browser.element("#player audio").await;
    let src = player.attr("src").await.unwrap().unwrap();
    assert!(src.starts_with("/play/"), "{src}");
    let streamed = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0]).then(r => r.arrayBuffer())
               .then(b => done(b.byteLength)).catch(e => done(String(e)));",
            vec![serde_json::json!(src)],
        )
        .await
        .unwrap();
    assert_eq!(
        streamed,
        serde_json::json!(track.len()),
        "the page's player gets the whole file"
    );

    // Download with the keyboard: Enter on the button; the transfers page follows it live.
    let button = browser.element("#download").await;
    button
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of("h1", "Downloads").await;
    assert!(browser.url().await.ends_with("/transfers"));
    browser.text_of("#downloads tbody tr .state", "done").await;
    browser
        .text_of("#downloads tbody tr .bytes", "3.0 MiB of 3.0 MiB")
        .await;
    let on_disk = std::fs::read(bob.config.download_dir.join("Track One.mp3")).unwrap();
    assert!(on_disk == track, "the file on disk is the content");
    browser
        .screenshot("agent-transfers-desktop", 1280, 800)
        .await;
    browser.screenshot("agent-transfers-phone", 375, 812).await;

    // Browse the sharer from a result: its folder, one page.
    b.goto(&format!("http://{addr}/search?q=readme"))
        .await
        .unwrap();
    browser.element("a.sharer").await.click().await.unwrap();
    browser.text_of("#nick", "alice").await;
    browser.text_of(".crumbs", "alice / Music / notes").await;
    browser.text_of(".listing .file .name", "readme.txt").await;
    browser.element(".crumbs a").await.click().await.unwrap();
    browser.text_of(".listing .dir a", "Music/").await;

    // Shares: add a folder from the page, see it, stop sharing it.
    b.goto(&format!("http://{addr}/shares")).await.unwrap();
    browser.text_of("#shares", "Mine").await;
    let path = browser.element("input#path").await;
    path.send_keys(&later.display().to_string()).await.unwrap();
    path.send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of(".notice", "Now sharing \"Later\"").await;
    browser.text_of("#shares", "Later").await;
    server.wait_for_hits("later", 1).await;
    browser.screenshot("agent-shares-phone", 375, 812).await;
    // Who may see it changes in place: hidden, and the index forgets it for everyone else.
    let row = "//ul[@id='shares']/li[span[@class='name' and text()='Later']]";
    let visibility = b
        .find(Locator::XPath(&format!("{row}//input[@name='visibility']")))
        .await
        .unwrap();
    visibility.clear().await.unwrap();
    visibility.send_keys("hidden").await.unwrap();
    b.find(Locator::XPath(&format!(
        "{row}//form[@action='/shares/visibility']//button"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    browser
        .text_of(".notice", "Changed who may see \"Later\"")
        .await;
    browser.text_of("#shares", "hidden").await;
    let stop = b
        .find(Locator::XPath(&format!(
            "{row}//form[@action='/shares/remove']//button"
        )))
        .await
        .unwrap();
    stop.click().await.unwrap();
    browser
        .text_of(".notice", "No longer sharing \"Later\"")
        .await;
    let listed = browser.text_of("#shares", "Mine").await;
    assert!(!listed.contains("Later"), "{listed}");

    // Settings, by keyboard: the nickname for the next start.
    b.find(Locator::LinkText("Settings"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.text_of("#running", "bob").await;
    let nick = browser.element("#nick").await;
    nick.clear().await.unwrap();
    nick.send_keys("bobby").await.unwrap();
    nick.send_keys(&Key::Enter.to_string()).await.unwrap();
    browser.text_of(".notice", "next start").await;
    browser.text_of("#running", "saved: bobby").await;
    browser.screenshot("agent-settings-phone", 375, 812).await;
    assert_eq!(
        peerdex_agent::config::ConfigFile::load(&config)
            .unwrap()
            .nick
            .as_deref(),
        Some("bobby")
    );

    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.clone().close().await.unwrap();
    bob.stop().await;
    alice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_messages_and_wishes_in_the_agents_web_client() {
    use peerdex_client::Identity;
    use peerdex_tests::{agent_config, sign_up};
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Bob's agent runs on the key his account is linked to; Ann has an account and, later, an agent.
    let bob_state = dir.path().join("bob-state");
    std::fs::create_dir_all(&bob_state).unwrap();
    let bob_key = Identity::load_or_create(&bob_state.join(peerdex_agent::KEY_FILE)).unwrap();
    sign_up(&server, "bob", &bob_key).await;
    let ann_state = dir.path().join("ann-state");
    std::fs::create_dir_all(&ann_state).unwrap();
    let ann_key = Identity::load_or_create(&ann_state.join(peerdex_agent::KEY_FILE)).unwrap();
    let ann = sign_up(&server, "ann", &ann_key).await;
    let share = dir.path().join("share");
    write_file(&share, "bob.txt", b"bob's");
    let bob = TestAgent::start_with(agent_config(&server.url, &bob_state, &[&share])).await;
    bob.wait_synced().await;
    assert!(!ann.add_contact("bob").await.unwrap());
    let addr = bob.handle.ui_addr.unwrap();
    let token = peerdex_agent::web::load_or_create_token(&bob.config.state).unwrap();

    let browser = Browser::start().await;
    let b = &browser.client;
    b.goto(&peerdex_agent::web::sign_in_url(addr, &token))
        .await
        .unwrap();
    browser.text_of("#connection", "Connected to").await;
    b.goto(&format!("http://{addr}/people")).await.unwrap();
    browser.text_of("#contacts", "ann").await;
    browser
        .text_of("#contacts", "asks to be your contact")
        .await;
    browser
        .element("#contacts button")
        .await
        .click()
        .await
        .unwrap();
    browser.text_of("#contacts", "offline").await;

    // Ann's agent comes online: the open page says so by itself (the agent relays the
    // account's presence events over /events).
    browser
        .element("[data-live=people][data-connected=yes]")
        .await;
    let ann_share = dir.path().join("ann-share");
    write_file(&ann_share, "ann.txt", b"ann's");
    let ann_agent =
        TestAgent::start_with(agent_config(&server.url, &ann_state, &[&ann_share])).await;
    ann_agent.wait_synced().await;
    browser
        .text_of("[data-contact=ann] .presence.online", "online")
        .await;

    // A message from Ann arrives while the page is open: it shows up without a reload by hand.
    browser
        .element("[data-live=people][data-connected=yes]")
        .await;
    ann.send_message("bob", "have you got the slides?")
        .await
        .unwrap();
    browser.text_of("#inbox", "have you got the slides?").await;
    // A message from Ann is in the inbox; the conversation answers her.
    ann.send_message("bob", "have you got the slides?")
        .await
        .unwrap();
    b.refresh().await.unwrap();
    browser.text_of("#inbox", "have you got the slides?").await;
    browser.element("#inbox a").await.click().await.unwrap();
    browser.text_of("#with", "ann").await;
    browser
        .text_of("#messages", "have you got the slides?")
        .await;
    let body = browser.element("textarea#body").await;
    body.send_keys("yes, in my share").await.unwrap();
    browser
        .element("form.stack button")
        .await
        .click()
        .await
        .unwrap();
    browser.text_of("#messages", "yes, in my share").await;
    let to_ann = ann.messages(false, Some("bob"), None).await.unwrap();
    assert!(
        to_ann
            .messages
            .iter()
            .any(|m| m.body == "yes, in my share" && m.from == "bob"),
        "{to_ann:?}"
    );
    browser
        .screenshot("agent-conversation-phone", 375, 812)
        .await;

    // A wish, added and removed from the page.
    b.goto(&format!("http://{addr}/people")).await.unwrap();
    let wish = browser.element("input#wish").await;
    wish.send_keys("slides").await.unwrap();
    wish.send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of("#wishes", "slides").await;
    browser.screenshot("agent-people-desktop", 1280, 800).await;
    browser
        .element("#wishes button")
        .await
        .click()
        .await
        .unwrap();
    let client = browser.client.clone();
    wait_until("the wish to go", PAGE_WAIT, || {
        let client = client.clone();
        async move {
            let items = client
                .find_all(Locator::Css("#wishes li"))
                .await
                .map_err(|e| e.to_string())?;
            if items.is_empty() {
                Ok(())
            } else {
                Err(format!("{} wishes", items.len()))
            }
        }
    })
    .await;

    // A room: made from the page, a line from Ann arrives live, Bob answers, then leaves.
    b.goto(&format!("http://{addr}/rooms")).await.unwrap();
    let room = browser.element("input#room-name").await;
    room.send_keys("lab-talk").await.unwrap();
    room.send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of("#room", "lab-talk").await;
    ann.join_room("lab-talk", None).await.unwrap();
    browser
        .element("[data-live=people][data-connected=yes]")
        .await;
    ann.say("lab-talk", "hello room").await.unwrap();
    browser.text_of("#lines", "hello room").await;
    let say = browser.element("textarea#body").await;
    say.send_keys("hi ann").await.unwrap();
    browser
        .element("form.stack button")
        .await
        .click()
        .await
        .unwrap();
    browser.text_of("#lines", "hi ann").await;
    let log = ann.room_log("lab-talk", None).await.unwrap();
    assert!(
        log.iter().any(|l| l.from == "bob" && l.body == "hi ann"),
        "{log:?}"
    );
    browser
        .element("form[action$='/leave'] button")
        .await
        .click()
        .await
        .unwrap();
    browser.text_of("#rooms", "lab-talk").await;
    browser.element("#rooms form button").await;

    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.clone().close().await.unwrap();
    ann_agent.stop().await;
    bob.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_signs_in_on_the_servers_pages_and_sees_what_guests_do_not() {
    use peerdex_client::Identity;
    let server = TestServer::start().await;
    let alice = TestPeer::join(&server.url, "alice").await;
    let mut members_only = entry("lab/secret-results.csv", 100, "secret");
    members_only.visibility = "members".parse::<Visibility>().unwrap();
    alice
        .client
        .upload_full(
            1,
            &[entry("open/readme-results.txt", 10, "readme"), members_only],
        )
        .await
        .unwrap();
    server.wait_for_hits("results", 1).await;
    peerdex_tests::sign_up(&server, "carol", &Identity::generate().unwrap()).await;

    // Another site cannot sign a browser in (or out) by posting the form.
    let r = http()
        .post(format!("{}/signin", server.url))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=carol&password=carol%20password")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());

    let browser = Browser::start().await;
    let b = &browser.client;
    b.goto(&format!("{}/?q=results", server.url)).await.unwrap();
    browser.text_of(".hit .name", "readme-results.txt").await;
    let guest_page = browser.text_of("#main", "readme-results.txt").await;
    assert!(!guest_page.contains("secret-results"), "{guest_page}");

    // A wrong password: the form again, with the reason.
    browser.element("#signin").await.click().await.unwrap();
    browser
        .element("input#name")
        .await
        .send_keys("carol")
        .await
        .unwrap();
    let password = browser.element("input#password").await;
    password.send_keys("not it").await.unwrap();
    password
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser
        .text_of("#signin-error", "wrong account name or password")
        .await;

    // The right one: signed in, and the members-only file is there.
    let password = browser.element("input#password").await;
    password.send_keys("carol password").await.unwrap();
    password
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of("#viewer", "carol").await;
    b.goto(&format!("{}/?q=results", server.url)).await.unwrap();
    browser.text_of("#main", "secret-results.csv").await;
    browser.text_of("#main", "readme-results.txt").await;
    let cookies = b.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "peerdex_session")
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));

    // The sharer's page offers a signed-in viewer to add its account and to write to it.
    let alice_account = peerdex_tests::sign_up(&server, "alice-account", &alice.identity).await;
    b.goto(&format!("{}/u/alice", server.url)).await.unwrap();
    browser
        .element("#ask-contact button")
        .await
        .click()
        .await
        .unwrap();
    browser
        .text_of("#said", "asked alice-account to be your contact")
        .await;
    let asked = alice_account.contacts().await.unwrap();
    assert_eq!(asked.contacts[0].name, "carol", "{asked:?}");
    let body = browser.element("#write textarea").await;
    body.send_keys("may I see the lab results?").await.unwrap();
    browser
        .element("#write button")
        .await
        .click()
        .await
        .unwrap();
    browser
        .text_of("#said", "message sent to alice-account")
        .await;
    let inbox = alice_account.messages(false, None, None).await.unwrap();
    assert!(
        inbox
            .messages
            .iter()
            .any(|m| m.from == "carol" && m.body == "may I see the lab results?"),
        "{inbox:?}"
    );

    // Signing out revokes the session: the same cookie is a guest's now.
    let token = session.value().to_owned();
    browser
        .element("form[action='/signout'] button")
        .await
        .click()
        .await
        .unwrap();
    browser.element("#signin").await;
    b.goto(&format!("{}/?q=results", server.url)).await.unwrap();
    let after = browser.text_of("#main", "readme-results.txt").await;
    assert!(!after.contains("secret-results"), "{after}");
    let replayed = http()
        .get(format!("{}/?q=secret", server.url))
        .header("cookie", format!("peerdex_session={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !replayed.contains("secret-results.csv"),
        "a signed-out session still sees members' files"
    );
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_accounts_invites_groups_and_bans_on_the_admin_page() {
    use peerdex_client::Identity;
    let server = TestServer::start().await;
    let admin = peerdex_tests::sign_up(&server, "boss", &Identity::generate().unwrap()).await;
    peerdex_tests::operator_db(&server)
        .set_role("operator", "boss", peerdex_shared::api::Role::Admin)
        .unwrap();
    let carol = peerdex_tests::sign_up(&server, "carol", &Identity::generate().unwrap()).await;
    drop(admin);

    let browser = Browser::start().await;
    let b = &browser.client;
    // A member's page session gets no admin page.
    let sign_in = |name: &'static str| {
        let url = format!("{}/signin", server.url);
        let client = browser.client.clone();
        async move {
            client.goto(&url).await.unwrap();
            let field = client.find(Locator::Css("input#name")).await.unwrap();
            field.send_keys(name).await.unwrap();
            let password = client.find(Locator::Css("input#password")).await.unwrap();
            password
                .send_keys(&format!("{name} password"))
                .await
                .unwrap();
            password
                .send_keys(&char::from(Key::Enter).to_string())
                .await
                .unwrap();
        }
    };
    sign_in("boss").await;
    browser.text_of("#viewer", "boss").await;
    browser.element("#admin-link").await.click().await.unwrap();
    browser.text_of("h1", "Administration").await;
    browser.text_of("#account-list", "carol").await;
    browser.text_of("#stats", "people online").await;

    // An invite: its code is shown and it works.
    browser
        .element("#invites + form button")
        .await
        .click()
        .await
        .unwrap();
    let shown = browser.text_of("#invite-code", "Invite code").await;
    let code = shown
        .split_whitespace()
        .nth(2)
        .expect("the code")
        .trim_end_matches(|c: char| !c.is_alphanumeric())
        .to_owned();
    server
        .client()
        .create_account(&peerdex_shared::api::CreateAccountRequest {
            name: "dave".into(),
            password: "dave password".into(),
            invite: Some(code.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("the invite {code:?} from the page works: {e}"));

    // A group, and carol in it.
    let group = browser.element("input#group-name").await;
    group.send_keys("lab").await.unwrap();
    group
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of("#said", "group lab made").await;
    let member = browser.element("input#member-lab").await;
    member.send_keys("carol").await.unwrap();
    member
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of("#said", "carol added to lab").await;
    browser.text_of("#group-list", "carol").await;
    assert_eq!(carol.whoami().await.unwrap().groups, ["lab"]);

    // A timed ban on a nickname pattern, listed, then lifted.
    let value = browser.element("input#ban-value").await;
    browser
        .element("#ban-kind option[value=nick]")
        .await
        .click()
        .await
        .unwrap();
    value.send_keys("spam*").await.unwrap();
    browser
        .element("input#ban-for")
        .await
        .send_keys("1h")
        .await
        .unwrap();
    value
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser.text_of("#ban-list", "nick spam*").await;
    browser.text_of("#ban-list", "min left").await;
    browser.screenshot("server-admin-desktop", 1280, 800).await;
    browser.screenshot("server-admin-phone", 375, 812).await;
    browser
        .element("#ban-list button")
        .await
        .click()
        .await
        .unwrap();
    browser.text_of("#said", "lifted").await;

    // Disabling carol: her token stops working at once, and the audit log says who did it.
    browser
        .element("tr[data-account=carol] button")
        .await
        .click()
        .await
        .unwrap();
    browser.text_of("tr[data-account=carol]", "disabled").await;
    assert!(
        carol.whoami().await.is_err(),
        "a disabled account's token still works"
    );
    browser.text_of("#audit-list", "boss").await;

    // Another site cannot use the admin's session to change anything.
    let cookies = b.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "peerdex_session")
        .expect("the session cookie");
    let forged = http()
        .post(format!("{}/admin/bans", server.url))
        .header("cookie", format!("peerdex_session={}", session.value()))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("kind=account&value=carol")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        peerdex_tests::operator_db(&server)
            .active_bans()
            .unwrap()
            .is_empty(),
        "a forged post banned someone"
    );

    // A member is not an admin.
    browser
        .element("form[action='/signout'] button")
        .await
        .click()
        .await
        .unwrap();
    sign_in("dave").await;
    browser.text_of("#viewer", "dave").await;
    assert!(
        b.find(Locator::Css("#admin-link")).await.is_err(),
        "a member sees the admin link"
    );
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.goto(&format!("{}/admin", server.url)).await.unwrap();
    browser.text_of("h1", "Not allowed").await;
    b.clone().close().await.unwrap();
}

/// Swagger UI over the server's OpenAPI document, from the binary alone: every operation
/// listed, and "Try it out" on search answers a real result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_viewer_lists_every_operation_and_tries_a_search_in_chromium() {
    let server = TestServer::start().await;
    let alice = TestPeer::join(&server.url, "alice").await;
    alice
        .client
        .upload_full(1, &[entry("Music/Moon River.mp3", 4_000_000, "moon river")])
        .await
        .unwrap();
    server.wait_for_hits("moon", 1).await;

    let browser = Browser::start().await;
    let b = &browser.client;
    b.goto(&format!("{}/api/docs/", server.url)).await.unwrap();
    let operation = browser.element("#operations-search-search").await;
    let shown = wait_until("every operation to be listed", PAGE_WAIT, || {
        let client = b.clone();
        async move {
            let blocks = client
                .find_all(Locator::Css(".opblock"))
                .await
                .map_err(|e| e.to_string())?;
            if blocks.len() >= 60 {
                Ok(blocks.len())
            } else {
                Err(format!("{} operations", blocks.len()))
            }
        }
    })
    .await;
    assert!(shown >= 60, "{shown}");

    operation
        .find(Locator::Css(".opblock-summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .element("#operations-search-search .try-out__btn")
        .await
        .click()
        .await
        .unwrap();
    browser
        .element("#operations-search-search tr[data-param-name='q'] input")
        .await
        .send_keys("moon river")
        .await
        .unwrap();
    browser
        .element("#operations-search-search button.execute")
        .await
        .click()
        .await
        .unwrap();
    browser
        .text_of(
            "#operations-search-search .live-responses-table tbody .response-col_status",
            "200",
        )
        .await;
    browser
        .text_of(
            "#operations-search-search .live-responses-table tbody .response-col_description",
            "Moon River.mp3",
        )
        .await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.execute(
        "document.querySelector('#operations-search-search .responses-wrapper').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    browser
        .screenshot("server-api-docs-desktop", 1280, 900)
        .await;
    b.clone().close().await.unwrap();
}

/// The agent's API viewer opens for its signed-in user, under the endpoint's CSP, and lists
/// the local API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_api_viewer_opens_for_its_user_in_chromium() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "notes.txt", b"some notes");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    let addr = agent.handle.ui_addr.expect("the web client listens");
    let token = peerdex_agent::web::load_or_create_token(&agent.config.state).unwrap();

    let browser = Browser::start().await;
    let b = &browser.client;
    b.goto(&peerdex_agent::web::sign_in_url(addr, &token))
        .await
        .unwrap();
    browser.text_of("main", "Sharing").await;
    b.goto(&format!("http://{addr}/api/docs/")).await.unwrap();
    browser.element("#operations-agent-queue").await;
    let blocks = b.find_all(Locator::Css(".opblock")).await.unwrap();
    assert_eq!(blocks.len(), 4);
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.clone().close().await.unwrap();
}
