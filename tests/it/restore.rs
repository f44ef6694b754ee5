//! The restore against a real broker, through the library: it reads a changelog to its true
//! end (what a read_uncommitted reader sees), waits while another producer's transaction is
//! open instead of stopping at the last stable offset, and a store whose checkpoint lies past
//! that open transaction is caught up, not wiped.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use hello_streams::config::Config;
use hello_streams::engine::application::Application;
use hello_streams::engine::store::restore::{RestoreLimits, RestoreProgress, Restorer};
use hello_streams::engine::store::Store;
use hello_streams::hello::codec::encode_state;
use hello_streams::hello::domain::{HelloState, Mood};
use hello_streams::hello::{views, HelloApp, STATES};
use hello_streams::kafka::create_end_reader;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::common::*;

fn config(app: &App) -> Config {
    load_config(vec![
        format!("kafka.bootstrap_servers={}", bootstrap()),
        format!("app.application_id={}", app.id),
        "kafka.transaction_timeout_ms=60000".into(),
        // These tests write the state changelog by hand; no window changelog exists.
        "windows.enabled=false".into(),
    ])
}

fn create_topic(name: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in futures::executor::block_on(admin.create_topics([&topic], &options)).unwrap() {
        result.unwrap_or_else(|(t, code)| panic!("create topic {t}: {code}"));
    }
}

fn state(count: u64, last_offset: i64) -> HelloState {
    HelloState {
        hello_count: count,
        hello_total_count: count,
        mood: Mood::Happy,
        revision: count,
        last_offset,
        updated_at_ms: 0,
        reset_epoch: 0,
    }
}

/// A transactional producer with transactions initialised.
fn transactional(id: &str) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", unique(id))
        .set("transaction.timeout.ms", "60000")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    producer
}

fn put(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, s: HelloState) {
    let value = encode_state(&s);
    producer
        .send(
            BaseRecord::to(topic)
                .partition(0)
                .key(key)
                .payload(&value[..]),
        )
        .map_err(|(e, _)| e)
        .expect("send");
}

fn committed_txn(topic: &str, records: &[(&str, HelloState)]) {
    let producer = transactional("restore-commit");
    producer.begin_transaction().unwrap();
    for (key, s) in records {
        put(&producer, topic, key, *s);
    }
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
}

#[test]
fn restore_waits_out_an_open_transaction_and_keeps_what_was_committed_after_it() {
    let app = App::new("restore-open", 1);
    let config = config(&app);
    let changelog = config.topics.changelog.clone();
    create_topic(&changelog);
    // Offsets 0-1, commit marker 2.
    committed_txn(
        &changelog,
        &[("alice", state(1, 10)), ("alice", state(2, 11))],
    );
    // A producer that dies with its transaction open (offset 3), like a kill -9'd owner.
    let dead = transactional("restore-dead");
    dead.begin_transaction().unwrap();
    put(&dead, &changelog, "bob", state(5, 12));
    dead.flush(Duration::from_secs(30)).unwrap();
    // The next owner's committed transaction after it: offsets 4-5, marker 6.
    committed_txn(
        &changelog,
        &[("carol", state(7, 13)), ("alice", state(3, 14))],
    );

    let ends = Arc::new(create_end_reader(&config).unwrap());
    // One restorer per concurrent restore: each owns its reader's assignment.
    let restorer = || Restorer::new(&config, ends.clone()).unwrap();
    let (_, end) = restorer()
        .true_end(&changelog, 0, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(
        end, 7,
        "true end: records, markers and the open transaction's record"
    );

    let dir = tempfile::tempdir().unwrap();
    let fresh =
        Arc::new(Store::open(&dir.path().join("fresh"), HelloApp::new(&config).stores()).unwrap());
    // A store that already holds the next owner's commit: its checkpoint (6) is past the last
    // stable offset (3) but not past the true end, so it must not look "ahead".
    let ahead =
        Arc::new(Store::open(&dir.path().join("ahead"), HelloApp::new(&config).stores()).unwrap());
    let alice = encode_state(&state(3, 14));
    let carol = encode_state(&state(7, 13));
    ahead
        .apply_changelog(
            STATES,
            [
                (&b"alice"[..], Some(&alice[..])),
                (&b"carol"[..], Some(&carol[..])),
            ],
            6,
        )
        .unwrap();

    let spawn = |store: Arc<Store>, progress: Arc<RestoreProgress>| {
        let restorer = restorer();
        std::thread::spawn(move || restorer.restore(&store, 0, &progress, &AtomicBool::new(false)))
    };
    let (p1, p2) = (
        Arc::new(RestoreProgress::default()),
        Arc::new(RestoreProgress::default()),
    );
    let r1 = spawn(fresh.clone(), p1.clone());
    let r2 = spawn(ahead.clone(), p2.clone());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !r1.is_finished() && !r2.is_finished(),
        "both wait for the open transaction"
    );
    assert_eq!(p1.waiting_for_transaction_at(), Some(3));
    assert_eq!(p2.waiting_for_transaction_at(), Some(3));

    dead.abort_transaction(Duration::from_secs(30)).unwrap();
    for (restore, store) in [(r1, &fresh), (r2, &ahead)] {
        let report = restore.join().unwrap().expect("restore after the abort");
        // The end was taken when the restore started; the abort marker (7) came after it.
        assert_eq!(report.checkpoint, 7);
        assert_eq!(
            views::raw_state(&store, b"alice").unwrap(),
            Some(state(3, 14))
        );
        assert_eq!(
            views::raw_state(&store, b"carol").unwrap(),
            Some(state(7, 13))
        );
        assert_eq!(
            views::raw_state(&store, b"bob").unwrap(),
            None,
            "aborted state is not restored"
        );
        assert_eq!(store.checkpoint(STATES).unwrap(), Some(7));
    }
}

#[test]
fn at_least_once_restore_holds_back_states_of_input_that_will_be_replayed() {
    let app = App::new("restore-alo", 1);
    let config = config(&app);
    let changelog = config.topics.changelog.clone();
    create_topic(&changelog);
    let producer = producer();
    for (key, s) in [
        ("dave", state(1, 100)),
        ("erin", state(1, 101)),
        ("dave", state(2, 102)),
        ("erin", state(2, 103)),
    ] {
        put(&producer, &changelog, key, s);
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let ends = Arc::new(create_end_reader(&config).unwrap());
    let restorer = Restorer::new(&config, ends).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), HelloApp::new(&config).stores()).unwrap();
    let limits = RestoreLimits {
        replay_from: Some(102),
        ..RestoreLimits::default()
    };
    let report = restorer
        .restore_with(
            &store,
            0,
            limits,
            &RestoreProgress::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!((report.records, report.held_back), (4, 2));
    assert_eq!(
        views::raw_state(&store, b"dave").unwrap(),
        Some(state(1, 100))
    );
    assert_eq!(
        views::raw_state(&store, b"erin").unwrap(),
        Some(state(1, 101))
    );
    assert_eq!(store.checkpoint(STATES).unwrap(), Some(4));
}
