//! The control protocol: every request round-trips, and every malformed length and field is
//! refused with an error naming it.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
use bulwark_protocol::limits::*;
use bulwark_protocol::*;
use proptest::prelude::*;

fn encode(req: &Request<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; req.encoded_len()];
    let n = req.encode(&mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

fn valid_requests(envelope: &[u8]) -> Vec<Request<'_>> {
    vec![
        Request::Status,
        Request::ReadDetections { max: 1 },
        Request::ReadDetections {
            max: MAX_DETECTIONS_PER_READ,
        },
        Request::ReadGuardEvents { max: 7 },
        Request::StagePack { envelope },
        Request::ConfirmHealthy,
        Request::Revert,
        Request::StageNextBoot { envelope },
    ]
}

#[test]
fn every_request_round_trips() {
    let envelope = b"BWSG and then some pack bytes".to_vec();
    for req in valid_requests(&envelope) {
        let bytes = encode(&req);
        assert_eq!(Request::parse(req.op().ioctl(), &bytes), Ok(req));
    }
}

#[test]
fn ioctl_codes_are_distinct_buffered_and_access_checked() {
    let mut seen = std::collections::HashSet::new();
    for op in Op::ALL {
        let code = op.ioctl();
        assert!(seen.insert(code));
        assert_eq!(code & 3, METHOD_BUFFERED, "{op:?} must be METHOD_BUFFERED");
        assert_eq!(code >> 16, FILE_DEVICE_UNKNOWN);
        let access = (code >> 14) & 3;
        match op {
            Op::StagePack | Op::ConfirmHealthy | Op::Revert | Op::StageNextBoot => {
                assert_eq!(access, FILE_WRITE_ACCESS)
            }
            _ => assert_eq!(access, FILE_READ_ACCESS),
        }
        assert_eq!(Op::from_ioctl(code), Ok(op));
    }
    // The same function with another method or access is not ours.
    let status = Op::Status.ioctl();
    for code in [status | 1, status | 3, status ^ (3 << 14), 0, u32::MAX] {
        assert_eq!(
            Request::parse(code, &encode(&Request::Status)),
            Err(ProtocolError::UnknownIoctl { code })
        );
    }
}

#[test]
fn every_truncation_is_refused() {
    let envelope = vec![0xAB; 40];
    for req in valid_requests(&envelope) {
        let bytes = encode(&req);
        for len in 0..bytes.len() {
            let err = Request::parse(req.op().ioctl(), &bytes[..len]).unwrap_err();
            match err {
                ProtocolError::Truncated { offset, .. } => assert!(offset <= len),
                ProtocolError::LengthMismatch { declared, actual } => {
                    assert_eq!(declared as usize, bytes.len() - 12);
                    assert_eq!(actual, len - 12);
                }
                other => panic!("{req:?} truncated to {len}: unexpected {other}"),
            }
        }
    }
}

#[test]
fn extra_bytes_are_refused() {
    let envelope = vec![1u8; 10];
    for req in valid_requests(&envelope) {
        let mut bytes = encode(&req);
        bytes.push(0);
        let err = Request::parse(req.op().ioctl(), &bytes).unwrap_err();
        assert!(
            matches!(err, ProtocolError::LengthMismatch { .. }),
            "{req:?}: {err}"
        );
        // Even with the header's length fixed up, a fixed-size body must be exact.
        let declared = (bytes.len() - 12) as u32;
        bytes[8..12].copy_from_slice(&declared.to_le_bytes());
        let parsed = Request::parse(req.op().ioctl(), &bytes);
        match req {
            Request::StagePack { .. } | Request::StageNextBoot { .. } => assert!(parsed.is_ok()),
            _ => assert!(
                matches!(parsed, Err(ProtocolError::BodyLength { .. })),
                "{req:?}: {parsed:?}"
            ),
        }
    }
}

#[test]
fn header_fields_are_checked_and_named() {
    let good = encode(&Request::ReadDetections { max: 3 });
    let code = Op::ReadDetections.ioctl();

    let mut b = good.clone();
    b[0] ^= 0xFF;
    let e = Request::parse(code, &b).unwrap_err();
    assert!(matches!(e, ProtocolError::BadMagic { .. }));
    assert!(e.to_string().contains("byte 0"), "{e}");

    // Version 1 (detections without context) is no longer spoken.
    let mut b = good.clone();
    b[4] = 1;
    let e = Request::parse(code, &b).unwrap_err();
    assert_eq!(
        e,
        ProtocolError::UnsupportedVersion {
            found: 1,
            supported: 2
        }
    );

    let mut b = good.clone();
    b[6] = Op::Status as u8;
    assert_eq!(
        Request::parse(code, &b),
        Err(ProtocolError::OpMismatch {
            ioctl: 2,
            header: 1
        })
    );

    let mut b = good.clone();
    b[8] = 9;
    assert_eq!(
        Request::parse(code, &b),
        Err(ProtocolError::LengthMismatch {
            declared: 9,
            actual: 8
        })
    );
    let mut b = good.clone();
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Request::parse(code, &b),
        Err(ProtocolError::LengthMismatch { .. })
    ));
}

