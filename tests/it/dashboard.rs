//! The dashboard at `GET /` in a real browser: Debian's headless Chromium loads the page from a
//! real daemon (with an HTTP token, which the page takes from `#token=`), runs its polling
//! for a few seconds of virtual time and dumps the DOM, and what the DOM shows must be what
//! the JSON API answers.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::*;

const TOKEN: &str = "dashboard-t0ken";
const ZOE: &str = "zoë/2 b";

#[test]
fn a_browser_shows_what_the_api_answers() {
    let chromium = chromium();
    let app = App::new("dashboard", 3);
    let mut daemon = app
        .daemon("a")
        .set(&format!("query.http_token={TOKEN}"))
        .start();
    daemon.wait_ready(Duration::from_secs(60));
    let port = daemon.http_port;

    // The page itself is open (a browser cannot send a header when it opens a URL); the
    // data is not, so a DOM with data proves the page sent the token.
    let page = raw_get(port, "/", None);
    assert_eq!(page.status, 200, "GET /: {}", page.body);
    assert!(page.head.contains("text/html"), "{}", page.head);
    assert!(
        page.head
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{}",
        page.head
    );
    assert_eq!(raw_get(port, "/v1/top?n=10", None).status, 401);

    let size = window_size(port);
    let events = feed(&app, size);
    let (expected, _) = model(
        &events
            .iter()
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
    );
    wait_until_settled(port, &expected);

    // No key in the URL: the chart shows the first top key. A desktop-sized window.
    let dom = dump_dom(&chromium, port, "", "1280,900");
    let top = api(port, "/v1/top?n=10");
    let first = top["top"][0]["key"].as_str().expect("a top key").to_owned();
    assert_eq!(first, "alice", "{top}");
    check_dom(port, &dom, &first);

    // A key chosen in the URL that needs percent-encoding, on a phone-sized window.
    let query = format!("?key={}", percent_encode(ZOE));
    let dom = dump_dom(&chromium, port, &query, "375,800");
    check_dom(port, &dom, ZOE);
}

