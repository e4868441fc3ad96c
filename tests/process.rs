//! The real `beckon` binary as an operator runs it: durability across `kill -9`,
//! graceful drain on SIGTERM, behaviour at the open-file limit, and the CLI.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{expect_close, recv, send, ADMIN, SECRET};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_beckon");

struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `beckon serve` on a free port (optionally under a shell prefix such as a
/// lowered `ulimit`) and waits for its "listening" log line.
fn spawn(data_dir: &std::path::Path, extra: &[&str], shell_prefix: Option<&str>) -> Proc {
    let mut args = vec![
        "serve".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--jwt-secret".into(),
        SECRET.into(),
        "--admin-token".into(),
        ADMIN.into(),
        "--log-format".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cmd = match shell_prefix {
        Some(prefix) => {
            let mut c = Command::new("sh");
            let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
            c.arg("-c")
                .arg(format!("{prefix}; exec '{BIN}' {}", quoted.join(" ")));
            c
        }
        None => {
            let mut c = Command::new(BIN);
            c.args(&args);
            c
        }
    };
    launch(cmd, |line| {
        let v = serde_json::from_str::<Value>(line).ok()?;
        (v["fields"]["message"] == "beckon listening")
            .then(|| v["fields"]["addr"].as_str().unwrap_or_default().to_string())
    })
}

/// Runs `cmd` with its stderr read on a thread (to the end, so it never blocks on a full
/// pipe) until `listening` finds the bound address in a line of it.
fn launch(mut cmd: Command, listening: fn(&str) -> Option<String>) -> Proc {
    let mut child = cmd
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(addr) = listening(&line) {
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("beckon started");
    Proc { child, addr }
}

fn token(user: &str) -> String {
    beckon::auth::mint_hs256(
        SECRET,
        user,
        Default::default(),
        beckon::Clock::system().now_secs(),
        Some(600),
    )
}

async fn ws_hello(addr: &str, user: &str) -> common::Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
        .await
        .unwrap();
    send(&mut ws, json!({"type":"hello","token":token(user)})).await;
    assert_eq!(recv(&mut ws).await["type"], "welcome");
    ws
}

async fn get_user(addr: &str, user: &str) -> Value {
    reqwest::Client::new()
        .get(format!("http://{addr}/v1/users/{user}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `beckon` alone explains itself (contract §9) and exits 0, as `beckon --help` does.
#[test]
fn beckon_alone_prints_its_help() {
    for args in [&[][..], &["--help"][..]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {:?}", out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("serve") && stdout.contains("token"),
            "{stdout}"
        );
    }
}

/// Two gateways on one data directory would each keep state in memory the other cannot
/// see: the second is refused at start-up with the reason, and exits non-zero.
#[test]
fn a_second_gateway_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = spawn(dir.path(), &[], None);
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--jwt-secret", SECRET, "--admin-token", ADMIN])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is in use by another Beckon process"),
        "{stderr}"
    );
}

#[tokio::test]
async fn kill_9_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path(), &[], None);
    let mut ws = ws_hello(&p.addr, "u_crash").await;
    let mut acked = 0;
    for batch in 0..10 {
        let frames: Vec<Value> = (0..20)
            .map(|i| json!({"type":"track","id":format!("e{batch}-{i}"),"event":"work"}))
            .collect();
        send(&mut ws, Value::Array(frames)).await;
        let ok = recv(&mut ws).await;
        acked += ok["ids"].as_array().unwrap().len();
    }
    assert_eq!(acked, 200);
    let r = reqwest::Client::new()
        .patch(format!("http://{}/v1/users/u_crash", p.addr))
        .bearer_auth(ADMIN)
        .json(&json!({"attributes":{"plan":"pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(p); // SIGKILL, no drain.

    let p = spawn(dir.path(), &[], None);
    let user = get_user(&p.addr, "u_crash").await;
    assert_eq!(user["aggregates"]["work"]["count"], 200);
    assert_eq!(user["attributes"]["plan"], "pro");
    // Resent ids (a client that missed the ok) are recognised after the crash.
    let mut ws = ws_hello(&p.addr, "u_crash").await;
    // (The aggregates are snapshotted every 64 events: the count above includes events
    // replayed from their rows, and the ids come back from the event rows.)
    for id in ["e9-19", "e0-0"] {
        send(&mut ws, json!({"type":"track","id":id,"event":"work"})).await;
        assert_eq!(recv(&mut ws).await["ids"][0], id);
    }
    assert_eq!(
        get_user(&p.addr, "u_crash").await["aggregates"]["work"]["count"],
        200
    );
}

#[tokio::test]
async fn sigterm_drains_with_1001_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path(), &[], None);
    let mut ws = ws_hello(&p.addr, "u_term").await;
    send(&mut ws, json!({"type":"track","id":"t1","event":"last"})).await;
    assert_eq!(recv(&mut ws).await["type"], "ok");
    let started = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(p.child.id().to_string())
        .status()
        .unwrap();
    assert_eq!(expect_close(&mut ws).await, Some(1001));
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "exited within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let p2 = spawn(dir.path(), &[], None);
    assert_eq!(
        get_user(&p2.addr, "u_term").await["aggregates"]["last"]["count"],
        1
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn at_the_open_file_limit_it_refuses_cleanly_without_spinning_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("beckon.toml");
    // Allow more connections than descriptors so accept() itself runs out.
    std::fs::write(&cfg, "[limits]\nmax_connections = 10000\n").unwrap();
    let data = dir.path().join("data");
    let p = spawn(
        &data,
        &["--config", cfg.to_str().unwrap()],
        Some("ulimit -n 96"),
    );
    let pid = p.child.id();
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = tokio::net::TcpStream::connect(&p.addr).await {
            held.push(s);
        }
    }
    // Let the gateway hit EMFILE and settle, then measure its CPU use while at the limit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 30,
        "gateway spun at the fd limit: {used} ticks in 1 s"
    );
    // Connections beyond the limit were closed promptly rather than left hanging.
    use tokio::io::AsyncReadExt;
    let mut closed = 0;
    for s in held.iter_mut().rev().take(50) {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    assert!(closed > 0, "over-limit connections were closed");
    let metrics = {
        drop(held);
        tokio::time::sleep(Duration::from_millis(300)).await;
        reqwest::get(format!("http://{}/metrics", p.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let accept_errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("beckon_accept_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("accept error counter");
    assert!(accept_errors >= 1.0, "the test really reached the fd limit");
    // Recovered: new sessions work.
    let mut ws = ws_hello(&p.addr, "u_after").await;
    send(&mut ws, json!({"type":"track","id":"x","event":"e"})).await;
    assert_eq!(recv(&mut ws).await["type"], "ok");
}

#[test]
fn cli_help_token_and_config_errors() {
    let out = Command::new(BIN).output().unwrap();
    let help =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("token"), "{help}");
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());

    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("BECKON_JWT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT secret"));

    let out = Command::new(BIN)
        .args([
            "token", "--dev", "--user", "u_1", "--attr", "plan=pro", "--attr", "seats=5", "--ttl",
            "2h",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = String::from_utf8(out.stdout).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(
        t.trim(),
        &jsonwebtoken::DecodingKey::from_secret(beckon::config::DEV_JWT_SECRET.as_bytes()),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "u_1");
    assert_eq!(data.claims["attributes"], json!({"plan":"pro","seats":5}));
    let ttl = data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 7200);

    let out = Command::new(BIN)
        .args(["token", "--user", "u"])
        .env_remove("BECKON_JWT_SECRET")
        .env_remove("BECKON_DEV")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--dev` prints its banner once listening, with the port the OS chose for
/// `--listen 127.0.0.1:0` (it used to print port 0), and that address answers.
#[tokio::test]
async fn the_dev_banner_names_the_bound_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path());
    let proc = launch(cmd, |line| {
        let url = line
            .trim()
            .strip_prefix("listening:")?
            .split_whitespace()
            .next()?;
        Some(url.trim_start_matches("http://").to_string())
    });
    assert!(!proc.addr.ends_with(":0"), "{}", proc.addr);
    let r = reqwest::get(format!("http://{}/healthz", proc.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
