use super::*;

use std::io::{BufReader, Write};
use std::net::TcpListener;

use crate::testutil::XorShift;

/// A one-thread HTTP server on 127.0.0.1 that answers each connection with
/// the next canned response (status line and body), or with nothing at all
/// for `None` (the connection stays open until the client gives up). `ID`
/// in a body becomes the request's JSON-RPC id.
fn canned_server(answers: Vec<Option<(u16, String)>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for answer in answers {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let (_, body) = crate::testutil::read_http_request(&mut reader);
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("id").cloned());
            let mut stream = reader.into_inner();
            match answer {
                Some((status, body)) => {
                    let body = body.replace("ID", &id.unwrap_or(Value::Null).to_string());
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body.as_bytes());
                }
                None => std::thread::sleep(Duration::from_millis(1500)),
            }
        }
    });
    url
}

#[test]
fn every_odd_answer_is_a_typed_error() {
    let ok = |result: &str| {
        Some((
            200,
            format!(r#"{{"jsonrpc":"2.0","id":ID,"result":{result}}}"#),
        ))
    };
    let answers = vec![
        Some((200, "not json".to_string())),
        Some((500, "<html>internal error</html>".to_string())),
        Some((
            429,
            r#"{"jsonrpc":"2.0","id":ID,"error":{"code":-32005,"message":"rate limited"}}"#
                .to_string(),
        )),
        Some((
            200,
            r#"{"jsonrpc":"2.0","id":ID,"error":{"code":"x"}}"#.to_string(),
        )),
        Some((
            200,
            r#"{"jsonrpc":"2.0","id":999,"result":"0x1"}"#.to_string(),
        )),
        Some((200, r#"{"jsonrpc":"2.0","id":ID}"#.to_string())),
        ok(r#""0xzz""#),
        ok(r#""0x10000000000000000""#),
        ok("[]"),
        ok(r#"{"number":"0x1"}"#),
        None,
    ];
    let client = L1Client::new(&canned_server(answers), "http://127.0.0.1:1");
    let results: Vec<_> = (0..10).map(|_| client.chain_id()).collect();
    let kinds: Vec<String> = results
        .iter()
        .map(|r| match r {
            Err(L1Error::Malformed { .. }) => "malformed".into(),
            Err(L1Error::Status { status, .. }) => format!("status {status}"),
            Err(L1Error::Rpc { code, .. }) => format!("rpc {code}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "malformed",
            "status 500",
            "rpc -32005",
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "malformed"
        ]
    );
    // A server that never answers: a timeout, naming the endpoint.
    let err = client
        .call::<Value>("eth_chainId", json!([]), 300)
        .expect_err("no answer");
    assert!(
        matches!(&err, L1Error::Transport { timeout: true, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

#[test]
fn header_from_anvil_answer() {
    let text = r#"{"hash":"0x63e1d0fb95a465ac20d1da7cbb440a79b9c869f1db54aa33befaae3d82fb99cc","parentHash":"0x0000000000000000000000000000000000000000000000000000000000000000","number":"0x0","gasLimit":"0x1c9c380","timestamp":"0x6b0fbe5c","baseFeePerGas":"0x3b9aca00","blobGasUsed":"0x0","excessBlobGas":"0x0","transactions":[]}"#;
    let header: L1Header = serde_json::from_str(text).expect("header");
    assert_eq!(header.number, 0);
    assert_eq!(header.timestamp, 0x6b0f_be5c);
    assert_eq!(header.base_fee_per_gas, Some(1_000_000_000));
    assert_eq!(header.excess_blob_gas, Some(0));
    let block: L1Block = serde_json::from_str(text).expect("block");
    assert_eq!(block.header, header);
    assert!(block.transactions.is_empty());
    // Before London and Cancun: no base fee, no blob fields.
    let old = r#"{"hash":"0x63e1d0fb95a465ac20d1da7cbb440a79b9c869f1db54aa33befaae3d82fb99cc","parentHash":"0x63e1d0fb95a465ac20d1da7cbb440a79b9c869f1db54aa33befaae3d82fb99cc","number":"0x10","timestamp":"0x1"}"#;
    let header: L1Header = serde_json::from_str(old).expect("old header");
    assert_eq!(
        (header.base_fee_per_gas, header.excess_blob_gas),
        (None, None)
    );
}

fn anvil_config(hardfork: &str) -> Value {
    let mut precompiles = serde_json::Map::new();
    for name in ["ECREC", "SHA256", "KZG_POINT_EVALUATION"] {
        precompiles.insert(
            name.into(),
            json!("0x0000000000000000000000000000000000000001"),
        );
    }
    if hardfork == "osaka" {
        precompiles.insert(
            "P256VERIFY".into(),
            json!("0x0000000000000000000000000000000000000100"),
        );
    }
    let schedule = if hardfork == "shanghai" {
        Value::Null
    } else {
        json!({"max": 9, "target": 6})
    };
    json!({"current": {"activationTime": 0, "blobSchedule": schedule, "chainId": "0x7a69",
        "forkId": "0x00000000", "precompiles": precompiles}, "next": null, "last": null})
}

#[test]
fn eth_config_tells_the_sidecar_form() {
    let forks = parse_eth_config(&anvil_config("prague")).expect("prague");
    assert_eq!(
        forks,
        L1Forks {
            current: SidecarForm::Eip4844,
            next: None
        }
    );
    let forks = parse_eth_config(&anvil_config("osaka")).expect("osaka");
    assert_eq!(forks.current, SidecarForm::Eip7594);
    assert!(
        parse_eth_config(&anvil_config("shanghai"))
            .unwrap_err()
            .contains("before Cancun")
    );
    // A scheduled Osaka: the form switches at its activation time.
    let mut config = anvil_config("prague");
    let mut next = anvil_config("osaka")["current"].clone();
    next["activationTime"] = json!("0x6000");
    config["next"] = next;
    let forks = parse_eth_config(&config).expect("prague then osaka");
    assert_eq!(forks.next, Some((SidecarForm::Eip7594, 0x6000)));
    assert_eq!(forks.form_at(0x5fff), SidecarForm::Eip4844);
    assert_eq!(forks.form_at(0x6000), SidecarForm::Eip7594);
    for bad in [
        json!(null),
        json!([]),
        json!({"current": 1}),
        json!({"current": {"blobSchedule": {}}}),
    ] {
        assert!(parse_eth_config(&bad).is_err(), "{bad}");
    }
    assert_eq!("auto".parse(), Ok(L1ForkSetting::Auto));
    assert_eq!("osaka".parse(), Ok(L1ForkSetting::Osaka));
    assert!("cancun".parse::<L1ForkSetting>().is_err());
}

#[test]
fn beacon_blobs_parse() {
    let blob_hex = format!("0x{}", "01".repeat(BLOB_BYTES));
    let text = format!(
        r#"{{"execution_optimistic":false,"finalized":false,"data":["{blob_hex}","{blob_hex}"]}}"#
    );
    let blobs = parse_beacon_blobs(&text).expect("two blobs");
    assert_eq!(blobs.len(), 2);
    assert!(blobs[1].iter().all(|&b| b == 1));
    assert!(
        parse_beacon_blobs(r#"{"data":[]}"#)
            .expect("none")
            .is_empty()
    );
    let short = format!(r#"{{"data":["{}"]}}"#, &blob_hex[..blob_hex.len() - 2]);
    assert!(parse_beacon_blobs(&short).unwrap_err().contains("blob 0"));
    let bad_digit = format!(r#"{{"data":["{}zz"]}}"#, &blob_hex[..blob_hex.len() - 2]);
    assert!(parse_beacon_blobs(&bad_digit).is_err());
    assert!(parse_beacon_blobs(r#"{"data":"0x"}"#).is_err());
    assert!(parse_beacon_blobs("").is_err());
}

#[test]
fn arbitrary_answers_never_panic() {
    let mut rng = XorShift::new(0x11);
    let seeds = [
        r#"{"data":["0x00"]}"#.to_string(),
        anvil_config("osaka").to_string(),
        r#"{"hash":"0x00","number":"0x1","timestamp":"0x2","transactions":[{}]}"#.to_string(),
    ];
    for i in 0..10_000 {
        let mut bytes = seeds[i % seeds.len()].clone().into_bytes();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next_u64() as u8;
        }
        let cut = rng.below(bytes.len() + 1);
        let text = String::from_utf8_lossy(&bytes[..cut]);
        let _ = parse_beacon_blobs(&text);
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            let _ = parse_eth_config(&v);
            let _ = L1Block::deserialize(&v);
        }
        let _ = quote(&text);
        let _ = shown_url(&text);
    }
}

#[test]
fn urls_shown_without_secrets() {
    assert_eq!(
        shown_url("https://mainnet.infura.io/v3/SECRET"),
        "https://mainnet.infura.io/…"
    );
    assert_eq!(
        shown_url("https://user:pw@node.example:8545"),
        "https://node.example:8545"
    );
    assert_eq!(shown_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
    assert_eq!(shown_url("http://127.0.0.1:8545/"), "http://127.0.0.1:8545");
    assert_eq!(shown_url("http://h?key=SECRET"), "http://h/…");
    assert_eq!(quote(&"é".repeat(200)).chars().count(), 101);
}

#[test]
fn send_refusals() {
    let rpc = |m: &str| L1Error::Rpc {
        call: "eth_sendRawTransaction".into(),
        code: -32000,
        message: m.into(),
    };
    assert_eq!(
        rpc("already known").send_refusal(),
        Some(SendRefusal::AlreadyKnown)
    );
    assert_eq!(
        rpc("transaction already imported").send_refusal(),
        Some(SendRefusal::AlreadyKnown)
    );
    assert_eq!(
        rpc("replacement transaction underpriced").send_refusal(),
        Some(SendRefusal::ReplacementUnderpriced)
    );
    assert_eq!(
        rpc("nonce too low: next nonce 3, tx nonce 2").send_refusal(),
        Some(SendRefusal::NonceTooLow)
    );
    assert_eq!(
        rpc("insufficient funds").send_refusal(),
        Some(SendRefusal::Other)
    );
    let malformed = L1Error::Malformed {
        call: "x".into(),
        detail: "y".into(),
    };
    assert_eq!(malformed.send_refusal(), None);
}