/// Asserts that the dumped DOM shows what the API answers now (nothing is fed any more, so
/// the answers are the ones the page got).
fn check_dom(port: u16, dom: &Dom, key: &str) {
    let body = dom.one("body", "data-loaded");
    assert_eq!(
        body.attr("data-loaded"),
        "true",
        "page never loaded:\n{}",
        dom.html
    );
    let status = api(port, "/v1/status");
    assert_eq!(
        body.attr("data-instance-id"),
        status["instanceId"].as_str().unwrap()
    );

    // Every panel shows a current answer, and kept polling to the end: the last updates lie
    // within one top-keys interval (3 s) and a bit of each other.
    let mut updated = Vec::new();
    for id in ["top", "windows", "partitions"] {
        let section = dom
            .all("section", "id")
            .into_iter()
            .find(|s| s.attr("id") == id)
            .unwrap_or_else(|| panic!("no section {id}:\n{}", dom.html));
        assert_eq!(
            section.attr("data-state"),
            "ok",
            "section {id}:\n{}",
            dom.html
        );
        updated.push(section.attr("data-updated").parse::<u64>().unwrap());
    }
    let spread = updated.iter().max().unwrap() - updated.iter().min().unwrap();
    assert!(spread <= 3_500, "panels stopped updating: {updated:?}");

    // Top keys: the same keys in the same order with the same numbers, attributes and text.
    let top = api(port, "/v1/top?n=10");
    let shown: Vec<(String, String, String, String)> = dom
        .all("tr", "data-top-key")
        .iter()
        .map(|row| {
            let cells = &row.cells;
            assert_eq!(cells[0], row.attr("data-top-key"), "{row:?}");
            assert_eq!(cells[1].replace(',', ""), row.attr("data-hello-count"));
            assert_eq!(
                cells[2].replace(',', ""),
                row.attr("data-hello-total-count")
            );
            assert_eq!(cells[3], row.attr("data-mood"), "{row:?}");
            (
                row.attr("data-top-key").to_owned(),
                row.attr("data-hello-count").to_owned(),
                row.attr("data-hello-total-count").to_owned(),
                row.attr("data-mood").to_owned(),
            )
        })
        .collect();
    let answered: Vec<(String, String, String, String)> = top["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_owned(),
                t["helloCount"].to_string(),
                t["helloTotalCount"].to_string(),
                t["mood"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(shown, answered, "top keys: {top}");

    // The chart: one bar per window of the range, consecutive; a window the API lists has
    // its hellos, every other one none.
    let windows = dom.one("section", "data-key");
    assert_eq!(windows.attr("data-key"), key);
    let bars = dom.all("rect", "data-window-start");
    assert!(bars.len() >= 10, "only {} bars:\n{}", bars.len(), dom.html);
    let starts: Vec<i64> = bars.iter().map(|b| b.num("data-window-start")).collect();
    let size = status["windows"]["sizeMs"].as_i64().unwrap();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] == size),
        "bars not one per window: {starts:?}"
    );
    let (first, last) = (starts[0], *starts.last().unwrap());
    let path = format!("/v1/windows/{}?from={first}&to={last}", percent_encode(key));
    let answer = api(port, &path);
    let listed: BTreeMap<i64, (i64, i64)> = answer["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let n = |f: &str| w[f].as_i64().unwrap();
            (n("start"), (n("hellos"), n("events")))
        })
        .collect();
    assert!(
        listed.values().filter(|(h, _)| *h > 0).count() >= 2,
        "{key} should have hellos in several windows: {answer}"
    );
    for bar in &bars {
        let start = bar.num("data-window-start");
        let (hellos, events) = listed.get(&start).copied().unwrap_or((0, 0));
        assert_eq!(bar.num("data-hellos"), hellos, "bar at {start}: {answer}");
        assert_eq!(bar.num("data-events"), events, "bar at {start}: {answer}");
        assert_eq!(bar.num("data-window-end"), start + size);
    }
    let bar_starts: BTreeSet<i64> = starts.iter().copied().collect();
    assert!(
        listed.keys().all(|s| bar_starts.contains(s)),
        "a window the API lists has no bar: {answer}"
    );
    // The table under the chart: the listed windows, newest first.
    let rows: Vec<(i64, i64, i64)> = dom
        .all("tr", "data-window-start")
        .iter()
        .map(|r| {
            assert_eq!(r.cells[1].replace(',', ""), r.attr("data-hellos"));
            (
                r.num("data-window-start"),
                r.num("data-hellos"),
                r.num("data-events"),
            )
        })
        .collect();
    let want: Vec<(i64, i64, i64)> = listed
        .iter()
        .rev()
        .map(|(s, (h, e))| (*s, *h, *e))
        .collect();
    assert_eq!(rows, want, "window table: {answer}");
    // The key's current count above the chart.
    let state = api(port, &format!("/v1/state/{}", percent_encode(key)));
    let line = dom.one("p", "data-hello-count");
    assert_eq!(line.attr("data-key"), key);
    assert_eq!(
        line.attr("data-hello-count"),
        state["helloCount"].to_string()
    );
    assert_eq!(line.attr("data-mood"), state["mood"].as_str().unwrap());

    // Partitions: the ones the status lists, with their state, restore progress and lag.
    let shown: Vec<(String, String, String, String)> = dom
        .all("tr", "data-partition")
        .iter()
        .map(|r| {
            (
                r.attr("data-partition").to_owned(),
                r.attr("data-state").to_owned(),
                format!(
                    "{}/{}",
                    r.attr("data-restored"),
                    r.attr("data-restore-total")
                ),
                r.attr("data-lag").to_owned(),
            )
        })
        .collect();
    let mut answered: Vec<(String, String, String, String)> = status["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].to_string(),
                p["state"].as_str().unwrap().to_owned(),
                format!("{}/{}", p["restored"], p["restoreTotal"]),
                p["lag"].as_i64().map(|l| l.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    answered.sort_by_key(|p| p.0.parse::<i32>().unwrap());
    assert_eq!(shown, answered, "partitions: {status}");
    assert_eq!(shown.len(), 3, "{status}");
}

// ---- the data ----

fn window_size(port: u16) -> i64 {
    let status = api(port, "/v1/status");
    assert!(status["windows"].is_object(), "windows are off: {status}");
    status["windows"]["sizeMs"]
        .as_i64()
        .expect("windows.sizeMs")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Events over the last four windows, with explicit timestamps in ascending order (so none
/// is late); returns them as (timestamp, key, value) in the order sent.
fn feed(app: &App, size: i64) -> Vec<(i64, String, String)> {
    // A second into the current window, so its records are not from the future.
    while now_ms().rem_euclid(size) < 2_000 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = now_ms();
    let current = now - now.rem_euclid(size);
    let window = |i: i64| current - (3 - i) * size + 1_000;
    let angry = r#"{"type":"mood","mood":"ANGRY"}"#;
    let happy = r#"{"type":"mood","mood":"HAPPY"}"#;
    let plan: [(i64, &str, &str, usize); 13] = [
        (0, "alice", "Hello", 3),
        (0, "bob", "Hello", 1),
        (0, "carol", "Hello", 1),
        (1, "carol", r#"{"type":"reset"}"#, 1), // helloCount 0, helloTotalCount kept
        (1, "bob", angry, 1),
        (1, "bob", "Hello", 1), // refused: bob is angry
        (1, "bob", happy, 1),
        (1, ZOE, "Hello", 2),
        (2, "alice", "Hello", 2),
        (2, "bob", "Hello", 1),
        (2, "carol", "Hello", 1),
        (3, "alice", "Hello", 1),
        (3, ZOE, "Hello", 1),
    ];
    let mut events = Vec::new();
    for (i, key, value, times) in plan {
        for _ in 0..times {
            let ts = window(i) + events.len() as i64;
            events.push((ts, key.to_owned(), value.to_owned()));
        }
    }
    let timed: Vec<(&str, &str, i64)> = events
        .iter()
        .map(|(ts, key, value)| (key.as_str(), value.as_str(), *ts))
        .collect();
    produce_at(&app.input, &timed);
    events
}

/// Waits (bounded) until the API shows every key's state, the windows hold every hello, and
/// all partitions are active with no lag, so the page and the later API reads see the same.
fn wait_until_settled(port: u16, expected: &std::collections::HashMap<String, Expected>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match settled(port, expected) {
            Ok(()) => return,
            Err(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the API never showed the events: {last}");
}

fn settled(
    port: u16,
    expected: &std::collections::HashMap<String, Expected>,
) -> Result<(), String> {
    for (key, want) in expected {
        let (status, state) = api_answer(port, &format!("/v1/state/{}", percent_encode(key)));
        if status != 200 || state["helloCount"].as_u64() != Some(want.count) {
            return Err(format!("{key}: {status} {state}"));
        }
        let (status, windows) = api_answer(port, &format!("/v1/windows/{}", percent_encode(key)));
        let hellos: u64 = windows["windows"]
            .as_array()
            .map(|ws| ws.iter().filter_map(|w| w["hellos"].as_u64()).sum())
            .unwrap_or(0);
        if status != 200 || hellos != want.total {
            return Err(format!("windows of {key}: {status} {windows}"));
        }
    }
    let status = api(port, "/v1/status");
    let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
    if partitions.len() != 3
        || !partitions
            .iter()
            .all(|p| p["state"] == "active" && p["lag"] == 0)
    {
        return Err(format!("status: {status}"));
    }
    let top = api(port, "/v1/top?n=10");
    if top["top"].as_array().map(Vec::len) != Some(expected.len()) {
        return Err(format!("top: {top}"));
    }
    Ok(())
}

// ---- HTTP with the token ----

struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn raw_get(port: u16, path: &str, token: Option<&str>) -> Answer {
    let (status, head, body) = http_get_with(port, path, token);
    Answer { status, head, body }
}

fn api_answer(port: u16, path: &str) -> (u16, Value) {
    let answer = raw_get(port, path, Some(TOKEN));
    let value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    (answer.status, value)
}

fn api(port: u16, path: &str) -> Value {
    let (status, value) = api_answer(port, path);
    assert_eq!(status, 200, "GET {path}: {value}");
    value
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as the page's
/// `encodeURIComponent` does for a key.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- the browser ----

/// Debian's Chromium; the test fails without it rather than pass having checked nothing.
fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("chromium"))
                .find(|candidate| candidate.is_file())
        })
        .expect(
            "chromium not found: the dashboard test loads the page in Debian's headless \
             Chromium; run scripts/install-deps --test as root (or apt-get install chromium)",
        )
}

/// Loads `/{query}#token=...` in headless Chromium for 8 s of virtual time (the page polls
/// every second, top keys every 3) and returns the DOM it then has. Fails on any error the
/// page's console reports.
fn dump_dom(chromium: &PathBuf, port: u16, query: &str, size: &str) -> Dom {
    let profile = tempfile::tempdir().expect("browser profile dir");
    let dom_path = profile.path().join("dom.html");
    let log_path = profile.path().join("chromium.log");
    let url = format!("http://127.0.0.1:{port}/{query}#token={TOKEN}");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--log-level=0",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--window-size={size}"))
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom_path).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        // Its own process group, so that on a timeout the browser's helper processes
        // (renderer, GPU, zygote) can be ended with it, and only they.
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            // Before the browser is reaped, so its pid (the group's id) cannot be reused.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("chromium still running after 90 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}):\n{log}");
    let html = std::fs::read_to_string(&dom_path).unwrap();
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(
        console.is_empty(),
        "the page logged to its console:\n{}",
        console.join("\n")
    );
    Dom { html }
}

