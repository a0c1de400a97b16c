//! The `herald` command line: configuration layering and checks, and the terminal client
//! against a real daemon.

mod common;

use common::{herald, Backend, Daemon, API_KEY};

/// Runs `herald` and requires it to succeed; returns its standard output.
fn ok(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> String {
    let (code, out, err) = herald(args, env, dir);
    assert_eq!(code, 0, "herald {args:?}: {err}");
    out
}

#[test]
fn configuration_layers_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("herald.toml"),
        "grpc_addr = \"127.0.0.1:7001\"\nmetrics_addr = \"127.0.0.1:7002\"\ndata_dir = \"/var/lib/herald\"\nshutdown_grace_secs = 5\n",
    )
    .unwrap();
    let env = [("HERALD_GRPC_ADDR", "127.0.0.1:8001"), ("HERALD_METRICS_ADDR", "127.0.0.1:8002")];
    let (code, out, err) = herald(&["config", "--config", "herald.toml", "--grpc-addr", "127.0.0.1:9001"], &env, dir.path());
    assert_eq!(code, 0, "{err}");
    let parsed: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(parsed["grpc_addr"].as_str(), Some("127.0.0.1:9001"), "flag beats environment");
    assert_eq!(parsed["metrics_addr"].as_str(), Some("127.0.0.1:8002"), "environment beats file");
    assert_eq!(parsed["data_dir"].as_str(), Some("/var/lib/herald"), "file beats default");
    assert_eq!(parsed["shutdown_grace_secs"].as_integer(), Some(5));
}

#[test]
fn secrets_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("HERALD_API_KEYS", "first-key-0123456789,second-key-0123456789"),
        ("HERALD_REDIS_URL", "redis://herald:s3cret-pass@127.0.0.1:6379/0"),
    ];
    let (code, out, err) = herald(&["config"], &env, dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("first-key") && !out.contains("second-key") && !out.contains("s3cret"), "{out}");
    let parsed: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(parsed["api_keys"].as_array().unwrap().len(), 2);
    assert_eq!(parsed["redis_url"].as_str(), Some("redis://herald:********@127.0.0.1:6379/0"));
}

#[test]
fn bad_configuration_is_named_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "grpc_addr = \"127.0.0.1:7001\"\nredis_ulr = \"redis://x\"\n").unwrap();
    let (code, _, err) = herald(&["serve", "--config", "bad.toml", "--validate"], &[], dir.path());
    assert_eq!(code, 64);
    assert!(err.contains("redis_ulr"), "{err}");

    let (code, _, err) = herald(&["serve", "--grpc-addr", "0.0.0.0:50051", "--validate"], &[], dir.path());
    assert_eq!(code, 64);
    assert!(err.contains("without an API key"), "{err}");
    // Without --validate it refuses before binding anything.
    let (code, _, err) = herald(&["serve", "--grpc-addr", "0.0.0.0:0"], &[], dir.path());
    assert_eq!(code, 64);
    assert!(err.contains("refusing to listen"), "{err}");

    let (code, _, err) = herald(&["serve", "--redis-url", "http://localhost", "--validate"], &[], dir.path());
    assert_eq!(code, 64);
    assert!(err.contains("redis_url"), "{err}");
    let (code, _, _) = herald(&["serve", "--grpc-addr", "not-an-address"], &[], dir.path());
    assert_eq!(code, 64);

    let (code, out, err) = herald(&["serve", "--grpc-addr", "0.0.0.0:50051", "--api-key", API_KEY, "--validate"], &[], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"));
}

