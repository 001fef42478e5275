//! `llava-edge serve` as clients meet it, over plain HTTP on loopback, on the tiny LLaVA-1.5
//! fixture converted to GGUF: text and image chats (whole and streamed) whose greedy tokens are
//! transformers', concurrent clients that get the replies they get alone (batched decode), a
//! continued conversation that reuses its cached prefix, bad clients refused with OpenAI error
//! objects while the server goes on, a disconnect that frees its slot, a full queue, the API
//! key, and SIGTERM letting a running reply finish.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::npy::fixtures_dir;
use gguf_tools::convert::{convert, OutType};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_llava-edge");
const TIMEOUT: Duration = Duration::from_secs(120);
const TEXT_Q: &str = "Describe a red circle on a blue background.";
const IMAGE_Q: &str = "What is shown in this image?";

/// The converted fixture pair, made once per test process.
fn model() -> &'static (PathBuf, PathBuf) {
    common::converted_llava15("server")
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let (t, v) = model();
        let mut child = Command::new(BIN)
            .args(["serve", "-m"])
            .arg(t)
            .arg("--mmproj")
            .arg(v)
            .args(["--port", "0", "--cache-type", "f32", "-t", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(child.stderr.take().unwrap());
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let start = Instant::now();
        let addr = loop {
            let text = stderr.lock().unwrap().clone();
            if let Some(at) = text.find("listening on http://") {
                let rest = &text[at + "listening on http://".len()..];
                break rest.lines().next().unwrap().trim().to_string();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the server exited ({status}) before listening:\n{text}");
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "no address within {TIMEOUT:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let s = Server {
            child,
            addr,
            stderr,
        };
        while s.get("/health").status != 200 {
            assert!(start.elapsed() < TIMEOUT, "never ready:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn get(&self, path: &str) -> Resp {
        http(&self.addr, "GET", path, &[], b"")
    }

    fn chat(&self, body: &Value) -> Resp {
        http(
            &self.addr,
            "POST",
            "/v1/chat/completions",
            &[],
            body.to_string().as_bytes(),
        )
    }

    fn metric(&self, name: &str) -> f64 {
        let m = self.get("/metrics").text();
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("llava_edge_{name} ")))
            .unwrap_or_else(|| panic!("no metric {name} in\n{m}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }

    /// The `data:` payloads of a server-sent event stream.
    fn events(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

fn request_head(method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> String {
    let mut h = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: \
         application/json\r\nContent-Length: {len}\r\n"
    );
    for (k, v) in headers {
        h += &format!("{k}: {v}\r\n");
    }
    h + "\r\n"
}

/// One HTTP/1.1 exchange on a fresh connection (chunked bodies are decoded).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(request_head(method, path, headers, body.len()).as_bytes())
        .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let (mut out, mut rest) = (Vec::new(), &body[..]);
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 4 + n..];
        }
        body = out;
    }
    Resp { status, head, body }
}

fn data_uri(image: &str) -> String {
    let bytes = std::fs::read(fixtures_dir().join("images").join(image)).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn user(text: &str, images: &[&str]) -> Value {
    let mut parts: Vec<Value> = images
        .iter()
        .map(|i| json!({"type": "image_url", "image_url": {"url": data_uri(i)}}))
        .collect();
    parts.push(json!({"type": "text", "text": text}));
    json!({"role": "user", "content": parts})
}

fn greedy(messages: Value, max_tokens: usize) -> Value {
    json!({"messages": messages, "max_tokens": max_tokens, "temperature": 0, "return_tokens": true})
}

/// The transformers fixture's greedy tokens for llava15/`case`.
fn fixture_tokens(case: &str) -> Vec<u64> {
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("llava15").join(case).join("meta.json"))
            .unwrap(),
    )
    .unwrap();
    meta["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

fn tokens(v: &Value) -> Vec<u64> {
    v["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("no tokens in {v}"))
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

/// A streamed reply: its text, token ids, finish reason and usage; checks the chunk shapes.
fn streamed(r: &Resp) -> (String, Vec<u64>, String, Value) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.head.to_ascii_lowercase().contains("text/event-stream"),
        "{}",
        r.head
    );
    let events = r.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let (mut text, mut ids, mut finish, mut usage) = (String::new(), vec![], None, Value::Null);
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        if !c["usage"].is_null() {
            usage = c["usage"].clone();
        }
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        text += choice["delta"]["content"].as_str().unwrap_or("");
        ids.extend(
            choice["delta"]["tokens"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t.as_u64().unwrap()),
        );
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    (text, ids, finish.expect("a finish_reason"), usage)
}

#[test]
fn text_and_image_chats_give_the_transformers_greedy_tokens_whole_and_streamed() {
    let s = Server::start(&[]);
    for (case, msg) in [
        ("text_only", user(TEXT_Q, &[])),
        ("sq180", user(IMAGE_Q, &["sq180.png"])),
        ("tall110x200", user(IMAGE_Q, &["tall110x200.png"])),
    ] {
        let want = fixture_tokens(case);
        let body = greedy(json!([msg]), want.len());
        let r = s.chat(&body);
        assert_eq!(r.status, 200, "{case}: {}", r.text());
        let v = r.json();
        assert_eq!(tokens(&v), want, "{case}: greedy tokens");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        let u = &v["usage"];
        assert_eq!(u["completion_tokens"], want.len());
        assert_eq!(
            u["total_tokens"].as_u64(),
            Some(u["prompt_tokens"].as_u64().unwrap() + want.len() as u64)
        );
        let mut body = body.clone();
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let (text, ids, finish, usage) = streamed(&s.chat(&body));
        assert_eq!(ids, want, "{case}: streamed tokens");
        assert_eq!(
            text, v["choices"][0]["message"]["content"],
            "{case}: streamed text"
        );
        assert_eq!(finish, "length");
        assert_eq!(usage["completion_tokens"], want.len(), "{usage}");
    }
    // A stop string ends the reply before it (the fixture's reply is "ou\u{13}UUUUUU").
    let mut body = greedy(json!([user(TEXT_Q, &[])]), 8);
    body["stop"] = json!(["UU"]);
    let v = s.chat(&body).json();
    assert_eq!(v["choices"][0]["message"]["content"], "ou\u{13}", "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    // A seed makes a sampled reply reproducible.
    let sampled = json!({"messages": [user(TEXT_Q, &[])], "max_tokens": 12,
        "temperature": 1.5, "seed": 7, "return_tokens": true});
    assert_eq!(
        tokens(&s.chat(&sampled).json()),
        tokens(&s.chat(&sampled).json())
    );
    // Two images in one message: both spliced in (25 rows each), only the new one encoded.
    let r = s.chat(&greedy(
        json!([user(IMAGE_Q, &["sq180.png", "wide200x110.png"])]),
        4,
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(p >= 46 + 25, "{p} prompt tokens for two images");
    let models = s.get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], "llava15", "{models}");
    assert_eq!(
        s.metric("images_encoded_total"),
        3.0,
        "a repeated image is encoded once"
    );
}

#[test]
fn concurrent_clients_get_the_replies_they_get_alone() {
    let s = Server::start(&["--parallel", "4"]);
    let requests: Vec<Value> = (0..8)
        .map(|i| {
            let msg = match i % 3 {
                0 => user(TEXT_Q, &[]),
                1 => user(IMAGE_Q, &["sq180.png"]),
                _ => user(&format!("{IMAGE_Q} ({i})"), &["wide200x110.png"]),
            };
            // Long enough replies that all eight overlap in the batch.
            greedy(json!([msg]), 300 + 20 * i)
        })
        .collect();
    let alone: Vec<Vec<u64>> = requests.iter().map(|r| tokens(&s.chat(r).json())).collect();
    let steps = s.metric("decode_steps_total");
    let rows = s.metric("decode_rows_total");
    assert_eq!(steps, rows, "one at a time: one row a step");
    let addr = s.addr.clone();
    let together: Vec<Vec<u64>> = std::thread::scope(|sc| {
        let handles: Vec<_> = requests
            .iter()
            .map(|r| {
                let addr = addr.clone();
                sc.spawn(move || {
                    let resp = http(
                        &addr,
                        "POST",
                        "/v1/chat/completions",
                        &[],
                        r.to_string().as_bytes(),
                    );
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    tokens(&resp.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
    let (steps, rows) = (
        s.metric("decode_steps_total") - steps,
        s.metric("decode_rows_total") - rows,
    );
    assert!(
        rows > steps * 1.5,
        "decode steps carried several slots: {rows} rows in {steps} steps"
    );
    assert_eq!(s.metric("busy_slots"), 0.0);
}

#[test]
fn a_continued_conversation_reuses_its_cached_prefix_and_answers_as_a_fresh_server() {
    let s = Server::start(&[]);
    let first = json!([user(IMAGE_Q, &["sq180.png"])]);
    let r1 = s.chat(&greedy(first.clone(), 6)).json();
    let p1 = r1["usage"]["prompt_tokens"].as_u64().unwrap();
    let mut conv = first.as_array().unwrap().clone();
    conv.push(json!({"role": "assistant", "content": r1["choices"][0]["message"]["content"]}));
    conv.push(user("And the colours?", &[]));
    let r2 = s.chat(&greedy(json!(conv), 6)).json();
    let cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= p1,
        "the first turn's {p1} prompt positions are reused: {cached}"
    );
    assert_eq!(s.metric("images_encoded_total"), 1.0);
    let fresh = Server::start(&[]);
    let r3 = fresh.chat(&greedy(json!(conv), 6)).json();
    assert_eq!(r3["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(tokens(&r2), tokens(&r3), "reused prefix, same reply");
}

/// A PNG whose header claims 60000 x 60000 pixels (a decompression bomb's shape).
fn bomb_png() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&60000u32.to_be_bytes());
    ihdr.extend_from_slice(&60000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // The decoder reads the header in full only once image data begins: one empty zlib
    // stream, then the end.
    for (ty, data) in [
        (&b"IDAT"[..], &b"\x78\x9c\x03\x00\x00\x00\x00\x01"[..]),
        (b"IEND", b""),
    ] {
        let chunk = [ty, data].concat();
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    png
}

#[test]
fn bad_clients_get_openai_errors_and_the_server_goes_on() {
    let tmp = common::TempDir::new("server-bad");
    let s = Server::start(&["-c", "128", "--allowed-dir", tmp.0.to_str().unwrap()]);
    let ok = greedy(json!([user(TEXT_Q, &[])]), 4);
    let image = |url: String| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]}]})
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let outside = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/sq180.png");
    let long = "word ".repeat(400);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            b"{\"messages\": [".to_vec(),
            400,
            "not valid JSON",
        ),
        ("not an object", b"[1, 2]".to_vec(), 400, "JSON object"),
        (
            "messages of the wrong type",
            br#"{"messages": "hi"}"#.to_vec(),
            400,
            "'messages' must be",
        ),
        (
            "temperature of the wrong type",
            json!({"messages": [user("x", &[])], "temperature": "hot"})
                .to_string()
                .into_bytes(),
            400,
            "'temperature'",
        ),
        (
            "an unknown role",
            br#"{"messages": [{"role": "wizard", "content": "x"}]}"#.to_vec(),
            400,
            "role 'wizard'",
        ),
        (
            "n of 2",
            json!({"messages": [user("x", &[])], "n": 2})
                .to_string()
                .into_bytes(),
            400,
            "one choice",
        ),
        (
            "an image that is not one",
            image(format!(
                "data:image/png;base64,{}",
                b64(b"hello, not a picture")
            ))
            .to_string()
            .into_bytes(),
            400,
            "not a supported image",
        ),
        (
            "a decompression bomb",
            image(format!("data:image/png;base64,{}", b64(&bomb_png())))
                .to_string()
                .into_bytes(),
            400,
            "60000x60000",
        ),
        (
            "a remote URL",
            image("https://example.com/cat.png".into())
                .to_string()
                .into_bytes(),
            400,
            "not fetched",
        ),
        (
            "a file outside the allowed directory",
            image(format!("file://{}", outside.display()))
                .to_string()
                .into_bytes(),
            400,
            "allowed directory",
        ),
        (
            "a prompt over the context",
            json!({"messages": [user(&long, &[])]})
                .to_string()
                .into_bytes(),
            400,
            "context holds 128",
        ),
    ];
    for (what, body, status, needle) in cases {
        let r = http(&s.addr, "POST", "/v1/chat/completions", &[], &body);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let e = r.json();
        let msg = e["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {e}"));
        assert!(msg.contains(needle), "{what}: {msg}");
        assert!(e["error"]["type"].is_string(), "{what}: {e}");
        let next = s.chat(&ok);
        assert_eq!(next.status, 200, "after {what}: {}", next.text());
    }
    // A file inside the allowed directory is read.
    std::fs::copy(&outside, tmp.0.join("in.png")).unwrap();
    let r = s.chat(&image(format!("file://{}", tmp.0.join("in.png").display())));
    assert_eq!(r.status, 200, "{}", r.text());
    // max_tokens past the context: the reply stops where the context does (128 positions
    // evaluated, and the last token sampled from them, as `run` ends a reply).
    let r = s.chat(&greedy(json!([user(TEXT_Q, &[])]), 100_000)).json();
    assert_eq!(r["choices"][0]["finish_reason"], "length", "{r}");
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() == 129, "{r}");
    // A 100 MB body is refused from its length, before it is read.
    let mut c = connect(&s.addr);
    c.write_all(request_head("POST", "/v1/chat/completions", &[], 100 << 20).as_bytes())
        .unwrap();
    let _ = c.write_all(&vec![b' '; 1 << 16]);
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    let r = parse(&raw);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limit"));
    // Unknown routes are JSON errors too.
    assert_eq!(s.get("/v1/nothing").status, 404);
    assert_eq!(s.chat(&ok).status, 200);
    let m = s.get("/metrics").text();
    assert!(
        m.contains("llava_edge_requests_total{status=\"400\"} 11"),
        "{m}"
    );
}

/// Starts a streamed reply and reads until its first content arrives; returns the connection.
fn start_stream(addr: &str, max_tokens: usize) -> TcpStream {
    let mut body = greedy(json!([user(TEXT_Q, &[])]), max_tokens);
    body["stream"] = json!(true);
    let body = body.to_string();
    let mut c = connect(addr);
    c.write_all(request_head("POST", "/v1/chat/completions", &[], body.len()).as_bytes())
        .unwrap();
    c.write_all(body.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"tokens\":[") {
        let n = c.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    c
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_client_that_disconnects_mid_stream_frees_its_slot() {
    let s = Server::start(&["--parallel", "1", "-c", "8192"]);
    let c = start_stream(&s.addr, 8000);
    drop(c);
    wait_until("the disconnect is seen", || {
        s.metric("disconnects_total") == 1.0
    });
    assert_eq!(s.metric("busy_slots"), 0.0);
    let made = s.metric("completion_tokens_total");
    assert!(
        made < 8000.0,
        "the reply stopped when its client left: {made} tokens"
    );
    let r = s.chat(&greedy(json!([user(TEXT_Q, &[])]), 8)).json();
    assert_eq!(tokens(&r), fixture_tokens("text_only"));
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let s = Server::start(&["--parallel", "1", "--queue", "1", "-c", "8192"]);
    let running = start_stream(&s.addr, 8000);
    let addr = s.addr.clone();
    let waiting = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            "/v1/chat/completions",
            &[],
            greedy(json!([user("hi", &[])]), 2).to_string().as_bytes(),
        )
    });
    wait_until("the second request waits", || {
        s.metric("queue_length") == 1.0
    });
    let r = s.chat(&greedy(json!([user("hi", &[])]), 2));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        r.head
    );
    assert_eq!(r.json()["error"]["code"], "queue_full");
    drop(running);
    assert_eq!(waiting.join().unwrap().status, 200);
}

#[test]
fn the_api_key_guards_every_route_but_health() {
    let s = Server::start(&["--api-key", "sesame"]);
    let ok = greedy(json!([user(TEXT_Q, &[])]), 2).to_string();
    assert_eq!(s.get("/health").status, 200);
    for (path, method, body) in [
        ("/v1/models", "GET", ""),
        ("/metrics", "GET", ""),
        ("/v1/chat/completions", "POST", ok.as_str()),
    ] {
        let none = http(&s.addr, method, path, &[], body.as_bytes());
        assert_eq!(none.status, 401, "{path}: {}", none.text());
        assert_eq!(none.json()["error"]["type"], "authentication_error");
        let wrong = http(
            &s.addr,
            method,
            path,
            &[("Authorization", "Bearer sesamE")],
            body.as_bytes(),
        );
        assert_eq!(wrong.status, 401, "{path}");
        let right = http(
            &s.addr,
            method,
            path,
            &[("Authorization", "Bearer sesame")],
            body.as_bytes(),
        );
        assert_eq!(right.status, 200, "{path}: {}", right.text());
    }
}

#[test]
fn sigterm_lets_the_running_reply_finish_then_exits() {
    let mut s = Server::start(&[]);
    let mut c = start_stream(&s.addr, 300);
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(
        String::from_utf8_lossy(&rest).contains("data: [DONE]"),
        "the reply finished"
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no exit:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}:\n{}", s.log());
    assert!(TcpStream::connect(&s.addr).is_err(), "no longer accepting");
}

/// The batched decode step ([`TextModel::forward_slots`]) against each sequence run alone
/// ([`TextModel::forward`]), for F32 and for interleaved Q8_0 and Q4_0 weights: the same logits
/// bit for bit, so batching cannot change a greedy reply.
#[test]
fn batched_decode_logits_equal_each_sequence_alone() {
    use gguf_tools::mix::Mix;
    use llava_edge::gguf::GgufFile;
    use llava_edge::text::{interleave_weights, KvCache, KvType, Logits, TextModel};
    use llava_edge::threadpool::ThreadPool;
    let tmp = common::TempDir::new("server-slots");
    let pool = ThreadPool::new(2);
    for (name, ty) in [
        ("f32", OutType::F32),
        ("q8_0", OutType::Mix(Mix::Q8_0)),
        ("q4_0", OutType::Mix(Mix::Q4_0)),
    ] {
        let (t, v) = (tmp.0.join(format!("{name}.gguf")), tmp.0.join("mm.gguf"));
        convert(&fixtures_dir().join("llava15/hf"), &t, &v, ty, false).unwrap();
        let mut f = GgufFile::open(&t).unwrap();
        let interleaved = interleave_weights(&mut f, &pool).unwrap();
        // The quantized files go through the interleaved decode kernel, many rows at once.
        assert!(
            name == "f32" || interleaved > 0,
            "{name}: nothing interleaved"
        );
        let m = TextModel::load(&f).unwrap();
        let prompts: [&[u32]; 3] = [&[1, 5, 9, 200], &[1, 17], &[1, 300, 301, 302, 303, 304, 7]];
        let next = [42u32, 7, 311];
        let fill = |p: &[u32]| {
            let mut c = m.new_cache(64, KvType::F16);
            m.forward(m.embed(p).unwrap(), &mut c, Logits::Last, &pool)
                .unwrap();
            c
        };
        let alone: Vec<Vec<f32>> = prompts
            .iter()
            .zip(next)
            .map(|(p, id)| {
                let mut c = fill(p);
                m.forward(m.embed(&[id]).unwrap(), &mut c, Logits::Last, &pool)
                    .unwrap()
            })
            .collect();
        let mut caches: Vec<KvCache> = prompts.iter().map(|p| fill(p)).collect();
        let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let batched = m
            .forward_slots(m.embed(&next).unwrap(), &mut refs, &pool)
            .unwrap();
        let n_vocab = m.config.n_vocab;
        for (i, want) in alone.iter().enumerate() {
            let got = &batched[i * n_vocab..(i + 1) * n_vocab];
            let diff = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff == 0.0, "{name}: sequence {i}: logits differ by {diff}");
        }
        for (c, p) in caches.iter().zip(prompts) {
            assert_eq!(
                c.len(),
                p.len() + 1,
                "{name}: one position stored per sequence"
            );
        }
    }
}

