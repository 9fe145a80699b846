use logship::agent::Agent;
use logship::config::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("a.log"), "one\ntwo\nthree\n").unwrap();
    let glob = format!("{}/*.log", logs.display());
    let mut b = globset::GlobSetBuilder::new();
    b.add(globset::Glob::new(&glob).unwrap());
    let settings = Settings {
        data_dir: dir.path().join("data"),
        node_name: "n".into(),
        shutdown_timeout: Duration::from_secs(5),
        log: LogSettings {
            level: "info".into(),
            format: LogFormat::Text,
        },
        tail: TailSettings {
            include: vec![glob],
            exclude: vec![],
            include_set: b.build().unwrap(),
            exclude_set: globset::GlobSet::empty(),
            read_from: ReadFrom::Head,
            format: logship::parse::FormatChoice::Auto,
            max_line_bytes: 1024,
            oversize: logship::parse::Oversize::Split,
            read_budget: 65536,
            poll_interval: Duration::from_millis(50),
            rescan_interval: Duration::from_secs(1),
            rotate_wait: Duration::from_millis(200),
        },
        positions: PositionsSettings {
            flush_interval: Duration::from_millis(100),
            gc_after: Duration::from_secs(3600),
        },
        buffer: BufferSettings { max_bytes: 1 << 20 },
        output: OutputSettings::File {
            path: dir.path().join("out.ndjson"),
            fsync: false,
        },
    };
    let agent = Agent::start(settings).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s2 = stop.clone();
    let h = tokio::spawn(agent.run_until(s2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(logs.join("b.log"), "new file\n").unwrap();
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("a.log"))
        .unwrap();
    f.write_all(b"four\nfi").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.write_all(b"ve\n").unwrap();
    std::fs::rename(logs.join("a.log"), logs.join("a.log.1")).unwrap();
    std::fs::write(logs.join("a.log"), "after rotation\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    h.await.unwrap();
    let out = std::fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    println!("{out}");
    println!(
        "{}",
        std::fs::read_to_string(dir.path().join("data/positions.json")).unwrap()
    );
    assert_eq!(out.lines().count(), 7);
}
