use super::*;

fn keys(list: &[&str]) -> Keys {
    let mut k = Keys::default();
    for key in list {
        k.push(key.as_bytes());
    }
    k
}

fn text_get(list: &[&str]) -> Expect {
    Expect::TextGet {
        keys: keys(list),
        next: 0,
        cas: false,
    }
}

/// A reply's values (index, data).
type Values = Vec<(usize, Vec<u8>)>;

/// Decodes a whole reply, unit by unit: the values (index, data) and the final status.
fn all(mut buf: &[u8], expect: &mut Expect) -> Result<(Values, Status), Mismatch> {
    let mut values = Vec::new();
    loop {
        match decode(buf, expect, 1 << 20)? {
            Decoded::Need(n) => panic!("needs {n} of {}", buf.len()),
            Decoded::Step(step) => {
                if let Some(v) = step.value {
                    values.push((v.index, buf[v.data].to_vec()));
                }
                buf = &buf[step.used..];
                if let Some(status) = step.status {
                    return Ok((values, status));
                }
            }
        }
    }
}

#[test]
fn a_value_shaped_like_the_protocol_is_data() {
    let value = b"VERSION 1.6.18\r\nVALUE mine 0 6\r\nSECRET\r\nEND\r\n";
    let mut reply = format!("VALUE split 0 {}\r\n", value.len()).into_bytes();
    reply.extend_from_slice(value);
    reply.extend_from_slice(b"\r\nEND\r\n");
    let (values, status) = all(&reply, &mut text_get(&["split"])).unwrap();
    assert_eq!(values, vec![(0, value.to_vec())]);
    assert_eq!(status, Status::Done);
}

#[test]
fn a_value_for_another_key_is_a_mismatch() {
    let err = all(
        b"VALUE other 0 6\r\nSECRET\r\nEND\r\n",
        &mut text_get(&["wanted"]),
    )
    .unwrap_err();
    assert!(err.what.contains("not asked for"), "{err:?}");
}

#[test]
fn values_out_of_request_order_are_a_mismatch() {
    let reply = b"VALUE b 0 1\r\n2\r\nVALUE a 0 1\r\n1\r\nEND\r\n";
    assert!(all(reply, &mut text_get(&["a", "b"])).is_err());
    let (values, _) = all(
        b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\n",
        &mut text_get(&["a", "b"]),
    )
    .unwrap();
    assert_eq!(values.len(), 2);
}

#[test]
fn lengths_are_bounded_and_checked() {
    for line in [
        "VALUE k 0 18446744073709551615\r\n",
        "VALUE k 0 99999999999999999999999\r\n",
        "VALUE k 0 1048577\r\n",
        "VALUE k 0 -1\r\n",
        "VALUE k 0 +5\r\n",
    ] {
        let got = decode(line.as_bytes(), &mut text_get(&["k"]), 1 << 20);
        assert!(got.is_err(), "{line:?}: {got:?}");
    }
}

#[test]
fn a_unit_is_taken_whole_or_not_at_all() {
    let reply = b"VALUE k 0 5\r\nhello\r\nEND\r\n";
    for cut in 0..reply.len() {
        let mut expect = text_get(&["k"]);
        match decode(&reply[..cut], &mut expect, 1 << 20).unwrap() {
            Decoded::Need(n) => assert!(n > cut, "cut {cut}: needs {n}"),
            Decoded::Step(step) => assert!(step.used <= cut),
        }
    }
}

