//! The daemon's live gallery page, driven in headless Chromium: every champion's image loads,
//! sorting works, the images are the champions the run ends with, and a screenshot is kept
//! (`target/release/test-artifacts/gallery.png`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pareidolia_core::image_io::read_png;

use crate::daemon_process::*;
use crate::util::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium with the flags the lab's machines need (no sandbox as root, no GPU,
/// nothing fetched from the network) and a fresh, empty profile; returns stdout.
pub(crate) fn chromium(dir: &Path, args: &[&str]) -> String {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: install Debian's `chromium` package (.ci/run does)"
    );
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let profile = dir.join(format!(
        "chromium-profile-{}",
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&profile).unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Virtual time runs the page's scripts and waits for its loads, then stops.
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium {args:?}: {status}");
    reader.join().unwrap()
}

/// The value of `name="..."` in an HTML tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    tag[start..].split('"').next()
}

/// The page's `<body ...>` tag, whose data-images-* attributes count image loads.
fn body_tag(dom: &str) -> &str {
    let body = &dom[dom.find("<body").expect("a body")..];
    &body[..body.find('>').unwrap()]
}

/// Each card's class and confidence, in page order.
fn cards(dom: &str) -> Vec<(usize, f64)> {
    dom.split("<div class=\"card\"")
        .skip(1)
        .map(|tag| {
            let tag = &tag[..tag.find('>').unwrap()];
            (
                attribute(tag, "data-class").unwrap().parse().unwrap(),
                attribute(tag, "data-confidence").unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn curl_to(url: &str, file: &Path, extra: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o"])
        .arg(file)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn the_live_gallery_shows_every_champion_in_chromium() {
    let dir = temp_dir("gallery");
    let cfg = config_edit(&dir, |t| {
        t.set("generations", 40).add("http.listen", "127.0.0.1:0");
    });
    let out = dir.join("run");
    let (d, url) = Daemon::serving_after_run(
        Pareidolia::daemon().config(&cfg).out(&out),
        &dir.join("daemon.log"),
        Duration::from_secs(120),
    );
    let summary = json(&out.join("summary.json"));
    let classes = summary["classes"].as_array().unwrap();

    // Every image loads, cards sort by confidence, each shows its class's final confidence.
    let dom = chromium(
        &dir,
        &[
            "--window-size=1280,2000",
            "--dump-dom",
            &format!("{url}/gallery?sort=confidence-desc"),
        ],
    );
    let body = body_tag(&dom);
    assert_eq!(attribute(body, "data-images-total"), Some("10"), "{body}");
    assert_eq!(attribute(body, "data-images-loaded"), Some("10"), "{body}");
    assert_eq!(attribute(body, "data-images-failed"), Some("0"), "{body}");
    let shown = cards(&dom);
    let mut seen: Vec<usize> = shown.iter().map(|c| c.0).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    assert!(
        shown.windows(2).all(|w| w[0].1 >= w[1].1),
        "not sorted by confidence: {shown:?}"
    );
    for (class, confidence) in &shown {
        let expected = classes[*class]["confidence"].as_f64().unwrap();
        assert!(
            (confidence - expected).abs() < 1e-6,
            "class {class}: {confidence} vs {expected}"
        );
    }
    let dom = chromium(
        &dir,
        &["--dump-dom", &format!("{url}/gallery?sort=confidence-asc")],
    );
    let ascending = cards(&dom);
    assert!(
        ascending.windows(2).all(|w| w[0].1 <= w[1].1),
        "{ascending:?}"
    );

    // The served images are the champions the run folder's gallery holds, pixel for pixel,
    // and an unchanged champion revalidates without a new render.
    for (class, entry) in classes.iter().enumerate() {
        let file = dir.join(format!("live-{class}.png"));
        assert_eq!(
            curl_to(&format!("{url}/champions/{class}.png"), &file, &[]),
            200
        );
        let live = read_png(&file).unwrap();
        let saved = read_png(&out.join(entry["image"].as_str().unwrap())).unwrap();
        assert_eq!(live, saved, "class {class}");
    }
    let (_, status) = get(&format!("{url}/status"));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let etag = format!(
        "If-None-Match: \"{}\"",
        status["classes"][4]["champion"].as_str().unwrap()
    );
    let file = dir.join("revalidated.png");
    assert_eq!(
        curl_to(&format!("{url}/champions/4.png"), &file, &["-H", &etag]),
        304
    );
    assert_eq!(get(&format!("{url}/champions/10.png")).0, 404);
    assert_eq!(get(&format!("{url}/champions/x.png")).0, 404);

    // The screenshot, kept as a test artifact.
    let shots = artifacts().join("test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let shot: PathBuf = shots.join("gallery.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &dir,
        &[
            "--window-size=1280,800",
            &format!("--screenshot={}", shot.display()),
            &format!("{url}/gallery"),
        ],
    );
    let image = read_png(&shot).unwrap();
    assert_eq!((image.width, image.height), (1280, 800));
    // Not a blank page: the dark background and light text and images differ.
    let distinct: std::collections::BTreeSet<u8> = image.pixels.iter().copied().collect();
    assert!(distinct.len() > 50, "the screenshot looks blank");

    d.signal("TERM");
    let (status, log) = d.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{log}");
}

/// A 1000-class run (the AlexNet-size test model, so ImageNet's class count) pages its
/// gallery: 100 champions a page, the page in the URL, every image of a page loaded.
#[test]
fn a_thousand_class_gallery_is_paged() {
    let dir = temp_dir("gallery-1000");
    let manifest = root().join("models/alexnet-light/manifest.toml");
    let cfg = config_edit(&dir, |t| {
        t.set("generations", 0)
            .set("offspring_per_generation", 4)
            .set("batch_size", 4)
            .set("model.manifest", path_value(&manifest))
            .add("http.listen", "127.0.0.1:0");
    });
    let out = dir.join("run");
    let (d, url) = Daemon::serving_after_run(
        Pareidolia::daemon().config(&cfg).out(&out),
        &dir.join("daemon.log"),
        Duration::from_secs(120),
    );
    for (page, first) in [(1, 0), (10, 900)] {
        let dom = chromium(
            &dir,
            &[
                "--window-size=1280,20000",
                "--dump-dom",
                &format!("{url}/gallery?page={page}"),
            ],
        );
        let body = body_tag(&dom);
        assert_eq!(attribute(body, "data-images-total"), Some("100"), "{body}");
        assert_eq!(attribute(body, "data-images-loaded"), Some("100"), "{body}");
        let classes: Vec<usize> = cards(&dom).iter().map(|c| c.0).collect();
        assert_eq!(classes, (first..first + 100).collect::<Vec<_>>());
        assert!(dom.contains(&format!("page {page} of 10 (1000 classes)")));
    }
    d.signal("TERM");
    let (status, log) = d.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{log}");
}
