//! The official Alibaba Cloud Python SDKs as referees: every emulated action called through them,
//! a wrong secret refused with the vendor's code, and their signer agreeing with `src/sign.rs`.
//! Needs `.venv` from `scripts/python-env.sh` (run by `scripts/test.sh`); without it the test fails.

use std::path::Path;
use std::process::Command;

use preloadd::emulator::{self, EmulatorOptions};
use preloadd::sign::{self, HttpParts};
use serde_json::Value;

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_call_every_emulated_action_and_agree_on_signatures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/python-env.sh (scripts/test.sh does)", python.display());
    let (app, emu) = emulator::router(EmulatorOptions::with_keys(vec![("demo-ak".into(), "demo-sk".into())])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let script = root.join("tests/sdk/aliyun_sdk.py");
    let out =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(addr.to_string()).output().unwrap())
            .await
            .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON from the SDK script ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success() && doc["ok"] == true, "SDK calls failed: {doc:#}");
    for (product, actions) in [
        (
            "cdn",
            &[
                "PushObjectCache",
                "RefreshObjectCaches",
                "DescribeRefreshTasks",
                "DescribeRefreshTaskById",
                "DescribeRefreshQuota",
            ][..],
        ),
        ("esa", &["PreloadCaches", "PurgeCaches", "DescribePreloadTasks", "DescribePurgeTasks", "GetPurgeQuota"][..]),
    ] {
        for a in actions {
            assert!(doc[product].get(*a).is_some(), "{product} {a} was called through the SDK: {doc:#}");
            assert!(doc[format!("{product}_rpc")].get(*a).is_some(), "{product} {a} over RPC HMAC-SHA1");
        }
    }
    assert_eq!(doc["wrong_secret"]["code"], "SignatureDoesNotMatch");
    assert!(emu.ledger().iter().any(|r| r.action == "PushObjectCache"), "the SDK's submissions reached the ledger");

    // The SDK's signer and ours on identical inputs.
    let s = &doc["signer"];
    let mut parts = HttpParts::new(s["method"].as_str().unwrap(), s["path"].as_str().unwrap());
    parts.query = pairs(&s["query"]);
    parts.headers = pairs(&s["headers"]);
    assert_eq!(sign::acs3_sign("demo-ak", "demo-sk", &parts).unwrap(), s["acs3"].as_str().unwrap());
    let mut all = parts.clone();
    all.headers = pairs(&s["all_headers"]);
    let verified = sign::acs3_verify(
        &HttpParts {
            headers: [
                all.headers.clone(),
                vec![("authorization".into(), s["acs3_all_headers"].as_str().unwrap().into())],
            ]
            .concat(),
            ..all
        },
        |ak| (ak == "demo-ak").then(|| "demo-sk".to_string()),
    );
    assert!(verified.is_ok(), "our verifier accepts the SDK's wire signature: {verified:?}");
    assert_eq!(sign::rpc_signature("demo-sk", "POST", &pairs(&s["rpc_params"])), s["rpc"].as_str().unwrap());
}