#[test]
fn record_counts_are_bounded() {
    for (op, limit) in [
        (Op::ReadDetections, MAX_DETECTIONS_PER_READ),
        (Op::ReadGuardEvents, MAX_GUARD_EVENTS_PER_READ),
    ] {
        for max in [0, limit + 1, u32::MAX] {
            let req = if op == Op::ReadDetections {
                Request::ReadDetections { max }
            } else {
                Request::ReadGuardEvents { max }
            };
            let e = Request::parse(op.ioctl(), &encode(&req)).unwrap_err();
            match e {
                ProtocolError::BadField {
                    field,
                    offset,
                    value,
                    ..
                } => {
                    assert_eq!(field, "max records");
                    assert_eq!(offset, 12);
                    assert_eq!(value, u64::from(max));
                }
                other => panic!("{op:?} max {max}: {other}"),
            }
        }
        // reserved bytes after `max`
        let mut b = encode(&Request::ReadDetections { max: 1 });
        b[6] = op as u8;
        b[17] = 1;
        assert_eq!(
            Request::parse(op.ioctl(), &b),
            Err(ProtocolError::ReservedNotZero {
                field: "read reserved",
                offset: 17
            })
        );
    }
}

#[test]
fn stage_size_is_bounded() {
    type Make = for<'a> fn(&'a [u8]) -> Request<'a>;
    let makes: [(Op, Make); 2] = [
        (Op::StagePack, |envelope| Request::StagePack { envelope }),
        (Op::StageNextBoot, |envelope| Request::StageNextBoot {
            envelope,
        }),
    ];
    for (op, make) in makes {
        let code = op.ioctl();
        let e = Request::parse(code, &encode(&make(&[]))).unwrap_err();
        assert!(matches!(e, ProtocolError::BodyLength { got: 0, .. }), "{e}");
        let big = vec![0u8; MAX_STAGE_BYTES + 1];
        let e = Request::parse(code, &encode(&make(&big))).unwrap_err();
        assert!(
            matches!(e, ProtocolError::BodyLength { got, .. } if got == MAX_STAGE_BYTES + 1),
            "{e}"
        );
        let max = vec![0u8; MAX_STAGE_BYTES];
        let longest = encode(&make(&max));
        assert!(Request::parse(code, &longest).is_ok());
        // The driver refuses inputs longer than MAX_REQUEST_LEN before copying them: no request
        // that parses is longer.
        assert_eq!(longest.len(), bulwark_protocol::MAX_REQUEST_LEN);
        let mut over = longest;
        over.push(0);
        assert!(Request::parse(code, &over).is_err());
    }
    // A stage request sent with the other stage operation's code is refused, not reinterpreted.
    let bytes = encode(&Request::StagePack { envelope: b"x" });
    assert!(matches!(
        Request::parse(Op::StageNextBoot.ioctl(), &bytes),
        Err(ProtocolError::OpMismatch {
            ioctl: 7,
            header: 4
        })
    ));
}

fn sample_status() -> StatusReply {
    StatusReply {
        driver_version: 0x0001_0200,
        schema_hash: [7; 32],
        content: ContentStatus {
            source: ContentSource::Candidate,
            channel: 291,
            version: 42,
            hash: [9; 32],
            rules: 1150,
        },
        guard: GuardStatus {
            attempts: 2,
            threshold: 3,
            candidate_staged: true,
            candidate_version: 42,
            quarantined: 1,
            stable_period_secs: 600,
            stable_elapsed_secs: 12,
            lkg_version: 41,
        },
        counters: Counters {
            events: [1, 2, 3],
            detections: 4,
            detections_dropped: 5,
            blocked: 6,
            eval_errors: 0,
            over_budget: 0,
            content_busy: 7,
            events_dropped: 8,
            blocks_spared: 9,
            rules_demoted: 10,
            detections_pending: 8,
            guard_events_pending: 9,
        },
    }
}

fn status_reply_bytes() -> Vec<u8> {
    let mut buf = vec![0u8; Op::Status.max_reply_len()];
    let s = sample_status();
    let n = encode_reply(&mut buf, Op::Status, ReplyStatus::Ok, |w| s.encode(w)).unwrap();
    assert_eq!(n, buf.len());
    buf
}