#[test]
fn cli_manages_apps_and_endpoints() {
    let d = Daemon::start(Backend::Embedded);
    let dir = tempfile::tempdir().unwrap();
    let addr = d.grpc.to_string();
    let env = [("HERALD_ADDR", addr.as_str()), ("HERALD_API_KEY", API_KEY)];
    let run = |args: &[&str]| ok(args, &env, dir.path());
    let app = run(&["apps", "create", "--name", "Demo", "--tag", "team=growth"]).trim().to_string();
    assert_eq!(app.len(), 32);
    assert!(run(&["apps", "list"]).contains(&app));

    let put = run(&[
        "endpoints",
        "put",
        "--app",
        &app,
        "e1",
        "--channel-type",
        "email",
        "--address",
        "ana@example.com",
        "--user-id",
        "u1",
        "--attribute",
        "Plan=Pro",
        "--country",
        "US",
    ]);
    let json: serde_json::Value = serde_json::from_str(&put).unwrap();
    assert_eq!(json["Address"], "ana@example.com");
    assert_eq!(json["Attributes"]["Plan"][0], "Pro");
    let got: serde_json::Value = serde_json::from_str(&run(&["endpoints", "get", "--app", &app, "e1"])).unwrap();
    assert_eq!(got["User"]["UserId"], "u1");
    assert_eq!(got["Location"]["Country"], "US");

    std::fs::write(
        dir.path().join("people.csv"),
        "ChannelType,Address,Id,User.UserId,User.UserAttributes.FirstName,Attributes.Plan,Location.Country\n\
         EMAIL,bob@example.com,e2,u2,Bob,Free,US\n\
         SMS,12345,e3,u3,Cy,Free,US\n\
         FAX,x,e4,,,,\n\
         SMS,+14155550100,e5,u5,Di,Pro,DE\n\
         SMS,+14155550101,e6,u6,Ed,Pro,ZZ\n",
    )
    .unwrap();
    let out = run(&["endpoints", "import", "--app", &app, "people.csv"]);
    assert!(out.contains("5 rows read, 2 written, 3 rejected"), "{out}");
    assert!(out.contains("line 3: address:"), "{out}");
    assert!(out.contains("line 4: ChannelType 'FAX'"), "{out}");
    assert!(out.contains("line 6: location.country:"), "{out}");
    let e5: serde_json::Value = serde_json::from_str(&run(&["endpoints", "get", "--app", &app, "e5"])).unwrap();
    assert_eq!(e5["User"]["UserAttributes"]["FirstName"][0], "Di");

    std::fs::write(
        dir.path().join("people.jsonl"),
        "{\"ChannelType\":\"GCM\",\"Address\":\"tok-1\",\"Id\":\"p1\",\"User\":{\"UserId\":\"u9\"}}\n{\"ChannelType\":\"GCM\",\n",
    )
    .unwrap();
    let out = run(&["endpoints", "import", "--app", &app, "people.jsonl"]);
    assert!(out.contains("2 rows read, 1 written, 1 rejected") && out.contains("line 2: malformed JSON"), "{out}");
    assert!(run(&["endpoints", "user", "--app", &app, "u9"]).contains("tok-1"));

    run(&["endpoints", "delete", "--app", &app, "e1"]);
    let (code, _, err) = herald(&["endpoints", "get", "--app", &app, "e1"], &env, dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("NotFound"), "{err}");
    let (code, _, err) = herald(&["endpoints", "put", "--app", &app, "bad", "--channel-type", "SMS", "--address", "12"], &env, dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("endpoint.address"), "{err}");
    run(&["apps", "delete", &app]);
    assert!(!run(&["apps", "list"]).contains(&app));
}

#[test]
fn the_shipped_example_configuration_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/herald.toml");
    let (code, out, err) = herald(&["serve", "--config", example, "--validate"], &[], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"));
}

#[test]
fn json_logs_and_sigint_shutdown() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let (grpc, metrics) = (common::free_port(), common::free_port());
    let mut child = Command::new(common::herald_bin())
        .args([
            "serve",
            "--log-format",
            "json",
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env_remove("HERALD_API_KEYS")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = loop {
        let line = lines.next().expect("herald logged nothing").unwrap();
        let record: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if record["message"] == "Herald is serving." {
            break record;
        }
    };
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["grpc_addr"], format!("127.0.0.1:{grpc}"));
    assert!(Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap().success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("SIGINT")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("Store closed.")), "{rest:?}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn cli_manages_templates() {
    let d = Daemon::start(Backend::Embedded);
    let dir = tempfile::tempdir().unwrap();
    let addr = d.grpc.to_string();
    let env = [("HERALD_ADDR", addr.as_str()), ("HERALD_API_KEY", API_KEY)];
    let run = |args: &[&str]| ok(args, &env, dir.path());
    let app = run(&["apps", "create", "--name", "T"]).trim().to_string();
    run(&[
        "endpoints",
        "put",
        "--app",
        &app,
        "ana",
        "--channel-type",
        "EMAIL",
        "--address",
        "ana@example.com",
        "--user-attribute",
        "FirstName=Ana",
    ]);
    // A template in Pinpoint's CreateEmailTemplate request shape.
    std::fs::write(
        dir.path().join("welcome.json"),
        r#"{"Subject": "Hey {{User.UserAttributes.FirstName}}, your {{Month}} update is here", "HtmlPart": "<p>{{capitalize User.UserAttributes.Plan}}</p>", "TextPart": "plain", "DefaultSubstitutions": "{\"User.UserAttributes.Plan\": \"free plan\"}", "TemplateDescription": "monthly"}"#,
    )
    .unwrap();
    assert!(run(&["templates", "create", "--app", &app, "welcome", "--type", "email", "--file", "welcome.json"]).contains("version 1"));
    assert!(run(&["templates", "update", "--app", &app, "welcome", "--type", "email", "--file", "welcome.json", "--subject", "v2 {{Id}}"])
        .contains("version 2 (active version 1)"));
    let preview = run(&["templates", "preview", "--app", &app, "welcome", "--endpoint", "ana", "--sub", "Month=March"]);
    assert!(preview.contains("Hey Ana, your March update is here") && preview.contains("<p>Free Plan</p>"), "{preview}");
    run(&["templates", "activate", "--app", &app, "welcome", "latest"]);
    let preview = run(&["templates", "preview", "--app", &app, "welcome", "--endpoint", "ana", "--mime"]);
    assert!(preview.contains("Subject: v2 ana") && preview.contains("multipart/alternative"), "{preview}");
    let versions = run(&["templates", "versions", "--app", &app, "welcome"]);
    assert!(versions.lines().any(|l| l.trim_start().starts_with("2") && l.contains('*')), "{versions}");
    run(&["templates", "create", "--app", &app, "code", "--type", "sms", "--body", "Code {{Code}}"]);
    assert!(run(&["templates", "list", "--app", &app]).contains("code"));
    assert!(run(&["templates", "preview", "--app", &app, "code", "--sub", "Code=123456"]).contains("GSM7, 1 part(s)"));
    let (code, _, err) = herald(&["templates", "create", "--app", &app, "bad", "--type", "sms", "--body", "{{#if x}}"], &env, dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("template.sms.body"), "{err}");
    assert!(run(&["templates", "delete", "--app", &app, "code"]).contains("deleted 1"));
}

