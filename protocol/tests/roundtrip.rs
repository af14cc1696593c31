//! Property tests: `decode(encode(f)) == f` for RESP3 frames, and the request
//! parser agrees with a plain encoder whatever the read boundaries are.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ringcache_protocol::encode::{command, encode_frame};
use ringcache_protocol::{Frame, Limits, RequestParser, Version, decode_frame};

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn line() -> impl Strategy<Value = Bytes> {
    "[a-zA-Z0-9 _.:-]{0,20}".prop_map(Bytes::from)
}

fn frame() -> impl Strategy<Value = Frame> {
    let leaf = prop_oneof![
        line().prop_map(Frame::Simple),
        line().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        bytes().prop_map(Frame::Bulk),
        Just(Frame::Null),
        any::<f64>().prop_filter("NaN never equals itself", |d| !d.is_nan()).prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        "-?[1-9][0-9]{0,40}".prop_map(|s| Frame::BigNumber(Bytes::from(s))),
        ("[a-z]{3}", bytes()).prop_map(|(f, text)| Frame::Verbatim { format: f.as_bytes().try_into().unwrap(), text }),
        bytes().prop_map(Frame::BlobError),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Set),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Push),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Frame::Map),
            (proptest::collection::vec((inner.clone(), inner.clone()), 1..3), inner)
                .prop_map(|(attributes, f)| Frame::Attribute { attributes, frame: Box::new(f) }),
        ]
    })
}

proptest! {
    #[test]
    fn decode_of_encode_is_identity(f in frame()) {
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, &f, Version::Resp3);
        let decoded = decode_frame(&buf, &Limits::default()).unwrap();
        prop_assert_eq!(decoded, Some((f, buf.len())));
        for cut in 0..buf.len() {
            prop_assert_eq!(decode_frame(&buf[..cut], &Limits::default()).unwrap(), None);
        }
    }

    #[test]
    fn request_parser_is_split_invariant(
        cmds in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5), 1..8),
        chunk in 1usize..32,
    ) {
        let mut wire = BytesMut::new();
        for c in &cmds {
            command(&mut wire, c);
        }
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut got: Vec<Vec<Vec<u8>>> = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while parser.parse(&buf, &Limits::default(), true).unwrap() {
                got.push(parser.args(&buf).iter().map(<[u8]>::to_vec).collect());
            }
            parser.compact(&mut buf);
        }
        prop_assert_eq!(got, cmds);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_frame(&data, &Limits::default());
        let mut parser = RequestParser::new();
        while let Ok(true) = parser.parse(&data, &Limits::default(), true) {}
    }
}