#[test]
fn status_reply_round_trips_and_rejects_every_truncation() {
    let bytes = status_reply_bytes();
    assert_eq!(StatusReply::parse(&bytes), Ok(sample_status()));
    for len in 0..bytes.len() {
        assert!(StatusReply::parse(&bytes[..len]).is_err(), "len {len}");
    }
    // a content source out of range is named
    let mut b = bytes.clone();
    b[16 + 36] = 3;
    let e = StatusReply::parse(&b).unwrap_err();
    assert!(e.to_string().contains("content source at byte 52"), "{e}");
    // a reply for another operation is refused
    let mut b = bytes.clone();
    b[6] = Op::ReadDetections as u8;
    assert!(matches!(
        StatusReply::parse(&b),
        Err(ProtocolError::OpMismatch { .. })
    ));
    // an output buffer one byte short is reported, not overrun
    let mut small = vec![0u8; bytes.len() - 1];
    let s = sample_status();
    assert_eq!(
        encode_reply(&mut small, Op::Status, ReplyStatus::Ok, |w| s.encode(w)),
        Err(ProtocolError::OutputTooSmall {
            need: bytes.len(),
            have: bytes.len() - 1
        })
    );
}

fn detections_reply(images: &[&str]) -> Vec<u8> {
    let mut buf = vec![0u8; Op::ReadDetections.max_reply_len()];
    let n = encode_reply(&mut buf, Op::ReadDetections, ReplyStatus::Ok, |w| {
        encode_list_header(w, images.len() as u32, 3)?;
        for (i, image) in images.iter().enumerate() {
            DetectionRecord {
                seq: i as u64 + 10,
                time: 133_000_000_000_000_000,
                content_version: 42,
                rule_index: i as u32,
                event_type: 0,
                action: 1,
                blocked: true,
                truncated: 0,
                process_id: 4242,
                parent_process_id: 4,
                image,
                command_line: "cmd.exe /c whoami",
                user: "CORP\\alice",
                parent_image: "C:\\Windows\\explorer.exe",
                hashes: "SHA256=00FF",
            }
            .encode(w)?;
        }
        Ok(())
    })
    .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn detection_lists_round_trip_and_truncate_images_on_char_boundaries() {
    let long = "C:\\Ünïcödé\\".repeat(40);
    let bytes = detections_reply(&["C:\\Windows\\System32\\cmd.exe", &long]);
    let list = parse_detections(&bytes).unwrap();
    assert_eq!(list.dropped_total, 3);
    let records: Vec<_> = list.records.collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].image, "C:\\Windows\\System32\\cmd.exe");
    assert_eq!(records[0].seq, 10);
    assert!(records[0].blocked);
    assert!(records[1].image.len() <= DETECTION_IMAGE_BYTES);
    assert!(long.starts_with(records[1].image));
    assert!(records[1].image.len() > DETECTION_IMAGE_BYTES - 4);
    assert_eq!(records[0].command_line, "cmd.exe /c whoami");
    assert_eq!(records[0].user, "CORP\\alice");
    assert_eq!(records[0].parent_image, "C:\\Windows\\explorer.exe");
    assert_eq!(records[0].hashes, "SHA256=00FF");
    assert_eq!(records[0].truncated_fields().count(), 0);
}

#[test]
fn a_detections_context_fields_round_trip_with_their_truncation_flags() {
    let long = "é".repeat(400); // 800 bytes, each character two
    let record = DetectionRecord {
        seq: 1,
        time: 2,
        content_version: 3,
        rule_index: 4,
        event_type: 0,
        action: 0,
        blocked: false,
        truncated: DetectionRecord::TRUNCATED_COMMAND_LINE | DetectionRecord::TRUNCATED_HASHES,
        process_id: 5,
        parent_process_id: 6,
        image: "i",
        command_line: &long,
        user: "u",
        parent_image: "p",
        hashes: &long,
    };
    let mut buf = vec![0u8; Op::ReadDetections.max_reply_len()];
    let n = encode_reply(&mut buf, Op::ReadDetections, ReplyStatus::Ok, |w| {
        encode_list_header(w, 1, 0)?;
        record.encode(w)
    })
    .unwrap();
    assert_eq!(n, 16 + LIST_HEADER_LEN + DetectionRecord::LEN);
    let got = parse_detections(&buf[..n]).unwrap().records.next().unwrap();
    // Cut to the field's capacity on a character boundary: 512 and 192 bytes, whole 'é's.
    assert_eq!(got.command_line, "é".repeat(256));
    assert_eq!(got.hashes, "é".repeat(96));
    assert_eq!(
        got.truncated_fields().collect::<Vec<_>>(),
        ["command_line", "hashes"]
    );
    // A flag the protocol does not define is refused, naming the field.
    let flags_at = 16 + LIST_HEADER_LEN + 31;
    buf[flags_at] = 0x40;
    let e = parse_detections(&buf[..n]).unwrap_err();
    assert!(e.to_string().contains("detection truncated"), "{e}");
}

