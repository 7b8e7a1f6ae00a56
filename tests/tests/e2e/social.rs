//! People (issue 18): contacts with live presence, private messages kept for offline recipients
//! across a restart and delivered once, receipts, the event stream and its replay, blocks,
//! mutes, bans, limits, and files shared with contacts only.

use std::time::Duration;

use futures_util::StreamExt;
use peerdex_client::{Identity, ServerClient};
use peerdex_server::db::BanKind;
use peerdex_shared::api::ErrorCode;
use peerdex_shared::social::{ContactState, Event, EventEnvelope, ReceiptState};
use peerdex_tests::*;

/// How long a test waits for an event before it fails (the 2 s figure is measured, not tested).
const EVENT_WAIT: Duration = Duration::from_secs(15);

/// An open event stream, read event by event.
struct Events {
    stream: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<
                        eventsource_stream::Event,
                        eventsource_stream::EventStreamError<reqwest::Error>,
                    >,
                > + Send,
        >,
    >,
}

impl Events {
    async fn open(client: &ServerClient, after: Option<u64>) -> Events {
        let response = client.event_stream(after).await.unwrap();
        Events {
            stream: Box::pin(eventsource_stream::Eventsource::eventsource(
                response.bytes_stream(),
            )),
        }
    }

    /// The next event, or `None` if none comes within `within`.
    async fn next_within(&mut self, within: Duration) -> Option<EventEnvelope> {
        let event = tokio::time::timeout(within, self.stream.next())
            .await
            .ok()??
            .unwrap();
        let envelope: EventEnvelope = serde_json::from_str(&event.data).unwrap();
        assert_eq!(
            event.event,
            envelope.event.kind(),
            "SSE name and type agree"
        );
        // (SSE keeps the last id for events that carry none, as presence does.)
        if let Some(id) = envelope.id {
            assert_eq!(event.id, id.to_string(), "SSE id and envelope id agree");
        }
        Some(envelope)
    }

    /// Whether the stream ends (the server closed it) within `within`, events skipped.
    async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Skips events until one matches `wanted`; fails after [`EVENT_WAIT`].
    async fn until(&mut self, what: &str, wanted: impl Fn(&Event) -> bool) -> EventEnvelope {
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(envelope) if wanted(&envelope.event) => return envelope,
                Some(_) => {}
                None => panic!("no {what} event within {EVENT_WAIT:?}"),
            }
        }
    }
}

fn presence_of(name: &'static str, online: bool) -> impl Fn(&Event) -> bool {
    move |event| matches!(event, Event::Presence { name: n, online: o, .. } if n == name && *o == online)
}

