//! The SMTP side of the load tests: Postfix's smtp-sink as the receiver every email scenario
//! counts at, and the scenario that times Herald's SMTP client alone against smtp-source.

use super::*;

/// Postfix's smtp-sink on a free loopback port; killed on drop. The third field counts the
/// messages it accepted (from its `-c` counter).
pub(crate) struct Sink(std::process::Child, pub(crate) u16, pub(crate) std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_sink() -> anyhow::Result<Sink> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let root =
        std::process::Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    let mut cmd =
        std::process::Command::new(if std::path::Path::new("/usr/sbin/smtp-sink").exists() { "/usr/sbin/smtp-sink" } else { "smtp-sink" });
    if root {
        cmd.args(["-u", "root"]);
    }
    let mut child = cmd
        .arg("-c")
        .arg(format!("127.0.0.1:{port}"))
        .arg("256")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start smtp-sink (install postfix)")?;
    // `-c` prints "sess=N quit=N mesg=N\r" as mail arrives.
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    if let Some(mut out) = child.stdout.take() {
        let count = count.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            let mut line = Vec::new();
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    return;
                }
                for &b in &buf[..n] {
                    if b == b'\r' || b == b'\n' {
                        let text = String::from_utf8_lossy(&line);
                        if let Some(m) = text.split_whitespace().find_map(|w| w.strip_prefix("mesg=")).and_then(|v| v.parse().ok()) {
                            count.store(m, std::sync::atomic::Ordering::Relaxed);
                        }
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
        });
    }
    let sink = Sink(child, port, count);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(sink);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("smtp-sink did not start")
}

pub(crate) async fn smtp(count: u64, connections: usize, size: usize, reference: bool, json: bool) -> anyhow::Result<()> {
    use herald::channels::email::{SmtpPool, SmtpRelay};
    if count == 0 || count > 10_000_000 || connections == 0 || connections > 256 {
        bail!("--count must be 1..=10000000 and --connections 1..=256");
    }
    let sink = start_sink()?;
    let mut relay = SmtpRelay::new("127.0.0.1", sink.1);
    relay.pool_size = connections;
    relay.messages_per_connection = 0;
    let pool = std::sync::Arc::new(SmtpPool::new(relay));
    let text: String = "Herald load test payload. ".chars().cycle().take(size).collect();
    let message = std::sync::Arc::new(herald::render::mime::Sender::new::<&str>("Load Test <load@herald.test>", &[])?.message(
        "sink@herald.test",
        "Load test",
        Some(&text),
        None,
        None,
        None,
    )?);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..connections as u64 {
        let (pool, message) = (pool.clone(), message.clone());
        let n = count / connections as u64 + u64::from(w < count % connections as u64);
        tasks.push(tokio::spawn(async move {
            // Batches of 64, as a shard hands its ready messages to the channel.
            let mut failed = 0u64;
            let mut left = n;
            while left > 0 {
                let k = left.min(64) as usize;
                let items: Vec<(&str, &[u8])> = (0..k).map(|_| ("sink@herald.test", message.as_slice())).collect();
                failed += pool.send_batch("load@herald.test", &items).await.iter().filter(|d| !d.is_delivered()).count() as u64;
                left -= k as u64;
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = count as f64 / secs;
    pool.close().await;
    let reference_rate = if reference { Some(scenarios::smtp_source_rate(&sink, count, size).await?) } else { None };
    if json {
        println!(
            "{}",
            json!({"scenario": "smtp", "messages": count, "failed": failed, "seconds": secs, "messages_per_second": rate, "connections": connections, "message_bytes": message.len(), "smtp_source_per_second": reference_rate, "ratio": reference_rate.map(|r| rate / r)})
        );
    } else {
        println!(
            "smtp: {count} messages of {} bytes over {connections} connections in {secs:.2} s = {rate:.0} messages/s ({failed} failed)",
            message.len()
        );
        if let Some(r) = reference_rate {
            println!("reference: smtp-source -d -s 16 = {r:.0} messages/s; Herald / smtp-source = {:.2}", rate / r);
        }
    }
    Ok(())
}
