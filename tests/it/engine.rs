//! The engine hosts an application that is not the hello counter, through
//! `engine::application` alone: its own two stores, changelogs and output, exactly once, and a
//! store wiped and rebuilt from both changelogs. Checked against a model computed here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hello_streams::config::Config;
use hello_streams::engine::application::{
    Application, OutputId, OutputSpec, Processor, StoreId, StoreSpec,
};
use hello_streams::engine::context::Context;
use hello_streams::engine::local::{LocalState, Lookup};
use hello_streams::engine::processor::{self, ProcessorError, Setup};
use hello_streams::engine::sink::InputRecord;
use hello_streams::engine::store::{Store, StoreError};
use hello_streams::engine::task::TaskError;
use hello_streams::kafka::admin::{self, Cleanup, Layout};
use hello_streams::liveness::Liveness;
use hello_streams::ownership::OwnerTable;
use hello_streams::shutdown::{self, Trigger};
use hello_streams::telemetry::Metrics;

use crate::common::*;

/// Per key: how many words it sent and the longest (`"count\tlongest"`)...
const WORDS: StoreId = StoreId(0);
/// ...and the first word it sent, written once.
const FIRSTS: StoreId = StoreId(1);
const LONGEST: OutputId = OutputId(0);

struct LongestWord {
    stores: Vec<StoreSpec>,
    outputs: Vec<OutputSpec>,
}

impl LongestWord {
    fn new(app: &App) -> LongestWord {
        let store = |family: &'static str| StoreSpec {
            family,
            changelog: format!("{}-{family}-changelog", app.id),
            cleanup: Cleanup::Compact,
            index: None,
            folded_offset: None,
            read_cache: false,
        };
        LongestWord {
            stores: vec![store("default"), store("firsts")],
            outputs: vec![OutputSpec {
                topic: app.output.clone(),
            }],
        }
    }
}

impl Application for LongestWord {
    fn stores(&self) -> &[StoreSpec] {
        &self.stores
    }

    fn outputs(&self) -> &[OutputSpec] {
        &self.outputs
    }

    fn processor(&self, _: i32, _: &Store) -> Result<Box<dyn Processor>, StoreError> {
        Ok(Box::new(Longest))
    }
}

struct Longest;

fn text(bytes: &[u8]) -> Result<String, std::str::Utf8Error> {
    std::str::from_utf8(bytes).map(str::to_owned)
}

fn parse(value: &str) -> (u64, String) {
    let (count, longest) = value.split_once('\t').expect("count\\tlongest");
    (count.parse().expect("count"), longest.to_owned())
}

impl Processor for Longest {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), TaskError> {
        let (Some(key), Some(word)) = (
            record.key,
            record.value.and_then(|v| std::str::from_utf8(v).ok()),
        ) else {
            return ctx.dead_letter(record, "not_a_word", "needs a key and a UTF-8 value");
        };
        let before = ctx.get(WORDS, key, text)?.map(|v| parse(&v));
        if before.is_none() {
            ctx.put(FIRSTS, key, word.as_bytes())?;
        }
        let (count, longest) = before.unwrap_or((0, String::new()));
        let longest = if word.len() > longest.len() {
            word.to_owned()
        } else {
            longest
        };
        let value = format!("{}\t{longest}", count + 1);
        ctx.put(WORDS, key, value.as_bytes())?;
        ctx.send(LONGEST, key, value.as_bytes())
    }
}

fn config(app: &App, instance: &str) -> Config {
    load_config(vec![
        format!("kafka.bootstrap_servers={}", bootstrap()),
        format!("app.application_id={}", app.id),
        format!("app.state_dir={}", app.state_dir(instance).display()),
        format!("topics.input={}", app.input),
        format!("topics.dlq={}", app.dlq),
        format!("topics.partitions={}", app.partitions),
    ])
}

struct Running {
    trigger: Trigger,
    local: Arc<LocalState>,
    thread: JoinHandle<Result<(), ProcessorError>>,
}

