//! A property of the memcached client, against a real memcached whose replies a proxy cuts at
//! arbitrary points: whatever the stored values hold (the protocol's own lines included),
//! wherever callers are cancelled, over many requests in a row on one connection, every
//! successful result is exactly its own key's value, a miss is a miss, and no request is ever
//! answered with another's bytes.
#![cfg(feature = "memcached")]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use multiloop::Pool;
use multiloop::memcached::{Connector, Dialect};
use proptest::prelude::*;
use support::wire::{Cut, Slicer, cancelled};

#[derive(Clone, Debug)]
enum Op {
    Get(usize),
    Multi(Vec<usize>),
    Set(usize, Vec<u8>),
}

const KEYS: usize = 6;

/// A value that names its key and holds protocol-shaped bytes.
fn value() -> impl Strategy<Value = Vec<u8>> {
    let shaped = prop::sample::select(vec![
        &b"END\r\n"[..],
        b"MN\r\n",
        b"VALUE k1 0 6\r\nSECRET\r\nEND\r\n",
        b"VA 6 kk1 O1\r\nSECRET\r\n",
        b"VERSION 1.6.18\r\n",
        b"\r\n",
        b"\x00\xff",
    ]);
    prop::collection::vec(shaped, 0..4).prop_map(|parts| parts.concat())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..KEYS).prop_map(Op::Get),
        prop::collection::vec(0..KEYS, 1..5).prop_map(Op::Multi),
        (0..KEYS, value()).prop_map(|(k, v)| Op::Set(k, v)),
    ]
}

/// Key `i` of case `case`, and its value `v` as stored: tagged with the key.
fn key(case: u64, i: usize) -> Vec<u8> {
    format!("p{case}:{i}").into_bytes()
}

fn tagged(key: &[u8], v: &[u8]) -> Vec<u8> {
    [key, b"=", v].concat()
}

/// What a key may hold: every value a set that may or may not have happened could have left.
type Model = HashMap<usize, Vec<Option<Vec<u8>>>>;

fn check(model: &Model, k: usize, got: Option<&[u8]>) -> Result<(), TestCaseError> {
    let possible = model.get(&k).cloned().unwrap_or_else(|| vec![None]);
    prop_assert!(
        possible.iter().any(|p| p.as_deref() == got),
        "key {k}: got {:?}, possible {:?}",
        got.map(String::from_utf8_lossy),
        possible
    );
    Ok(())
}

async fn run(
    addr: std::net::SocketAddr,
    dialect: Dialect,
    case: u64,
    ops: Vec<(Op, u32)>,
) -> Result<(), TestCaseError> {
    let pool = Pool::builder(addr)
        .connector(Connector::new().dialect(dialect))
        .max_size(1)
        .build()
        .unwrap();
    let mut model: Model = HashMap::new();
    for (op, polls) in ops {
        let mut conn = pool.get().await.unwrap();
        match op {
            Op::Get(k) => {
                if let Some(got) = cancelled(conn.get(key(case, k)), polls).await {
                    check(&model, k, got.unwrap().as_deref())?;
                }
            }
            Op::Multi(ks) => {
                let keys: Vec<Vec<u8>> = ks.iter().map(|&k| key(case, k)).collect();
                if let Some(got) = cancelled(conn.get_multi(&keys), polls).await {
                    let got = got.unwrap();
                    prop_assert!(got.keys().all(|k| keys.contains(k)));
                    for &k in &ks {
                        check(&model, k, got.get(&key(case, k)).map(Vec::as_slice))?;
                    }
                }
            }
            Op::Set(k, v) => {
                let stored = tagged(&key(case, k), &v);
                match cancelled(conn.set(key(case, k), &stored, 0), polls).await {
                    Some(done) => {
                        done.unwrap();
                        model.insert(k, vec![Some(stored)]);
                    }
                    // Cancelled: it may or may not have reached the server.
                    None => model
                        .entry(k)
                        .or_insert_with(|| vec![None])
                        .push(Some(stored)),
                }
            }
        }
    }
    drop(pool);
    Ok(())
}

fn cases(real_budget: u32) -> ProptestConfig {
    ProptestConfig {
        cases: real_budget,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn every_result_is_its_own_keys_value(
        meta in any::<bool>(),
        seed in any::<u64>(),
        max_piece in 1usize..48,
        ops in prop::collection::vec((op(), 1u32..12), 1..30),
    ) {
        let Some(server) = support::memcached() else {
            return Ok(());
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dialect = if meta { Dialect::Meta } else { Dialect::Text };
        runtime.block_on(async {
            let slicer = Slicer::start(server.addr, Cut {
                seed,
                max_piece,
                max_delay: Duration::from_micros(200),
                hold: Duration::ZERO,
                at_lines: false,
            }).await;
            run(slicer.addr, dialect, seed, ops).await
        })?;
    }
}