// ---- reading the DOM Chromium serialized ----

struct Dom {
    html: String,
}

#[derive(Debug)]
struct Element {
    attrs: BTreeMap<String, String>,
    /// The text of each `<td>` inside, tags stripped.
    cells: Vec<String>,
}

impl Element {
    fn attr(&self, name: &str) -> &str {
        self.attrs
            .get(name)
            .unwrap_or_else(|| panic!("no {name} on {self:?}"))
    }

    fn num(&self, name: &str) -> i64 {
        self.attr(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} of {self:?} is not a number"))
    }
}

impl Dom {
    /// The `tag` elements that carry attribute `with`, in document order.
    fn all(&self, tag: &str, with: &str) -> Vec<Element> {
        let html = &self.html;
        let open = format!("<{tag}");
        let close = format!("</{tag}>");
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(offset) = html[at..].find(&open) {
            let start = at + offset + open.len();
            at = start;
            if !html[start..].starts_with([' ', '>']) {
                continue;
            }
            let (attrs, end) = attributes(&html[start..]);
            if !attrs.contains_key(with) {
                continue;
            }
            let inner_end = html[start + end..]
                .find(&close)
                .map_or(start + end, |i| start + end + i);
            let cells = cells(&html[start + end..inner_end]);
            found.push(Element { attrs, cells });
        }
        found
    }

