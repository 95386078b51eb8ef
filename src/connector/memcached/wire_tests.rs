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