#[test]
fn detection_lists_reject_bad_counts_lengths_and_strings() {
    let bytes = detections_reply(&["a", "b"]);
    // count larger than the records present
    let mut b = bytes.clone();
    b[16] = 3;
    assert!(matches!(
        parse_detections(&b),
        Err(ProtocolError::BodyLength { .. })
    ));
    // count over the per-read limit
    let mut b = bytes.clone();
    b[16..20].copy_from_slice(&(MAX_DETECTIONS_PER_READ + 1).to_le_bytes());
    assert!(matches!(
        parse_detections(&b),
        Err(ProtocolError::BadField {
            field: "record count",
            ..
        })
    ));
    let rec0 = 16 + LIST_HEADER_LEN;
    let image_len_at = rec0 + 40;
    // image length beyond its field
    let mut b = bytes.clone();
    b[image_len_at..image_len_at + 2].copy_from_slice(&300u16.to_le_bytes());
    let e = parse_detections(&b).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("detection image at byte {image_len_at}")),
        "{e}"
    );
    // invalid UTF-8
    let mut b = bytes.clone();
    b[image_len_at + 2] = 0xFF;
    assert!(matches!(
        parse_detections(&b),
        Err(ProtocolError::BadField {
            expected: "UTF-8 text",
            ..
        })
    ));
    // garbage in the padding after the string
    let mut b = bytes.clone();
    b[image_len_at + 2 + 5] = b'x';
    assert!(matches!(
        parse_detections(&b),
        Err(ProtocolError::ReservedNotZero { .. })
    ));
    // a boolean that is neither 0 nor 1
    let mut b = bytes.clone();
    b[rec0 + 30] = 2;
    assert!(matches!(
        parse_detections(&b),
        Err(ProtocolError::BadField {
            field: "detection blocked",
            ..
        })
    ));
}

#[test]
fn guard_events_and_outcomes_round_trip() {
    let mut buf = vec![0u8; Op::ReadGuardEvents.max_reply_len()];
    let ev = GuardEventRecord {
        seq: 1,
        time: 2,
        kind: 3,
        attempts: 2,
        detail: 5,
        version: 6,
        hash: [1; 32],
    };
    let n = encode_reply(&mut buf, Op::ReadGuardEvents, ReplyStatus::Ok, |w| {
        encode_list_header(w, 1, 0)?;
        ev.encode(w)
    })
    .unwrap();
    let list = parse_guard_events(&buf[..n]).unwrap();
    assert_eq!(list.records.collect::<Vec<_>>(), vec![ev]);

    for (op, accepted) in [
        (Op::StagePack, false),
        (Op::ConfirmHealthy, true),
        (Op::Revert, true),
        (Op::StageNextBoot, false),
    ] {
        let o = Outcome {
            accepted,
            code: if accepted { 0 } else { 4 },
            message: "content version 3 is older than the running 5 (downgrade refused)",
        };
        let mut buf = vec![0u8; op.max_reply_len()];
        let n = encode_reply(&mut buf, op, o.status(), |w| o.encode(w)).unwrap();
        assert_eq!(n, op.max_reply_len());
        assert_eq!(Outcome::parse(op, &buf[..n]), Ok(o));
        // status and body must agree
        let mut b = buf[..n].to_vec();
        b[8] ^= 1;
        assert!(Outcome::parse(op, &b).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_requests_never_panic(op in 0usize..5, bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Request::parse(Op::ALL[op].ioctl(), &bytes);
    }

    #[test]
    fn mutated_requests_are_refused_or_equal(op in 0usize..5, at in 0usize..32, xor in 1u8..) {
        let envelope = [5u8; 16];
        let req = valid_requests(&envelope)
            .into_iter()
            .find(|r| r.op() == Op::ALL[op])
            .unwrap();
        let mut bytes = encode(&req);
        let at = at % bytes.len();
        bytes[at] ^= xor;
        match Request::parse(req.op().ioctl(), &bytes) {
            Err(_) => {}
            Ok(parsed) => {
                // Only payload bytes may change without a refusal: the stage envelope, or `max`.
                prop_assert!(at >= 12, "header byte {} changed and was accepted", at);
                prop_assert_eq!(parsed.op(), req.op());
            }
        }
    }

    #[test]
    fn arbitrary_replies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = StatusReply::parse(&bytes);
        let _ = parse_detections(&bytes).map(|l| l.records.count());
        let _ = parse_guard_events(&bytes).map(|l| l.records.count());
        let _ = Outcome::parse(Op::StagePack, &bytes);
    }
}