#[test]
fn meta_values_match_token_and_key() {
    let mut batch = Expect::MetaBatch {
        keys: keys(&["a", "b", "c"]),
        base: 7,
        next: 0,
    };
    let (values, status) =
        all(b"VA 1 ka O7\r\n1\r\nVA 1 kc O9\r\n3\r\nMN\r\n", &mut batch).unwrap();
    assert_eq!(values, vec![(0, b"1".to_vec()), (2, b"3".to_vec())]);
    assert_eq!(status, Status::Done);
    for bad in [
        &b"VA 1 kb O7\r\n1\r\nMN\r\n"[..],
        b"VA 1 ka O6\r\n1\r\nMN\r\n",
        b"VA 1 ka\r\n1\r\nMN\r\n",
        b"VA 1 kd O10\r\n1\r\nMN\r\n",
        b"HD O7\r\nMN\r\n",
        b"VA 1 kb O8\r\n2\r\nVA 1 ka O7\r\n1\r\nMN\r\n",
    ] {
        let mut batch = Expect::MetaBatch {
            keys: keys(&["a", "b", "c"]),
            base: 7,
            next: 0,
        };
        assert!(
            all(bad, &mut batch).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn numbers_are_strict() {
    assert_eq!(number(b"0"), Some(0));
    assert_eq!(number(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(number(b"18446744073709551616"), None);
    assert_eq!(number(b""), None);
    assert_eq!(number(b"+1"), None);
    assert_eq!(number(b"1 "), None);
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;
    use super::keys;

    /// Values as a server may hold them: arbitrary bytes, and bytes shaped like the protocol's
    /// own lines (the server's, and ones naming other keys).
    fn value() -> impl Strategy<Value = Vec<u8>> {
        let shaped = prop::sample::select(vec![
            &b"END\r\n"[..],
            b"MN\r\n",
            b"VALUE k1 0 3\r\nabc\r\n",
            b"VA 3 kk1 O1\r\nabc\r\n",
            b"VERSION 1.6.18\r\n",
            b"\r\n",
            b"SERVER_ERROR x\r\n",
        ]);
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(shaped, 0..4).prop_map(|parts| parts.concat()),
        ]
    }

    /// Hits (key index, value) for keys k0..kn, as the server would send them: in order.
    fn hits(n: usize) -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
        prop::collection::vec(prop::option::of(value()), n).prop_map(|values| {
            values
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| Some((i, v?)))
                .collect()
        })
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k{i}")).collect()
    }

    /// The reply a server sends to a multi-get of `n` keys with these hits.
    fn reply(meta: bool, base: u32, hits: &[(usize, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, v) in hits {
            let header = match meta {
                true => format!("VA {} kk{i} O{}\r\n", v.len(), base + *i as u32),
                false => format!("VALUE k{i} 0 {}\r\n", v.len()),
            };
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(if meta { b"MN\r\n" } else { b"END\r\n" });
        out
    }

    fn expect(meta: bool, base: u32, n: usize) -> Expect {
        let list = names(n);
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        match meta {
            true => Expect::MetaBatch {
                keys: keys(&refs),
                base,
                next: 0,
            },
            false => Expect::TextGet {
                keys: keys(&refs),
                next: 0,
                cas: false,
            },
        }
    }

    /// Feeds `stream` to the decoder as it arrives, `cuts` bytes at a time (a reader that
    /// only ever sees a prefix), for each pending reply in turn: the values of each.
    fn read(stream: &[u8], cuts: &[usize], pending: &mut [Expect]) -> Vec<Vec<(usize, Vec<u8>)>> {
        let mut arrived = 0;
        let mut cuts = cuts.iter().cycle();
        let mut at = 0;
        let mut out = Vec::new();
        for expect in pending.iter_mut() {
            let mut values = Vec::new();
            loop {
                match decode(&stream[at..arrived], expect, 1 << 20).unwrap() {
                    Decoded::Need(n) => {
                        assert!(at + n > arrived, "asked for what it had");
                        assert!(arrived < stream.len(), "needs more than was sent");
                        arrived = (arrived + cuts.next().copied().unwrap_or(1)).min(stream.len());
                    }
                    Decoded::Step(step) => {
                        if let Some(v) = step.value {
                            values.push((
                                v.index,
                                stream[at + v.data.start..at + v.data.end].to_vec(),
                            ));
                        }
                        at += step.used;
                        if step.status.is_some() {
                            break;
                        }
                    }
                }
            }
            out.push(values);
        }
        assert_eq!(at, stream.len(), "every byte read, none left over");
        out
    }

    proptest! {
        /// Two pipelined multi-gets, their replies arriving split at arbitrary points: each
        /// request gets exactly its own hits, whatever the values hold.
        #[test]
        fn each_reply_answers_its_own_request(
            meta in any::<bool>(),
            first in hits(6),
            second in hits(4),
            cuts in prop::collection::vec(1usize..64, 1..20),
        ) {
            let mut stream = reply(meta, 0, &first);
            stream.extend(reply(meta, 6, &second));
            let mut pending = [expect(meta, 0, 6), expect(meta, 6, 4)];
            let got = read(&stream, &cuts, &mut pending);
            prop_assert_eq!(&got[0], &first);
            prop_assert_eq!(&got[1], &second);
        }

        /// Arbitrary bytes where a reply should be: an error or a value of a key asked for,
        /// never a panic, never a value for another key.
        #[test]
        fn arbitrary_bytes_never_panic(meta in any::<bool>(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut e = expect(meta, 0, 3);
            let mut at = 0;
            while let Ok(Decoded::Step(step)) = decode(&bytes[at..], &mut e, 64) {
                if let Some(v) = step.value {
                    prop_assert!(v.index < 3);
                    prop_assert!(v.data.len() <= 64);
                }
                at += step.used;
                if step.status.is_some() || at >= bytes.len() {
                    break;
                }
            }
        }
    }
}