#[test]
fn cli_sends_and_shows_outcomes() {
    let sink = common::SmtpSink::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let d = Daemon::spawn(None, tmp.path().join("data"), None, Some(API_KEY.to_string()), &["--smtp-url", &url]);
    let dir = tempfile::tempdir().unwrap();
    let addr = d.grpc.to_string();
    let env = [("HERALD_ADDR", addr.as_str()), ("HERALD_API_KEY", API_KEY)];
    let run = |args: &[&str]| ok(args, &env, dir.path());
    let app = run(&["apps", "create", "--name", "S"]).trim().to_string();
    let out = run(&[
        "send",
        "--app",
        &app,
        "--to",
        "ana@example.com",
        "--to",
        "nope",
        "--from",
        "Shop <news@shop.example>",
        "--subject",
        "Hi {{Name}}",
        "--text",
        "Hello",
        "--sub",
        "Name=Ana",
    ]);
    let ana = out.lines().find(|l| l.starts_with("ana@example.com")).unwrap_or_else(|| panic!("{out}"));
    assert!(ana.contains("SUCCESSFUL") && ana.contains("250"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("nope") && l.contains("PERMANENT_FAILURE")), "{out}");
    let message_id = ana.split_whitespace().nth(3).unwrap();
    let outcome: serde_json::Value = serde_json::from_str(&run(&["outcome", "--app", &app, message_id])).unwrap();
    assert_eq!(outcome["Status"], "SUCCESSFUL");
    assert_eq!(outcome["Address"], "ana@example.com");
    for _ in 0..50 {
        if !sink.messages().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    assert!(sink.messages().iter().any(|m| m.lines().any(|l| l.trim_end() == "Subject: Hi Ana")));
}

#[test]
fn cli_manages_segments() {
    let d = Daemon::start(Backend::Redis);
    let dir = tempfile::tempdir().unwrap();
    let addr = d.grpc.to_string();
    let env = [("HERALD_ADDR", addr.as_str()), ("HERALD_API_KEY", API_KEY)];
    let run = |args: &[&str]| ok(args, &env, dir.path());
    let app = run(&["apps", "create", "--name", "S"]).trim().to_string();
    // An endpoint file in Pinpoint's CSV import shape, one row bad.
    std::fs::write(
        dir.path().join("customers.csv"),
        "ChannelType,Address,Id,User.UserId,User.UserAttributes.FirstName,Attributes.Plan,Location.Country,OptOut\n\
         EMAIL,ana@example.com,e1,u1,Ana,Gold,US,NONE\n\
         EMAIL,bob@example.com,e2,u2,Bob,Silver,DE,NONE\n\
         PIGEON,coo,e3,,,,,\n\
         SMS,+14255550100,e4,u1,Ana,Gold,US,NONE\n",
    )
    .unwrap();
    let out = run(&["segments", "import", "--app", &app, "customers.csv"]);
    assert!(out.contains("COMPLETED") && out.contains("4 rows read, 3 imported, 1 refused") && out.contains("line 4: "), "{out}");
    let imported = out.split_whitespace().find(|w| w.len() == 32).map(str::to_string);
    assert!(run(&["segments", "list", "--app", &app]).contains("imported, 3 members  customers"));
    // A dynamic segment in Pinpoint's WriteSegmentRequest JSON.
    std::fs::write(
        dir.path().join("gold.json"),
        r#"{"Name": "Gold US", "Dimensions": {"Attributes": {"Plan": {"AttributeType": "INCLUSIVE", "Values": ["Gold"]}}, "Location": {"Country": {"Values": ["US"]}}}}"#,
    )
    .unwrap();
    let created = run(&["segments", "create", "--app", &app, "gold.json"]);
    let id = created.split_whitespace().next().unwrap().to_string();
    assert!(created.contains("version 1  dynamic  Gold US"), "{created}");
    assert!(run(&["segments", "size", "--app", &app, &id]).starts_with("2 members"));
    let jsonl = run(&["segments", "export", "--app", &app, &id, "--format", "jsonl"]);
    let ids: Vec<String> =
        jsonl.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["Id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, vec!["e1", "e4"]);
    let csv = run(&["segments", "export", "--app", &app, &id, "--format", "csv"]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert!(header.contains(&"Attributes.Plan") && header.contains(&"User.UserAttributes.FirstName"), "{header:?}");
    let plan = header.iter().position(|c| *c == "Attributes.Plan").unwrap();
    assert!(lines.clone().all(|l| l.split(',').nth(plan) == Some("Gold")), "{csv}");
    // The CSV export imports back as the same endpoints.
    std::fs::write(dir.path().join("again.csv"), &csv).unwrap();
    assert!(run(&["segments", "import", "--app", &app, "again.csv", "--name", "again"]).contains("2 rows read, 2 imported, 0 refused"));
    if let Some(job_owner) = imported {
        assert!(run(&["segments", "get", "--app", &app, &job_owner]).contains("imported"));
    }
    let (code, _, err) = herald(&["segments", "create", "--app", &app, "missing.json"], &env, dir.path());
    assert_ne!(code, 0, "{err}");
    assert!(run(&["segments", "delete", "--app", &app, &id]).contains("deleted"));
}

#[test]
fn cli_runs_campaigns() {
    let sink = common::SmtpSink::start(&[]);
    let redis = common::RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let d = Daemon::spawn(Some(redis), tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &["--smtp-url", &url]);
    let dir = tempfile::tempdir().unwrap();
    let addr = d.grpc.to_string();
    let env = [("HERALD_ADDR", addr.as_str()), ("HERALD_API_KEY", API_KEY)];
    let run = |args: &[&str]| ok(args, &env, dir.path());
    let app = run(&["apps", "create", "--name", "C"]).trim().to_string();
    let rows: String = (0..50).map(|i| format!("EMAIL,u{i}@example.com,e{i}\n")).collect();
    std::fs::write(dir.path().join("list.csv"), format!("ChannelType,Address,Id\n{rows}")).unwrap();
    let out = run(&["segments", "import", "--app", &app, "list.csv"]);
    let segment = out.split_whitespace().skip_while(|w| *w != "segment").nth(1).unwrap().to_string();
    std::fs::write(
        dir.path().join("campaign.json"),
        format!(
            // Pinpoint's WriteCampaignRequest, as `aws pinpoint create-campaign --cli-input-json`
            // takes it (the seeds' immediate campaign: no Frequency).
            r#"{{"WriteCampaignRequest": {{"Name": "Hello", "SegmentId": "{segment}",
                "MessageConfiguration": {{"EmailMessage": {{"FromAddress": "news@shop.example", "Title": "Hi {{{{Id}}}}", "Body": "x"}}}},
                "Schedule": {{"StartTime": "IMMEDIATE"}}}}}}"#
        ),
    )
    .unwrap();
    let created = run(&["campaigns", "create", "--app", &app, "campaign.json"]);
    let id = created.split_whitespace().next().unwrap().to_string();
    let watched = run(&["campaigns", "watch", "--app", &app, &id, "--timeout", "60"]);
    assert!(watched.contains("COMPLETED") && watched.contains("successful 50"), "{watched}");
    assert!(run(&["campaigns", "list", "--app", &app]).contains("Hello"));
    assert!(run(&["campaigns", "get", "--app", &app, &id]).contains("endpoints 50"));
    let (code, _, err) = herald(&["campaigns", "pause", "--app", &app, &id], &env, dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("IMMEDIATE"), "{err}");
    assert!(run(&["campaigns", "delete", "--app", &app, &id]).contains("deleted"));
}

#[test]
fn health_answers_for_container_checks() {
    let d = Daemon::start(Backend::Embedded);
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("http://{}", d.grpc);
    let out = ok(&["health", "--addr", &addr], &[], dir.path());
    assert_eq!(out.trim(), "SERVING");
    let (code, _, err) = herald(&["health", "--addr", &addr, "--service", "herald.v1.Nothing"], &[], dir.path());
    assert_ne!(code, 0, "{err}");
    drop(d);
    let (code, _, _) = herald(&["health", "--addr", &addr], &[], dir.path());
    assert_ne!(code, 0, "a stopped daemon is not healthy");
}