async fn contacts_of(client: &ServerClient) -> Vec<peerdex_shared::social::Contact> {
    client.contacts().await.unwrap().contacts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_mutual_and_see_each_other_come_online_and_go_offline() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ann = sign_up(&server, "ann", &Identity::generate().unwrap()).await;
    let bob_state = dir.path().join("bob-state");
    std::fs::create_dir_all(&bob_state).unwrap();
    let bob_key = Identity::load_or_create(&bob_state.join(peerdex_agent::KEY_FILE)).unwrap();
    let bob = sign_up(&server, "bob", &bob_key).await;
    let mut bob_events = Events::open(&bob, None).await;
    let mut ann_events = Events::open(&ann, None).await;

    // A request, seen live by the other side; then accepted, and mutual.
    assert!(!ann.add_contact("Bob").await.unwrap(), "only asked so far");
    let asked = bob_events
        .until("contact request", |e| {
            matches!(e, Event::ContactRequest { .. })
        })
        .await;
    assert_eq!(asked.event, Event::ContactRequest { from: "ann".into() });
    assert!(asked.id.is_some(), "requests are durable");
    let listed = contacts_of(&bob).await;
    assert_eq!(
        (listed[0].name.as_str(), listed[0].state),
        ("ann", ContactState::Incoming)
    );
    assert_eq!(contacts_of(&ann).await[0].state, ContactState::Outgoing);
    bob.answer_contact("ann", true).await.unwrap();
    ann_events
        .until(
            "contact accepted",
            |e| matches!(e, Event::ContactAccepted { name } if name == "bob"),
        )
        .await;
    let listed = contacts_of(&ann).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, ContactState::Accepted);
    assert!(!listed[0].online, "bob has no device online yet");

    // Bob's agent (his linked key) comes online: ann hears it, and lists him online.
    let share = dir.path().join("share");
    write_file(&share, "notes.txt", b"bob's notes");
    let agent = TestAgent::start_with(agent_config(&server.url, &bob_state, &[&share])).await;
    let started = std::time::Instant::now();
    ann_events
        .until("bob online", presence_of("bob", true))
        .await;
    eprintln!(
        "presence online reached the contact after {:?}",
        started.elapsed()
    );
    let listed = contacts_of(&ann).await;
    assert!(listed[0].online, "{listed:?}");

    // It stops: ann hears it at once, and the list keeps when he was last seen.
    agent.stop().await;
    let started = std::time::Instant::now();
    let offline = ann_events
        .until("bob offline", presence_of("bob", false))
        .await;
    eprintln!(
        "presence offline reached the contact after {:?}",
        started.elapsed()
    );
    assert!(offline.id.is_none(), "presence is live-only");
    let listed = contacts_of(&ann).await;
    assert!(!listed[0].online);
    assert!(listed[0].last_seen.is_some(), "{listed:?}");

    // A device that vanishes without a goodbye (its control channel just closes) is offline
    // at once too.
    let cid_key = Identity::generate().unwrap();
    let cid = sign_up(&server, "cid", &cid_key).await;
    cid.add_contact("ann").await.unwrap();
    ann.add_contact("cid").await.unwrap();
    let mut peer = TestPeer::with_identity(&server.url, "cid-laptop", 0, cid_key);
    peer.register().await;
    let control = peer.client.control_stream().await.unwrap();
    ann_events
        .until("cid online", presence_of("cid", true))
        .await;
    drop(control);
    ann_events
        .until("cid offline", presence_of("cid", false))
        .await;

    // Removing a contact ends it for both; strangers get no presence.
    ann.remove_contact("bob").await.unwrap();
    bob_events
        .until(
            "contact removed",
            |e| matches!(e, Event::ContactRemoved { name } if name == "ann"),
        )
        .await;
    assert!(
        contacts_of(&bob).await.is_empty(),
        "{:?}",
        contacts_of(&bob).await
    );
    // Declining a request.
    bob.add_contact("cid").await.unwrap();
    cid.answer_contact("bob", false).await.unwrap();
    assert!(contacts_of(&cid).await.iter().all(|c| c.name != "bob"));
    let e = cid.answer_contact("bob", true).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    let e = ann.add_contact("nobody-here").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    let e = ann.add_contact("ann").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_an_offline_person_survives_a_restart_and_is_delivered_once_with_receipts() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(data.path(), |_| {}).await;
    let ann = sign_up(&server, "ann", &Identity::generate().unwrap()).await;
    let bob = sign_up(&server, "bob", &Identity::generate().unwrap()).await;
    let sent = ann
        .send_message("bob", "are you there?\nsecond line")
        .await
        .unwrap();
    assert_eq!((sent.from.as_str(), sent.to.as_str()), ("ann", "bob"));
    assert_eq!(sent.delivered_at, None, "bob has no client open");
    let (ann_token, bob_token) = (
        ann.account_token().unwrap().to_owned(),
        bob.account_token().unwrap().to_owned(),
    );
    server.stop().await;

    let server = TestServer::start_in(data.path(), |_| {}).await;
    let ann = server.client().with_account_token(Some(ann_token));
    let bob = server.client().with_account_token(Some(bob_token));
    let mut ann_events = Events::open(&ann, None).await;
    // Bob comes online: the message is the first thing on his stream.
    let mut bob_events = Events::open(&bob, None).await;
    let first = bob_events
        .next_within(EVENT_WAIT)
        .await
        .expect("the waiting message");
    let Event::Message { message } = &first.event else {
        panic!("{first:?}")
    };
    assert_eq!(message.id, sent.id);
    assert_eq!(message.body, "are you there?\nsecond line");
    let cursor = first.id.unwrap();
    let receipt = ann_events
        .until("delivered receipt", |e| matches!(e, Event::Receipt { .. }))
        .await;
    assert_eq!(
        receipt.event,
        Event::Receipt {
            message: sent.id,
            to: "bob".into(),
            state: ReceiptState::Delivered
        }
    );
    // Delivered once: a new stream without a cursor does not get it again.
    drop(bob_events);
    let mut again = Events::open(&bob, None).await;
    assert!(
        again
            .next_within(Duration::from_millis(800))
            .await
            .is_none(),
        "delivered messages are not pushed again"
    );
    // With Last-Event-ID, exactly the durable events after it come back, in order.
    let reply = ann.send_message("bob", "hello?").await.unwrap();
    let live = again
        .until("the live message", |e| matches!(e, Event::Message { .. }))
        .await;
    let Event::Message { message } = &live.event else {
        unreachable!()
    };
    assert_eq!(message.id, reply.id);
    let mut replayed = Events::open(&bob, Some(cursor)).await;
    let next = replayed.next_within(EVENT_WAIT).await.unwrap();
    assert_eq!(next.id, live.id, "replay starts right after the cursor");
    assert!(
        replayed
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );

    // Reading: the inbox lists both, unread; reading one sends a read receipt.
    let inbox = bob.messages(true, None, None).await.unwrap().messages;
    assert_eq!(
        inbox.iter().map(|m| m.id).collect::<Vec<_>>(),
        [sent.id, reply.id]
    );
    let read = bob.read_message(sent.id).await.unwrap();
    assert!(read.read_at.is_some());
    ann_events
        .until("read receipt", |e| {
            matches!(e, Event::Receipt { message, state: ReceiptState::Read, .. } if *message == sent.id)
        })
        .await;
    let unread = bob.messages(true, None, None).await.unwrap().messages;
    assert_eq!(unread.iter().map(|m| m.id).collect::<Vec<_>>(), [reply.id]);
    // Ann's side of the conversation shows what bob did with it.
    let conversation = ann
        .messages(false, Some("bob"), None)
        .await
        .unwrap()
        .messages;
    assert_eq!(conversation.len(), 2);
    assert!(conversation[0].read_at.is_some() && conversation[1].delivered_at.is_some());
    // Nobody reads another's messages.
    let e = ann.read_message(reply.id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_floods_blocks_mutes_and_bans_get_clear_errors() {
    let server = TestServer::start_with(|c| {
        c.social.messages_per_minute = 5;
        c.social.history_per_conversation = 3;
    })
    .await;
    let ann = sign_up(&server, "ann", &Identity::generate().unwrap()).await;
    let bob = sign_up(&server, "bob", &Identity::generate().unwrap()).await;
    let limit = peerdex_server::config::SocialConfig::default().max_message_bytes;

    // Size: at the limit it goes, one byte over it is refused, naming the limit.
    ann.send_message("bob", &"a".repeat(limit)).await.unwrap();
    let e = ann
        .send_message("bob", &"a".repeat(limit + 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    assert!(e.to_string().contains("max_message_bytes"), "{e}");
    for (to, body, code) in [
        ("nobody-here", "hi", ErrorCode::NotFound),
        ("bob", "   ", ErrorCode::BadRequest),
        ("bob", "ring\u{7}", ErrorCode::BadRequest),
    ] {
        let e = ann.send_message(to, body).await.unwrap_err();
        assert_eq!(e.code(), Some(code), "{to} {body:?}: {e}");
    }
    // Guests cannot send.
    let e = server.client().send_message("bob", "hi").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");

    // A flood from one sender: refused past the rate, with Retry-After; others unaffected.
    let mut refused = None;
    for n in 0..10 {
        if let Err(e) = ann.send_message("bob", &format!("flood {n}")).await {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("the flood is cut off");
    assert_eq!(e.code(), Some(ErrorCode::RateLimited), "{e}");
    bob.send_message("ann", "still fine").await.unwrap();
    // The history of a conversation is bounded.
    let kept = bob
        .messages(false, Some("ann"), None)
        .await
        .unwrap()
        .messages;
    assert_eq!(
        kept.iter().filter(|m| m.from == "ann").count(),
        3,
        "history_per_conversation"
    );

    // Blocking: the blocked one is told, cannot message or ask; unblocking lifts it.
    let cid = sign_up(&server, "cid", &Identity::generate().unwrap()).await;
    bob.set_block("cid", true).await.unwrap();
    assert_eq!(bob.blocks().await.unwrap(), ["cid"]);
    let e = cid.send_message("bob", "hi").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Blocked), "{e}");
    let e = cid.add_contact("bob").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Blocked), "{e}");
    let e = bob.add_contact("cid").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Blocked), "you blocked them: {e}");
    ann.add_contact("bob").await.unwrap();
    bob.set_block("cid", false).await.unwrap();
    let e = bob.set_block("cid", false).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    cid.send_message("bob", "hi").await.unwrap();

    // A muted account cannot send until the mute is lifted; the mute is audited.
    let db = operator_db(&server);
    db.set_mute("operator", "cid", Some(i64::MAX), "spam")
        .unwrap();
    let e = cid.send_message("bob", "more spam").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Muted), "{e}");
    db.set_mute("operator", "cid", None, "").unwrap();
    cid.send_message("bob", "sorry").await.unwrap();
    assert!(
        db.audit_log(100)
            .unwrap()
            .iter()
            .any(|a| a.action == "account.mute" && a.target == "cid" && a.reason == "spam")
    );

    // A banned account cannot send, ask, or open its stream.
    db.add_ban("operator", BanKind::Account, "cid", None, "abuse")
        .unwrap();
    let e = cid.send_message("bob", "hi").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Banned), "{e}");
    let e = cid.event_stream(None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Banned), "{e}");

    // A ban made over the API while the account's stream is open ends that stream at once.
    let admin = sign_up(&server, "admin", &Identity::generate().unwrap()).await;
    db.set_role("operator", "admin", peerdex_shared::api::Role::Admin)
        .unwrap();
    let mut ann_events = Events::open(&ann, None).await;
    let status = peerdex_tests::http()
        .post(format!(
            "{}{}",
            server.url,
            peerdex_shared::routes::ADMIN_BANS
        ))
        .bearer_auth(admin.account_token().unwrap())
        .json(&serde_json::json!({"kind": "account", "value": "ann", "reason": "spam"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 201);
    assert!(
        ann_events.ends_within(EVENT_WAIT).await,
        "a banned account hears nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_shared_with_contacts_are_found_by_contacts_only() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alice-state");
    std::fs::create_dir_all(&state).unwrap();
    let alice_key = Identity::load_or_create(&state.join(peerdex_agent::KEY_FILE)).unwrap();
    let alice = sign_up(&server, "alice", &alice_key).await;
    let bob = sign_up(&server, "bob", &Identity::generate().unwrap()).await;
    let carol = sign_up(&server, "carol", &Identity::generate().unwrap()).await;
    bob.add_contact("alice").await.unwrap();
    alice.answer_contact("bob", true).await.unwrap();

    let (friends, open) = (dir.path().join("friends"), dir.path().join("open"));
    write_file(&friends, "zorblax holiday.jpg", b"holiday photo");
    write_file(&open, "zorblax flyer.txt", b"flyer");
    let mut config = agent_config(&server.url, &state, &[&friends, &open]);
    config.shares[0].rules =
        peerdex_agent::config::ShareRules::new(&peerdex_agent::config::ShareConfig {
            visibility: "contacts".parse().unwrap(),
            ..peerdex_agent::config::ShareConfig::new(friends.clone())
        })
        .unwrap();
    let agent = TestAgent::start_with(config).await;
    agent.wait_synced().await;
    server.wait_for_hits("flyer", 1).await;
    let search = |client: &ServerClient| {
        let client = client.clone();
        async move {
            client
                .search(&peerdex_client::server_api::SearchQuery {
                    q: "zorblax".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let found = search(&bob).await;
    assert_eq!(found.total, 2, "a contact sees both: {found:?}");
    for stranger in [&carol, &server.client()] {
        let found = search(stranger).await;
        assert_eq!(names(&found), ["zorblax flyer.txt"], "{found:?}");
        assert_eq!(found.total, 1);
    }
    assert_eq!(search(&alice).await.total, 2, "the owner sees her own");
    let stats = server.client().stats().await.unwrap();
    assert_eq!(
        (stats.entries, stats.distinct_contents),
        (1, 1),
        "server-wide counts say nothing of private files"
    );
    // No longer a contact: gone at the next request.
    bob.remove_contact("alice").await.unwrap();
    let found = search(&bob).await;
    assert_eq!(
        (found.total, names(&found)),
        (1, vec!["zorblax flyer.txt".to_string()])
    );
    agent.stop().await;
}

/// `peerdex` as ann: contact, msg, inbox, read, events, block, with a server in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_contacts_sends_and_reads_messages_and_prints_events_as_ndjson() {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (state, none) = (dir.path().join("state"), dir.path().join("none.toml"));
    let command = |args: &[&str]| {
        let mut command = Command::new(crate::cli::BIN);
        command
            .arg("--state")
            .arg(&state)
            .arg("--config")
            .arg(&none)
            .args(args)
            .env("PEERDEX_SERVER", &server.url)
            .env_remove("PEERDEX_API_KEY")
            .env("RUST_LOG", "warn");
        command
    };
    let cli = |args: &[&str], stdin: &str| {
        let mut child = command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = |args: &[&str], stdin: &str| {
        let out = cli(args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let bob = sign_up(&server, "bob", &Identity::generate().unwrap()).await;
    // Not signed in yet: a clear error.
    let out = cli(&["inbox"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("peerdex login"),
        "{out:?}"
    );
    ok(
        &["account", "create", "ann", "--password-stdin"],
        "ann's secret\n",
    );
    ok(&["login", "ann", "--password-stdin"], "ann's secret\n");

    // `events --json` runs until interrupted, one JSON object per line.
    let mut events = command(&["events", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(events.stdout.take().unwrap()).lines();

    assert!(ok(&["contact", "add", "bob"], "").contains("asked bob"));
    bob.answer_contact("ann", true).await.unwrap();
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["contact", "list", "--json"], "")).unwrap();
    assert_eq!(listed[0]["name"], "bob");
    assert_eq!(listed[0]["state"], "accepted");
    assert!(ok(&["contact", "list"], "").starts_with("bob\t"));

    // A message from arguments, and one from standard input.
    assert!(ok(&["msg", "bob", "hello", "bob"], "").contains("sent #"));
    ok(&["msg", "bob"], "from stdin\nsecond line\n");
    let got = bob.messages(false, None, None).await.unwrap().messages;
    assert_eq!(
        got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["hello bob", "from stdin\nsecond line"]
    );
    let reply = bob.send_message("ann", "hi ann").await.unwrap();

    // The stream printed the accept and the message, as NDJSON.
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &EventEnvelope| matches!(e.event, Event::Message { .. }))
    {
        let line = lines.next().expect("events ended").unwrap();
        seen.push(serde_json::from_str(&line).unwrap());
    }
    assert!(
        seen.iter()
            .any(|e| matches!(&e.event, Event::ContactAccepted { name } if name == "bob")),
        "{seen:?}"
    );
    let _ = events.kill();
    let _ = events.wait();

    let unread: serde_json::Value =
        serde_json::from_str(&ok(&["inbox", "--unread", "--json"], "")).unwrap();
    assert_eq!(unread.as_array().unwrap().len(), 1);
    assert_eq!(unread[0]["body"], "hi ann");
    let shown = ok(&["read", &reply.id.to_string()], "");
    assert!(
        shown.contains("from bob") && shown.contains("hi ann"),
        "{shown}"
    );
    assert!(ok(&["inbox", "--unread"], "").contains("no unread messages"));
    // The next `events` run starts after what the last one printed: the cursor was kept.
    assert!(state.join("events.cursor").exists());

    ok(&["room", "join", "lobby"], "");
    ok(&["room", "say", "lobby", "hello", "all"], "");
    assert!(ok(&["room", "log", "lobby"], "").contains("<ann> hello all"));
    assert!(ok(&["room", "list"], "").starts_with("lobby\tpublic\t1 member(s), yours"));

    ok(&["block", "bob"], "");
    let e = bob.send_message("ann", "blocked?").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Blocked), "{e}");
    ok(&["unblock", "bob"], "");
    let out = cli(&["msg", "nobody-here", "hi"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no account named"),
        "{out:?}"
    );
}

fn wish(query: &str) -> peerdex_shared::social::WishRequest {
    peerdex_shared::social::WishRequest {
        query: query.into(),
        ..Default::default()
    }
}

fn wish_hit_name(event: &Event) -> Option<&str> {
    match event {
        Event::WishHit { name, .. } => Some(name.as_str()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wishes_report_each_new_match_once_at_ingest_to_online_and_offline_wishers() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(data.path(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let ann = sign_up(&server, "ann", &Identity::generate().unwrap()).await;
    let admin_db = operator_db(&server);
    admin_db.create_group("operator", "lab").unwrap();
    // Bob shares a folder publicly and one with a group ann is not in.
    let bob_state = dir.path().join("bob-state");
    std::fs::create_dir_all(&bob_state).unwrap();
    let bob_key = Identity::load_or_create(&bob_state.join(peerdex_agent::KEY_FILE)).unwrap();
    sign_up(&server, "bob", &bob_key).await;
    let (music, lab) = (dir.path().join("music"), dir.path().join("lab"));
    write_file(&music, "Xyzzy old.flac", b"an old one");
    write_file(&lab, "placeholder.txt", b"lab");
    let mut config = agent_config(&server.url, &bob_state, &[&music, &lab]);
    config.shares[1].rules =
        peerdex_agent::config::ShareRules::new(&peerdex_agent::config::ShareConfig {
            visibility: "group:lab".parse().unwrap(),
            ..peerdex_agent::config::ShareConfig::new(lab.clone())
        })
        .unwrap();
    let agent = TestAgent::start_with(config).await;
    agent.wait_synced().await;
    server.wait_for_hits("old", 1).await;

    // Adding a wish answers what matches now, once.
    let created = ann.add_wish(&wish("xyzzy flac -live")).await.unwrap();
    assert_eq!(created.total, 1);
    assert_eq!(names_of(&created.matches), ["Xyzzy old.flac"]);
    let mut events = Events::open(&ann, None).await;

    // A new match is pushed as soon as its list is committed; a near miss is not.
    write_file(&music, "xyzzy live.flac", b"live, excluded");
    write_file(&music, "Xyzzy - Song.flac", b"the song");
    let started = std::time::Instant::now();
    let hit = events
        .until("the wish hit", |e| wish_hit_name(e).is_some())
        .await;
    eprintln!(
        "wish hit after {:?} (file written to event)",
        started.elapsed()
    );
    let Event::WishHit {
        wish: id,
        hash,
        from,
        ..
    } = &hit.event
    else {
        unreachable!()
    };
    assert_eq!(wish_hit_name(&hit.event), Some("Xyzzy - Song.flac"));
    assert_eq!(
        (*id, from.as_str()),
        (created.wish.id, agent.status().nick.as_str())
    );
    assert_eq!(*hash, content_hash(b"the song"));
    // The same content listed again (another name, same bytes), and a matching file in a
    // folder ann may not see: nothing new.
    write_file(&music, "copies/Xyzzy copy.flac", b"the song");
    write_file(&lab, "Xyzzy secret.flac", b"group only");
    agent.wait_synced().await;
    server.wait_for_hits("copy", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        events
            .next_within(Duration::from_millis(800))
            .await
            .is_none(),
        "no repeat, no out-of-scope hit"
    );
    let cursor = hit.id.unwrap();

    // Ann goes away; three new matches while she is gone arrive when she is back, once.
    drop(events);
    for n in 0..3 {
        write_file(
            &music,
            &format!("later/xyzzy {n}.flac"),
            format!("later {n}").as_bytes(),
        );
    }
    server.wait_for_hits("later", 3).await;
    let mut events = Events::open(&ann, None).await;
    let mut later = Vec::new();
    while let Some(event) = events.next_within(Duration::from_secs(2)).await {
        later.push(wish_hit_name(&event.event).unwrap().to_string());
    }
    later.sort();
    assert_eq!(later, ["xyzzy 0.flac", "xyzzy 1.flac", "xyzzy 2.flac"]);
    drop(events);

    // A restart reports nothing again (the agent re-sends nothing new either).
    agent.stop().await;
    let ann_token = ann.account_token().unwrap().to_owned();
    server.stop().await;
    let server = TestServer::start_in(data.path(), |_| {}).await;
    let ann = server.client().with_account_token(Some(ann_token));
    let mut config = agent_config(&server.url, &bob_state, &[&music, &lab]);
    config.shares[1].rules =
        peerdex_agent::config::ShareRules::new(&peerdex_agent::config::ShareConfig {
            visibility: "group:lab".parse().unwrap(),
            ..peerdex_agent::config::ShareConfig::new(lab.clone())
        })
        .unwrap();
    let agent = TestAgent::start_with(config).await;
    agent.wait_synced().await;
    server.wait_for_hits("later", 3).await;
    let mut events = Events::open(&ann, Some(cursor)).await;
    let mut replayed = Vec::new();
    while let Some(event) = events.next_within(Duration::from_secs(2)).await {
        replayed.push(wish_hit_name(&event.event).unwrap().to_string());
    }
    assert_eq!(
        replayed.len(),
        3,
        "only the three after the cursor: {replayed:?}"
    );

    // What the wish reported equals what a search finds (same semantics by construction).
    let found = ann
        .search(&peerdex_client::server_api::SearchQuery {
            q: "xyzzy flac -live".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let listed = ann.wishes().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hits, found.total, "{listed:?} vs {found:?}");
    agent.stop().await;
}

fn names_of(hits: &[peerdex_shared::api::SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_too_broad_wishes_are_refused_with_the_reason() {
    let server = TestServer::start_with(|c| {
        c.social.max_wishes_per_account = 2;
        c.social.max_wish_matches = 3;
    })
    .await;
    let ann = sign_up(&server, "ann", &Identity::generate().unwrap()).await;
    let mut peer = TestPeer::join(&server.url, "lister").await;
    let entries: Vec<_> = (0..5)
        .map(|n| entry(&format!("common {n}.txt"), 10 + n, &format!("c{n}")))
        .collect();
    peer.client.upload_full(1, &entries).await.unwrap();
    server.wait_for_hits("common", 5).await;
    let _ = &mut peer;

    let long = "x".repeat(10_000);
    for (request, code) in [
        (wish(&long), ErrorCode::BadRequest),
        (wish(""), ErrorCode::BadRequest),
        (wish("common"), ErrorCode::BadRequest),
        (
            peerdex_shared::social::WishRequest {
                kind: Some("nonsense".into()),
                ..wish("rare")
            },
            ErrorCode::BadRequest,
        ),
    ] {
        let e = ann.add_wish(&request).await.unwrap_err();
        assert_eq!(e.code(), Some(code), "{:?}: {e}", request.query.len());
    }
    let e = ann.add_wish(&wish("common")).await.unwrap_err();
    assert!(e.to_string().contains("max_wish_matches"), "{e}");
    ann.add_wish(&wish("rare one")).await.unwrap();
    let second = ann.add_wish(&wish("rare two")).await.unwrap();
    let e = ann.add_wish(&wish("rare three")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    ann.remove_wish(second.wish.id).await.unwrap();
    let e = ann.remove_wish(second.wish.id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    let e = server.client().add_wish(&wish("rare")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
}

fn room_line(event: &Event) -> Option<(&str, &str)> {
    match event {
        Event::Room {
            line: Some(line), ..
        } => Some((line.from.as_str(), line.body.as_str())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_keep_order_and_history_and_operators_mute_and_kick_and_scopes_hide_them() {
    let server = TestServer::start_with(|c| {
        c.social.room_history = 5;
        c.social.room_lines_per_minute = 14;
    })
    .await;
    let ann = sign_up(&server, "ann", &Identity::generate().unwrap()).await;
    let bob = sign_up(&server, "bob", &Identity::generate().unwrap()).await;
    let cid = sign_up(&server, "cid", &Identity::generate().unwrap()).await;

    // Ann opens a public room; what she said before bob joined is replayed to him, in order,
    // bounded to the room's history.
    let opened = ann.join_room("lobby", None).await.unwrap();
    assert_eq!(
        opened.room.role,
        Some(peerdex_shared::social::RoomRole::Owner)
    );
    for n in 0..7 {
        ann.say("lobby", &format!("early {n}")).await.unwrap();
    }
    let joined = bob.join_room("Lobby", None).await.unwrap();
    assert_eq!(
        joined
            .history
            .iter()
            .map(|l| l.body.as_str())
            .collect::<Vec<_>>(),
        ["early 2", "early 3", "early 4", "early 5", "early 6"]
    );
    cid.join_room("lobby", None).await.unwrap();
    let mut cid_events = Events::open(&cid, None).await;
    ann.say("lobby", "a").await.unwrap();
    bob.say("lobby", "b").await.unwrap();
    ann.say("lobby", "c").await.unwrap();
    let mut heard = Vec::new();
    while heard.len() < 3 {
        let event = cid_events
            .until("a room line", |e| room_line(e).is_some())
            .await;
        let (from, body) = room_line(&event.event).unwrap();
        heard.push(format!("{from}: {body}"));
    }
    assert_eq!(heard, ["ann: a", "bob: b", "ann: c"]);
    let rooms = cid.rooms().await.unwrap();
    assert_eq!((rooms[0].name.as_str(), rooms[0].members), ("lobby", 3));

    // Operators: a member may not mute; the owner mutes cid, whose lines are refused with the
    // reason; the owner makes bob an operator, who kicks cid, whose stream hears it.
    let e = bob
        .moderate_room("lobby", "mute", "cid", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    ann.moderate_room("lobby", "mute", "cid", Some("10m"))
        .await
        .unwrap();
    let e = cid.say("lobby", "let me speak").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Muted), "{e}");
    assert!(e.to_string().contains("muted you"), "{e}");
    ann.moderate_room("lobby", "op", "bob", None).await.unwrap();
    bob.moderate_room("lobby", "kick", "cid", None)
        .await
        .unwrap();
    cid_events
        .until(
            "the kick",
            |e| matches!(e, Event::Room { what, name, .. } if what == "kick" && name == "cid"),
        )
        .await;
    let e = cid.say("lobby", "still here?").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "join first: {e}");
    let e = bob
        .moderate_room("lobby", "kick", "ann", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "the owner stays: {e}");

    // Text limits and floods.
    let e = bob.say("lobby", &"x".repeat(5000)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    let e = bob.say("lobby", " ").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    // A private room exists only for its members and those invited.
    let e = ann
        .moderate_room("lobby", "invite", "cid", None)
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::BadRequest),
        "a public room takes no invites: {e}"
    );
    ann.join_room("backroom", Some("private")).await.unwrap();
    assert!(
        bob.rooms()
            .await
            .unwrap()
            .iter()
            .all(|r| r.name != "backroom")
    );
    let e = bob.join_room("backroom", None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    let e = bob.room_log("backroom", None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    ann.moderate_room("backroom", "invite", "bob", None)
        .await
        .unwrap();
    bob.join_room("backroom", None).await.unwrap();

    // A group's room is the group's: outsiders cannot see or join it, and a member removed
    // from the group loses it at once.
    let db = operator_db(&server);
    db.create_group("operator", "lab").unwrap();
    db.set_member("operator", "lab", "bob", true).unwrap();
    let e = cid
        .join_room("labroom", Some("group:lab"))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::BadRequest),
        "not in the group: {e}"
    );
    bob.join_room("labroom", Some("group:lab")).await.unwrap();
    bob.say("labroom", "lab only").await.unwrap();
    assert!(
        cid.rooms()
            .await
            .unwrap()
            .iter()
            .all(|r| r.name != "labroom")
    );
    let e = cid.join_room("labroom", None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    db.set_member("operator", "lab", "bob", false).unwrap();
    let e = bob.room_log("labroom", None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    let e = ann.join_room("bad/name", None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    let mut flooded = None;
    for n in 0..20 {
        if let Err(e) = bob.say("lobby", &format!("flood {n}")).await {
            flooded = Some(e);
            break;
        }
    }
    assert_eq!(
        flooded.expect("the flood is cut off").code(),
        Some(ErrorCode::RateLimited)
    );
}

/// A device of `name` (signed in with `key`) listing `files` (path, content label).
async fn holder(server: &TestServer, name: &str, files: &[(&str, &str)]) -> TestPeer {
    let key = Identity::generate().unwrap();
    sign_up(server, name, &key).await;
    let mut peer = TestPeer::with_identity(&server.url, &format!("{name}-pc"), 0, key);
    peer.register().await;
    let entries: Vec<_> = files
        .iter()
        .map(|(path, content)| entry(path, 1000, content))
        .collect();
    peer.client.upload_full(1, &entries).await.unwrap();
    peer
}

fn ask(text: &str) -> peerdex_shared::social::AskRequest {
    peerdex_shared::social::AskRequest {
        text: text.into(),
        ..Default::default()
    }
}

fn is_request(event: &Event) -> bool {
    matches!(event, Event::Request { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_reaches_contacts_or_holders_in_real_time_and_offers_come_back_to_download() {
    let server = TestServer::start_with(|c| c.social.max_request_recipients = 3).await;
    let dir = tempfile::tempdir().unwrap();
    let ann = sign_up(&server, "ann", &Identity::generate().unwrap()).await;
    // Bob (ann's contact) runs an agent sharing a match; cid is bob's contact, not ann's;
    // dan and fay are strangers holding matches; eve holds one in a group ann is not in.
    let bob_state = dir.path().join("bob-state");
    std::fs::create_dir_all(&bob_state).unwrap();
    let bob_key = Identity::load_or_create(&bob_state.join(peerdex_agent::KEY_FILE)).unwrap();
    let bob = sign_up(&server, "bob", &bob_key).await;
    let share = dir.path().join("bob-share");
    let bytes = pseudo_random(200_000, 94);
    write_file(&share, "rare live 1994.flac", &bytes);
    let agent = TestAgent::start_with(agent_config(&server.url, &bob_state, &[&share])).await;
    agent.wait_synced().await;
    let cid = sign_up(&server, "cid", &Identity::generate().unwrap()).await;
    ann.add_contact("bob").await.unwrap();
    bob.answer_contact("ann", true).await.unwrap();
    cid.add_contact("bob").await.unwrap();
    bob.answer_contact("cid", true).await.unwrap();
    let dan_peer = holder(&server, "dan", &[("Rare Live 1994.flac", "d1")]).await;
    let fay_peer = holder(&server, "fay", &[("rare/live 1994 boot.flac", "f1")]).await;
    let eve_key = Identity::generate().unwrap();
    sign_up(&server, "eve", &eve_key).await;
    let db = operator_db(&server);
    db.create_group("operator", "vault").unwrap();
    let mut eve_peer = TestPeer::with_identity(&server.url, "eve-pc", 0, eve_key);
    eve_peer.register().await;
    let mut secret = entry("rare live 1994 vault.flac", 1000, "e1");
    secret.visibility = "group:vault".parse().unwrap();
    eve_peer.client.upload_full(1, &[secret]).await.unwrap();
    server.wait_for_hits("1994", 3).await;

    let mut bob_events = Events::open(&bob, None).await;
    let mut cid_events = Events::open(&cid, None).await;

    // Contacts: bob only; the answer says how many, never who.
    let asked = ann
        .ask(&ask("anyone have the 1994 live set?"))
        .await
        .unwrap();
    assert_eq!((asked.reached, asked.capped), (1, false));
    let rung = bob_events.until("the request", is_request).await;
    let Event::Request { request, from, .. } = &rung.event else {
        unreachable!()
    };
    assert_eq!((*request, from.as_str()), (asked.id, "ann"));
    while let Some(event) = cid_events.next_within(Duration::from_millis(700)).await {
        assert!(
            !is_request(&event.event),
            "cid is not ann's contact: {event:?}"
        );
    }
    // Depth 2 reaches the contacts' contacts too.
    let wide = ann
        .ask(&peerdex_shared::social::AskRequest {
            depth: Some(2),
            ..ask("and your friends?")
        })
        .await
        .unwrap();
    assert_eq!(wide.reached, 2);
    cid_events.until("the depth-2 request", is_request).await;

    // Holders: every online holder of a visible match, not the group-only one; capped.
    let holders = ann
        .ask(&peerdex_shared::social::AskRequest {
            holders: Some("rare live 1994 flac".into()),
            ..ask("which pressing is yours?")
        })
        .await
        .unwrap();
    assert_eq!(holders.reached, 3, "bob, dan and fay; not eve: {holders:?}");
    let e = ann
        .ask(&peerdex_shared::social::AskRequest {
            holders: Some("rare".into()),
            depth: Some(2),
            ..ask("both?")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");

    // Bob offers the file he shares; ann gets the offer and downloads it from him, verified.
    let mut ann_events = Events::open(&ann, None).await;
    let hash = content_hash(&bytes);
    bob.offer(asked.id, &hash, Some("first pressing"))
        .await
        .unwrap();
    let offered = ann_events
        .until("the offer", |e| matches!(e, Event::Offer { .. }))
        .await;
    let Event::Offer {
        from,
        hash: got,
        name,
        note,
        ..
    } = &offered.event
    else {
        unreachable!()
    };
    assert_eq!(
        (from.as_str(), *got, name.as_str(), note.as_deref()),
        ("bob", hash, "rare live 1994.flac", Some("first pressing"))
    );
    let into = dir.path().join("ann-downloads");
    std::fs::create_dir_all(&into).unwrap();
    let report = download_into(&server.url, hash, &into, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(report.path.unwrap()).unwrap(), bytes);
    assert_eq!(ann.requests().await.unwrap()[2].offers, 1);

    // Offers only from those reached, only of files they share, only while open.
    let e = cid.offer(asked.id, &hash, None).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::NotFound),
        "cid was not asked: {e}"
    );
    let e = bob
        .offer(asked.id, &content_hash(b"not shared"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    ann.close_request(asked.id).await.unwrap();
    bob_events
        .until("the close", |e| matches!(e, Event::RequestClosed { .. }))
        .await;
    let e = bob.offer(asked.id, &hash, None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "closed: {e}");
    let e = ann.close_request(asked.id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");

    // An asker who blocks someone hears no offer from them.
    let fay = {
        let mut c = server.client();
        c.login("fay", "fay password", &fay_peer.identity)
            .await
            .unwrap();
        c
    };
    ann.set_block("fay", true).await.unwrap();
    let e = fay
        .offer(holders.id, &hash_of("f1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Blocked), "{e}");
    ann.set_block("fay", false).await.unwrap();
    fay.offer(holders.id, &hash_of("f1"), None).await.unwrap();

    // A holder who blocked ann is not reached; a fan-out past the cap says so.
    let dan_client = {
        let mut c = server.client();
        c.login("dan", "dan password", &dan_peer.identity)
            .await
            .unwrap();
        c
    };
    dan_client.set_block("ann", true).await.unwrap();
    let again = ann
        .ask(&peerdex_shared::social::AskRequest {
            holders: Some("1994".into()),
            ..ask("again")
        })
        .await
        .unwrap();
    assert_eq!(
        (again.reached, again.capped),
        (2, false),
        "bob and fay, not dan"
    );
    let _gal = holder(&server, "gal", &[("1994 tapes.flac", "g1")]).await;
    let _hal = holder(&server, "hal", &[("1994 demos.flac", "h1")]).await;
    server.wait_for_hits("1994", 5).await;
    let capped = ann
        .ask(&peerdex_shared::social::AskRequest {
            holders: Some("1994".into()),
            ..ask("everyone?")
        })
        .await
        .unwrap();
    assert_eq!((capped.reached, capped.capped), (3, true));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wish_with_auto_download_is_fetched_by_the_wishers_agent_and_reported() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Ann's agent (her linked device) runs; bob's agent will list the match.
    let ann_state = dir.path().join("ann-state");
    std::fs::create_dir_all(&ann_state).unwrap();
    let ann_key = Identity::load_or_create(&ann_state.join(peerdex_agent::KEY_FILE)).unwrap();
    let ann = sign_up(&server, "ann", &ann_key).await;
    let ann_share = dir.path().join("ann-share");
    std::fs::create_dir_all(&ann_share).unwrap();
    let ann_agent =
        TestAgent::start_with(agent_config(&server.url, &ann_state, &[&ann_share])).await;
    ann_agent.wait_control_channel().await;
    let created = ann
        .add_wish(&peerdex_shared::social::WishRequest {
            auto_download: true,
            ..wish("quokka")
        })
        .await
        .unwrap();
    assert!(created.wish.auto_download);
    let mut events = Events::open(&ann, None).await;

    let bob_share = dir.path().join("bob-share");
    std::fs::create_dir_all(&bob_share).unwrap();
    let bob = TestAgent::start(&server.url, &[&bob_share], |_| {}).await;
    bob.wait_synced().await;
    let bytes = pseudo_random(150_000, 61);
    write_file(&bob_share, "quokka selfie.jpg", &bytes);
    let done = events
        .until("the download report", |e| {
            matches!(e, Event::Download { .. })
        })
        .await;
    let Event::Download {
        ok, detail, hash, ..
    } = &done.event
    else {
        unreachable!()
    };
    assert!(*ok, "{detail}");
    assert_eq!(*hash, content_hash(&bytes));
    assert_eq!(
        std::fs::read(detail).unwrap(),
        bytes,
        "verified, in the download folder"
    );
    assert!(
        std::path::Path::new(detail).starts_with(&ann_agent.config.download_dir),
        "{detail}"
    );
    // It went through the agent's transfer queue, whose changes reach ann's stream live.
    let transfers = ann_agent.handle.transfers().list(10).unwrap();
    assert_eq!(transfers.len(), 1, "{transfers:?}");
    assert_eq!(transfers[0].row.request.wish, Some(created.wish.id));
    let finished = events
        .until(
            "the transfer's change",
            |e| matches!(e, Event::Transfer { state, .. } if state == "done"),
        )
        .await;
    let Event::Transfer {
        transfer,
        hash: moved,
        ..
    } = &finished.event
    else {
        unreachable!()
    };
    assert_eq!(
        (*transfer, *moved),
        (transfers[0].row.id, content_hash(&bytes))
    );
    bob.stop().await;
    ann_agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_comes_in_batches_and_nothing_is_skipped() {
    let server = TestServer::start_with(|c| {
        c.social.messages_per_minute = 10_000;
        c.social.history_per_conversation = 10_000;
    })
    .await;
    let ann = sign_up(&server, "ann", &Identity::generate().unwrap()).await;
    let bob = sign_up(&server, "bob", &Identity::generate().unwrap()).await;
    let total = 1005;
    for n in 0..total {
        ann.send_message("bob", &format!("backlog {n}"))
            .await
            .unwrap();
    }
    // The first connection gets a full batch, then the stream ends (more are waiting); the next
    // gets the rest and stays open.
    let mut bodies = Vec::new();
    let mut first = Events::open(&bob, None).await;
    while bodies.len() < 1000 {
        let event = first.next_within(EVENT_WAIT).await.expect("a full batch");
        let Event::Message { message } = event.event else {
            panic!("{event:?}")
        };
        bodies.push(message.body);
    }
    assert!(
        first.ends_within(EVENT_WAIT).await,
        "the stream ends after a full batch"
    );
    let mut second = Events::open(&bob, None).await;
    while let Some(event) = second.next_within(Duration::from_secs(2)).await {
        let Event::Message { message } = event.event else {
            panic!("{event:?}")
        };
        bodies.push(message.body);
    }
    let expected: Vec<String> = (0..total).map(|n| format!("backlog {n}")).collect();
    assert_eq!(bodies, expected, "every message once, in order");
}