fn start(config: &Config, app: Arc<LongestWord>, layout: &Layout) -> Running {
    let metrics = Arc::new(Metrics::new(1));
    let local = Arc::new(LocalState::new(
        config,
        "a",
        layout.input,
        Arc::new(OwnerTable::default()),
        metrics.clone(),
    ));
    let (trigger, _) = shutdown::channel();
    let setup = Setup {
        config: Arc::new(config.clone()),
        app,
        layout: layout.clone(),
        instance_id: "a".into(),
        thread: 0,
        local: local.clone(),
        metrics,
        announcer: None,
        liveness: Arc::new(Liveness::new(1, Duration::from_secs(120))),
    };
    let stop = trigger.subscribe();
    let thread = std::thread::spawn(move || processor::run(setup, stop));
    Running {
        trigger,
        local,
        thread,
    }
}

impl Running {
    fn stop(self) {
        self.trigger.fire();
        self.thread
            .join()
            .expect("stream thread")
            .expect("stream thread ended with an error");
    }

    fn read(&self, store: StoreId, key: &str) -> Lookup<String> {
        self.local
            .route(key.as_bytes(), |s| s.get(store, key.as_bytes(), text))
    }

    /// Waits until every key reads as the model says from both stores.
    fn wait_for(&self, words: &BTreeMap<String, (u64, String)>, firsts: &BTreeMap<String, String>) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let wrong = words.iter().find(|(key, want)| {
                let got = self.read(WORDS, key);
                let first = self.read(FIRSTS, key);
                got != Lookup::Found(format!("{}\t{}", want.0, want.1))
                    || first != Lookup::Found(firsts[*key].clone())
            });
            let Some((key, want)) = wrong else { return };
            assert!(
                Instant::now() < deadline,
                "{key}: want {want:?} first {:?}, got {:?} first {:?}",
                firsts[key],
                self.read(WORDS, key),
                self.read(FIRSTS, key)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn the_engine_hosts_another_application_exactly_once_and_restores_its_two_stores() {
    let app = App::new("engine-longest", 2);
    let longest = Arc::new(LongestWord::new(&app));
    let config = config(&app, "a");
    let admin = admin::client(&config).expect("admin client");
    let layout = futures::executor::block_on(admin::ensure_topics(&admin, &config, &*longest))
        .expect("topics");
    assert_eq!(layout.input, 2);

    let words = [
        "a",
        "hello",
        "streams",
        "rust",
        "kafka",
        "exactly",
        "once",
        "changelog",
    ];
    let events: Vec<(String, String)> = (0..3_000)
        .map(|i| {
            (
                format!("k{}", i % 37),
                words[(i * 7 + i / 37) % words.len()].to_owned(),
            )
        })
        .collect();
    let mut model: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut firsts: BTreeMap<String, String> = BTreeMap::new();
    for (key, word) in &events {
        firsts.entry(key.clone()).or_insert_with(|| word.clone());
        let entry = model.entry(key.clone()).or_insert((0, String::new()));
        entry.0 += 1;
        if word.len() > entry.1.len() {
            entry.1 = word.clone();
        }
    }

    let running = start(&config, longest.clone(), &layout);
    produce_events(&app.input, &events);
    produce(&app.input, &[(None, Some(b"no key".to_vec()))]);
    let output = await_committed(&app.output, events.len(), Duration::from_secs(90));
    assert_eq!(output.len(), events.len(), "one output record per word");
    let mut last: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for record in &output {
        let key = String::from_utf8(record.key.clone().unwrap()).unwrap();
        let (count, longest) =
            parse(std::str::from_utf8(record.value.as_deref().unwrap()).unwrap());
        let previous = last.insert(key.clone(), (count, longest));
        assert_eq!(
            count,
            previous.map_or(1, |p| p.0 + 1),
            "{key}: counts go up by one, none missing or repeated"
        );
    }
    assert_eq!(last, model);
    let dead = await_committed(&app.dlq, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "the keyless record is a dead letter");
    running.wait_for(&model, &firsts);
    running.stop();

    // Rebuilt from the two changelogs alone.
    std::fs::remove_dir_all(app.state_dir("a")).expect("wipe the state directory");
    let running = start(&config, longest, &layout);
    running.wait_for(&model, &firsts);
    running.stop();
}