    fn one(&self, tag: &str, with: &str) -> Element {
        let mut all = self.all(tag, with);
        assert_eq!(all.len(), 1, "expected one <{tag} {with}>:\n{}", self.html);
        all.remove(0)
    }
}

/// Parses `name="value"` pairs up to the tag's `>` (Chromium quotes every value with `"`);
/// returns them and the offset just past the `>`.
fn attributes(tag: &str) -> (BTreeMap<String, String>, usize) {
    let mut attrs = BTreeMap::new();
    let bytes = tag.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'>' || bytes[i] == b'/' {
            let end = tag[i..].find('>').map_or(tag.len(), |j| i + j + 1);
            return (attrs, end);
        }
        let name_end = tag[i..]
            .find(|c: char| c == '=' || c == '>' || c.is_ascii_whitespace())
            .map_or(tag.len(), |j| i + j);
        let name = tag[i..name_end].to_owned();
        i = name_end;
        if tag[i..].starts_with("=\"") {
            let value_end = tag[i + 2..].find('"').map_or(tag.len(), |j| i + 2 + j);
            attrs.insert(name, decode(&tag[i + 2..value_end]));
            i = value_end + 1;
        } else {
            attrs.insert(name, String::new());
        }
    }
}

fn cells(inner: &str) -> Vec<String> {
    inner
        .split("<td")
        .skip(1)
        .map(|cell| {
            let cell = &cell[cell.find('>').map_or(0, |i| i + 1)..];
            let cell = &cell[..cell.find("</td>").unwrap_or(cell.len())];
            let mut text = String::new();
            let mut in_tag = false;
            for c in cell.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            decode(text.trim())
        })
        .collect()
}

/// The entities Chromium's serializer writes.
fn decode(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}