/// Greedy replies through `serve --draft-model` / `--lookup` against the transformers fixture:
/// the model itself as draft (proposals kept), another model of the same vocabulary (llava_v1:
/// proposals refused) and prompt lookup; whole and streamed, text and image, a token budget
/// that ends a reply inside a verify pass, and two slots decoding together.
#[test]
fn drafting_servers_give_the_models_own_greedy_replies() {
    let tmp = common::TempDir::new("server-draft");
    let (other, other_v) = (tmp.path("llava_v1.gguf"), tmp.path("llava_v1-mmproj.gguf"));
    convert(
        &fixtures_dir().join("llava_v1/hf"),
        &other,
        &other_v,
        OutType::F32,
        false,
    )
    .unwrap();
    let own = model().0.to_str().unwrap().to_string();
    let other = other.to_str().unwrap().to_string();
    let cases = [
        ("text_only", user(TEXT_Q, &[])),
        ("sq180", user(IMAGE_Q, &["sq180.png"])),
    ];
    for (name, flags, kept) in [
        (
            "self",
            vec!["--draft-model", own.as_str(), "--draft-max", "3"],
            Some(true),
        ),
        (
            "llava_v1",
            vec!["--draft-model", other.as_str(), "--draft-max", "3"],
            Some(false),
        ),
        ("lookup", vec!["--lookup", "--draft-max", "4"], None),
    ] {
        let s = Server::start(&flags);
        for (case, msg) in &cases {
            let want = fixture_tokens(case);
            let body = greedy(json!([msg]), want.len());
            let v = s.chat(&body).json();
            assert_eq!(tokens(&v), want, "{name} {case}: greedy tokens");
            assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
            assert_eq!(v["usage"]["completion_tokens"], want.len(), "{v}");
            let mut body = body.clone();
            body["stream"] = json!(true);
            let (text, ids, finish, _) = streamed(&s.chat(&body));
            assert_eq!(ids, want, "{name} {case}: streamed tokens");
            assert_eq!(text, v["choices"][0]["message"]["content"]);
            assert_eq!(finish, "length");
            // A budget that runs out inside a verify pass ends the reply there.
            let v = s.chat(&greedy(json!([msg]), 5)).json();
            assert_eq!(tokens(&v), want[..5], "{name} {case}: 5-token budget");
        }
        let proposed = s.metric("draft_tokens_total");
        let accepted = s.metric("draft_accepted_tokens_total");
        assert!(proposed > 0.0, "{name}: nothing was proposed");
        match kept {
            Some(true) => assert!(accepted > 0.0, "{name}: {accepted} of {proposed} kept"),
            Some(false) => assert!(accepted < proposed, "{name}: {accepted} of {proposed} kept"),
            None => {}
        }
    }
    // Two slots decoding together take the batched step, without proposals.
    let s = Server::start(&["--parallel", "2", "--draft-model", own.as_str()]);
    let addr = s.addr.clone();
    std::thread::scope(|sc| {
        for (case, msg) in &cases {
            let addr = addr.clone();
            sc.spawn(move || {
                let want = fixture_tokens(case);
                let body = greedy(json!([msg]), want.len());
                let r = http(
                    &addr,
                    "POST",
                    "/v1/chat/completions",
                    &[],
                    body.to_string().as_bytes(),
                );
                assert_eq!(tokens(&r.json()), want, "{case} beside another request");
            });
        }
    });
}

/// `ignore_eos` (llama-server's extension): the reply runs to `max_tokens` without an
/// end-of-generation token, and up to where the plain reply ends it is the plain reply.
#[test]
fn ignore_eos_runs_the_reply_to_its_budget() {
    let s = Server::start(&[]);
    let msg = json!([user(TEXT_Q, &[])]);
    let plain = tokens(&s.chat(&greedy(msg.clone(), 64)).json());
    let mut body = greedy(msg, 64);
    body["ignore_eos"] = json!(true);
    let v = s.chat(&body).json();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    let got = tokens(&v);
    assert_eq!(got.len(), 64);
    // The fixture's vocabulary is LLaMA's: </s> is 2.
    assert!(!got.contains(&2), "an end-of-generation token in {got:?}");
    assert_eq!(
        got[..plain.len()],
        plain[..],
        "the plain reply's tokens first"
    );
    body["ignore_eos"] = json!("yes");
    assert_eq!(s.chat(&body).status, 400);
}
