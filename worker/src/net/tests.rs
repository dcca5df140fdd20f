//! Tests of the data plane between two planes in one process, over loopback.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::bounded;

use super::frame::{self, FrameReader, Kind, MAGIC};
use super::*;
use crate::data::{Barrier, BarrierKind, Batch, Event};

/// Longest any step may take before the test counts it as hung.
const HANG: Duration = Duration::from_secs(10);

fn plane() -> DataPlane {
    DataPlane::bind("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn chan(attempt: u64, producer: u32, consumer: u32) -> ChannelId {
    ChannelId {
        attempt,
        node: 3,
        input: 0,
        producer,
        consumer,
    }
}

/// Opens `ch` from `from` to `to` (whose receiver is registered) and waits until the receiver
/// granted all its initial credits.
fn sender_with_all_credits(from: &DataPlane, to: &DataPlane, ch: ChannelId) -> NetSender {
    let tx = from.open_sender(to.local_addr(), ch).unwrap();
    let t = Instant::now();
    while tx.chan.state.lock().credits < INITIAL_CREDITS {
        assert!(t.elapsed() < HANG, "no credits granted");
        thread::sleep(Duration::from_millis(1));
    }
    tx
}

/// Runs `f` on a thread and fails the test if it does not finish within [`HANG`].
fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = bounded(1);
    thread::spawn(move || {
        let _ignored = tx.send(f());
    });
    rx.recv_timeout(HANG).expect("the operation hung")
}

#[test]
fn ordered_delivery_over_multiplexed_channels() {
    const CHANNELS: u32 = 4;
    const BATCHES: u64 = 200;
    let (a, b) = (plane(), plane());
    let cancel = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for p in 0..CHANNELS {
        let ch = chan(1, p, p % 2);
        // Half the receivers register before their sender opens, half after.
        let receiver = (p % 2 == 0).then(|| b.open_receiver(ch).unwrap());
        let sender = a.open_sender(b.local_addr(), ch).unwrap();
        let receiver = receiver.unwrap_or_else(|| b.open_receiver(ch).unwrap());
        let mut outlet = NetOutlet::new(sender, Arc::default());
        let mut inlet = NetInlet::<(u32, u64)>::new(receiver, Arc::default());
        let c = cancel.clone();
        producers.push(thread::spawn(move || {
            let blocked = AtomicU64::new(0);
            let mut send = |ev| outlet.send(ev, &c, &blocked).unwrap();
            for i in 0..BATCHES {
                let batch = (0..1024).map(|j| (p, i * 1024 + j)).collect();
                send(Event::Batch(Batch::from_vec(batch)));
                if i % 50 == 0 {
                    send(Event::Watermark(i as i64));
                    let barrier = Barrier {
                        checkpoint_id: i,
                        timestamp_ms: 0,
                        kind: BarrierKind::Checkpoint,
                    };
                    send(Event::Barrier(barrier));
                }
            }
            send(Event::EndOfInput);
        }));
        consumers.push(thread::spawn(move || {
            let mut next = 0u64;
            let mut marks = 0;
            loop {
                match inlet.recv_timeout(HANG).unwrap().expect("consumer starved") {
                    Event::Batch(batch) => {
                        for (q, n) in batch.data {
                            assert_eq!((q, n), (p, next), "records out of order");
                            next += 1;
                        }
                    }
                    Event::Watermark(w) => {
                        assert_eq!(w as u64 * 1024 + 1024, next);
                        marks += 1;
                    }
                    Event::Barrier(b) => assert_eq!(b.checkpoint_id * 1024 + 1024, next),
                    Event::EndOfInput => break,
                    Event::Idle(i) => panic!("an idle status ({i}) nobody sent"),
                }
            }
            assert_eq!((next, marks), (BATCHES * 1024, BATCHES.div_ceil(50)));
        }));
    }
    assert_eq!(
        a.connection_counts().0,
        1,
        "one connection for all channels"
    );
    for p in producers {
        p.join().unwrap();
    }
    for c in consumers {
        c.join().unwrap();
    }
    assert_eq!(
        b.connection_counts().1,
        1,
        "one connection for all channels"
    );
}

/// `Bytes` records are slices of the frame they arrived in: records kept while later frames
/// arrive must keep their own bytes (the frame is not reused for a later one).
#[test]
fn bytes_records_survive_later_frames() {
    const BATCHES: u8 = 50;
    let (a, b) = (plane(), plane());
    let cancel = Arc::new(AtomicBool::new(false));
    let ch = chan(1, 0, 0);
    let received = Arc::new(AtomicU64::new(0));
    let mut inlet = NetInlet::<Bytes>::new(b.open_receiver(ch).unwrap(), received.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let mut outlet = NetOutlet::new(a.open_sender(b.local_addr(), ch).unwrap(), sent.clone());
    // Small records are copied into the frame, large ones written from where they are.
    let record =
        |i: u8, j: usize| Bytes::from(vec![i; if j.is_multiple_of(50) { 5000 } else { j % 7 }]);
    let c = cancel.clone();
    let producer = thread::spawn(move || {
        let blocked = AtomicU64::new(0);
        for i in 0..BATCHES {
            let batch = (0..300).map(|j| record(i, j)).collect();
            outlet
                .send(Event::Batch(Batch::from_vec(batch)), &c, &blocked)
                .unwrap();
        }
        outlet
            .send(Event::<Bytes>::EndOfInput, &c, &blocked)
            .unwrap();
    });
    let kept = within(move || {
        let mut kept = Vec::new();
        loop {
            match inlet.recv_timeout(HANG).unwrap() {
                Some(Event::Batch(batch)) => kept.push(batch.data),
                Some(Event::EndOfInput) => return kept,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    producer.join().unwrap();
    // Batches sent while the producer had no credit arrive joined; the records keep their order.
    let kept: Vec<Bytes> = kept.into_iter().flatten().collect();
    let want: Vec<Bytes> = (0..BATCHES)
        .flat_map(|i| (0..300).map(move |j| record(i, j)))
        .collect();
    assert_eq!(kept.len(), want.len());
    for (n, (got, want)) in kept.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "record {n}");
    }
    // Both ends count the same frames: every byte sent was taken.
    assert!(sent.load(Ordering::SeqCst) > 50 * 300);
    assert_eq!(sent.load(Ordering::SeqCst), received.load(Ordering::SeqCst));
}

/// An outlet sends its first batch alone; then, knowing how large its records encode, it holds
/// batches and joins them until they fill a frame ([`typed::records_per_frame`]: here the cap
/// of [`typed::COALESCED_RECORDS_MAX`], `u64` records being small). Out of credit, it holds
/// without waiting up to that cap, and only a send that reaches it waits. Any other event, and
/// a flush, sends the held records first; every record arrives once and in order.
#[test]
fn batches_fill_frames_and_wait_for_credit_only_at_the_cap() {
    const BATCHES: u64 = 20;
    let credits = u64::from(INITIAL_CREDITS);
    let joined = (typed::COALESCED_RECORDS_MAX / crate::exchange::BATCH_SIZE) as u64;
    assert_eq!(typed::records_per_frame(9), typed::COALESCED_RECORDS_MAX);
    let (a, b) = (plane(), plane());
    let ch = chan(1, 0, 0);
    let mut inlet = NetInlet::<u64>::new(b.open_receiver(ch).unwrap(), Arc::default());
    let tx = sender_with_all_credits(&a, &b, ch);
    let mut outlet = NetOutlet::new(tx, Arc::default());
    let sent = Arc::new(AtomicU64::new(0));
    let s = sent.clone();
    let producer = thread::spawn(move || {
        let (cancel, blocked) = (AtomicBool::new(false), AtomicU64::new(0));
        for i in 0..BATCHES {
            let batch = (0..1024).map(|j| i * 1024 + j).collect();
            outlet
                .send(Event::Batch(Batch::from_vec(batch)), &cancel, &blocked)
                .unwrap();
            s.fetch_add(1, Ordering::SeqCst);
        }
        outlet.send(Event::Watermark(7), &cancel, &blocked).unwrap();
        outlet
            .send(
                Event::Batch(Batch::from_vec(vec![u64::MAX])),
                &cancel,
                &blocked,
            )
            .unwrap();
        outlet.flush(&cancel, &blocked).unwrap();
        s.fetch_add(1, Ordering::SeqCst);
        outlet.send(Event::EndOfInput, &cancel, &blocked).unwrap();
    });
    // The credits went to the first batch and then to full frames; the batches after those
    // are held without waiting, until the held records reach the cap: that send waits.
    let returned = 1 + (credits - 1) * joined + (joined - 1);
    let t = Instant::now();
    while sent.load(Ordering::SeqCst) < returned {
        assert!(t.elapsed() < HANG, "the producer waited before the cap");
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(200));
    assert_eq!(sent.load(Ordering::SeqCst), returned);
    let events = within(move || {
        let mut events = Vec::new();
        loop {
            match inlet.recv_timeout(HANG).unwrap().expect("an event") {
                Event::EndOfInput => return events,
                ev => events.push(ev),
            }
        }
    });
    producer.join().unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), BATCHES + 1);
    let sizes: Vec<usize> = events
        .iter()
        .map(|ev| match ev {
            Event::Batch(b) => b.len(),
            _ => 0,
        })
        .collect();
    let full = typed::COALESCED_RECORDS_MAX;
    // The first batch alone, four full frames, the rest flushed by the watermark, the
    // watermark, and the last record flushed on its own.
    assert_eq!(sizes, vec![1024, full, full, full, full, 3 * 1024, 0, 1]);
    // Every record once, in order, the watermark after the batches and the flushed record last.
    let mut next = 0;
    let mut watermark_at = None;
    let mut last = None;
    for ev in events {
        match ev {
            Event::Batch(b) => {
                for r in b.data {
                    if r == u64::MAX {
                        last = Some(next);
                    } else {
                        assert_eq!(r, next, "records out of order");
                        next += 1;
                    }
                }
            }
            Event::Watermark(w) => watermark_at = Some((w, next)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(next, BATCHES * 1024);
    assert_eq!(watermark_at, Some((7, BATCHES * 1024)));
    assert_eq!(last, Some(BATCHES * 1024));
}

/// Records large enough to fill a frame on their own are never held: each batch of them goes
/// out as soon as a credit allows.
#[test]
fn batches_of_large_records_are_not_held() {
    let (a, b) = (plane(), plane());
    let ch = chan(1, 0, 0);
    let mut inlet = NetInlet::<Bytes>::new(b.open_receiver(ch).unwrap(), Arc::default());
    let mut outlet = NetOutlet::new(a.open_sender(b.local_addr(), ch).unwrap(), Arc::default());
    let (cancel, blocked) = (AtomicBool::new(false), AtomicU64::new(0));
    let record = Bytes::from(vec![5u8; typed::FRAME_TARGET_BYTES / 4]);
    for i in 0..6 {
        let batch = Batch::from_vec(vec![record.clone(); 4]);
        outlet.send(Event::Batch(batch), &cancel, &blocked).unwrap();
        if i == 0 {
            // Sent before the receiver's credits may have arrived: the flush a task does.
            outlet.flush(&cancel, &blocked).unwrap();
        }
        match inlet.recv_timeout(HANG).unwrap() {
            Some(Event::Batch(got)) => assert_eq!(got.len(), 4, "batch {i} arrives alone"),
            other => panic!("batch {i}: unexpected {other:?}"),
        }
    }
}

#[test]
fn backpressure_blocks_sender_and_bounds_frames_in_flight() {
    const FRAMES: usize = 60;
    let (a, b) = (plane(), plane());
    let ch = chan(1, 0, 0);
    let rx = b.open_receiver(ch).unwrap();
    let mut tx = a.open_sender(b.local_addr(), ch).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let sender = thread::spawn(move || {
        let cancel = AtomicBool::new(false);
        for i in 0..FRAMES {
            tx.send(&vec![i as u8; 10_000], &cancel).unwrap();
            s.fetch_add(1, Ordering::SeqCst);
        }
    });
    let credits = INITIAL_CREDITS as usize;
    let t = Instant::now();
    while sent.load(Ordering::SeqCst) < credits {
        assert!(t.elapsed() < HANG, "the sender did not use its credits");
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sent.load(Ordering::SeqCst),
        credits,
        "sender must stop at its credits"
    );
    for taken in 0..FRAMES {
        // Sends only complete on credits returned by earlier takes, so this bound is exact.
        let in_flight = sent.load(Ordering::SeqCst) - taken;
        assert!(in_flight <= credits, "{in_flight} frames in flight");
        let f = rx.recv_timeout(HANG).unwrap().expect("frame");
        assert_eq!((f.len(), f[0]), (10_000, taken as u8));
        thread::sleep(Duration::from_millis(2));
    }
    sender.join().unwrap();
    assert_eq!(
        rx.max_queued(),
        credits,
        "queue filled up to, never past, the credits"
    );
}

/// Credits held back for a batch must never strand a sender: one that sends a frame only after
/// the receiver took the previous one (as a source waiting on a slow upstream does) keeps
/// going for many times its credits.
#[test]
fn credits_held_for_a_batch_never_strand_a_lockstep_sender() {
    const FRAMES: u8 = 40;
    let (a, b) = (plane(), plane());
    let ch = chan(1, 1, 1);
    let rx = b.open_receiver(ch).unwrap();
    let mut tx = a.open_sender(b.local_addr(), ch).unwrap();
    let (go_tx, go_rx) = bounded::<u8>(1);
    let sender = thread::spawn(move || {
        let cancel = AtomicBool::new(false);
        while let Ok(i) = go_rx.recv() {
            tx.send(&[i], &cancel).unwrap();
        }
    });
    for i in 0..FRAMES {
        go_tx.send(i).unwrap();
        let got = rx.recv_timeout(HANG).unwrap();
        assert_eq!(
            got,
            Some(Bytes::from(vec![i])),
            "frame {i} of a lockstep sender"
        );
    }
    drop(go_tx);
    sender.join().unwrap();
    assert!(FRAMES as u32 > 4 * INITIAL_CREDITS);
}

#[test]
fn sender_opened_before_receiver_waits_for_credits() {
    let (a, b) = (plane(), plane());
    let ch = chan(1, 2, 5);
    let mut tx = a.open_sender(b.local_addr(), ch).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let sender = thread::spawn(move || {
        let cancel = AtomicBool::new(false);
        for i in 0..10u8 {
            tx.send(&[i], &cancel).unwrap();
            s.fetch_add(1, Ordering::SeqCst);
        }
    });
    thread::sleep(Duration::from_millis(200));
    assert_eq!(sent.load(Ordering::SeqCst), 0, "no data before credits");
    let rx = b.open_receiver(ch).unwrap();
    for i in 0..10u8 {
        assert_eq!(rx.recv_timeout(HANG).unwrap(), Some(Bytes::from(vec![i])));
    }
    sender.join().unwrap();
    assert!(b.open_receiver(ch).is_err(), "a channel registers once");
}

#[test]
fn lost_receiving_peer_fails_a_waiting_sender() {
    let (a, b) = (plane(), plane());
    let b_addr = b.local_addr();
    let ch = chan(1, 0, 0);
    let rx = b.open_receiver(ch).unwrap();
    let mut tx = a.open_sender(b_addr, ch).unwrap();
    let sender = thread::spawn(move || {
        let cancel = AtomicBool::new(false);
        loop {
            if let Err(e) = tx.send(&[0; 100], &cancel) {
                return e.to_string();
            }
        }
    });
    // The sender has spent its credits and waits for more when the receiving worker goes.
    thread::sleep(Duration::from_millis(200));
    drop((rx, b));
    let err = within(move || sender.join().unwrap());
    assert!(err.contains(&b_addr.to_string()), "{err}");
}

#[test]
fn lost_sending_peer_ends_the_consumers_input_naming_the_peer() {
    let (a, b) = (plane(), plane());
    let a_addr = a.local_addr();
    let ch = chan(1, 1, 0);
    let cancel = AtomicBool::new(false);
    let blocked = AtomicU64::new(0);
    let mut outlet = NetOutlet::new(a.open_sender(b.local_addr(), ch).unwrap(), Arc::default());
    let mut inlet = NetInlet::<String>::new(b.open_receiver(ch).unwrap(), Arc::default());
    let batch = Batch::from_vec(vec!["x".to_string(); 10]);
    outlet
        .send(Event::Batch(batch.clone()), &cancel, &blocked)
        .unwrap();
    // Sent before the receiver's credits arrived, the batch may be held: a task flushes
    // before it waits.
    outlet.flush(&cancel, &blocked).unwrap();
    match inlet.recv_timeout(HANG).unwrap() {
        Some(Event::Batch(got)) => assert_eq!(got, batch),
        other => panic!("unexpected {other:?}"),
    }
    // The sending worker dies (its producer still holds the outlet): the input ends with an
    // error that names the lost worker.
    drop(a);
    let err = within(move || inlet.recv_timeout(HANG).unwrap_err().to_string());
    assert!(err.contains(&a_addr.to_string()), "{err}");
    let next = outlet.send(Event::Batch(batch), &cancel, &blocked);
    assert!(
        next.and_then(|()| outlet.flush(&cancel, &blocked)).is_err(),
        "the producer's next send or flush fails"
    );
}

#[test]
fn cancel_unblocks_a_waiting_sender() {
    let (a, b) = (plane(), plane());
    // No receiver ever registers: the sender has no credits.
    let mut tx = a.open_sender(b.local_addr(), chan(1, 0, 0)).unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    let t = Instant::now();
    let waiting = thread::spawn(move || tx.send(&[1, 2, 3], &c));
    thread::sleep(Duration::from_millis(100));
    cancel.store(true, Ordering::SeqCst);
    let err = within(move || waiting.join().unwrap()).unwrap_err();
    assert!(
        matches!(err, sluice_core::SluiceError::Cancelled { .. }),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// A hand-written client that speaks the wire protocol, to send what a correct sender never
/// would: frames of an attempt that was already closed.
fn raw_client(to: SocketAddr) -> (TcpStream, FrameReader<TcpStream>) {
    let mut s = TcpStream::connect(to).unwrap();
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(b"127.0.0.1:1");
    let zero = chan(0, 0, 0);
    frame::write_frame(&mut s, &mut Vec::new(), Kind::Hello, &zero, &hello).unwrap();
    let mut r = FrameReader::new(s.try_clone().unwrap());
    let answer = r.read_frame().unwrap();
    let mut accepted = MAGIC.to_vec();
    accepted.push(1);
    assert_eq!(
        (answer.kind, answer.payload.to_vec()),
        (Kind::Hello, accepted),
        "the connection is accepted"
    );
    (s, r)
}

/// Two workers that send to each other, all their channels opened at once so their dials
/// cross, share one connection, and records flow both ways on it.
#[test]
fn one_connection_per_pair_carries_both_directions() {
    for round in 0..20u64 {
        let (a, b) = (plane(), plane());
        let never = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (from, to, producer) in [(&a, &b, 0u32), (&b, &a, 1), (&a, &b, 2), (&b, &a, 3)] {
            let ch = chan(round + 1, producer, 0);
            let (from, to) = (from.clone(), to.clone());
            let never = never.clone();
            threads.push(thread::spawn(move || {
                let rx = to.open_receiver(ch).unwrap();
                let mut tx = from.open_sender(to.local_addr(), ch).unwrap();
                for i in 0..(2 * INITIAL_CREDITS) {
                    tx.send(&i.to_le_bytes(), &never).unwrap();
                    assert_eq!(
                        rx.recv_timeout(HANG).unwrap(),
                        Some(Bytes::copy_from_slice(&i.to_le_bytes()))
                    );
                }
                (tx, rx)
            }));
        }
        let ends: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for p in [&a, &b] {
            let (dialed, accepted, _) = p.connection_counts();
            assert_eq!(
                dialed + accepted,
                1,
                "round {round}: one connection per pair, not {dialed} dialled and {accepted} accepted"
            );
        }
        drop(ends);
    }
}

#[test]
fn close_attempts_before_discards_old_channels_and_late_frames() {
    let (a, b) = (plane(), plane());
    let old = chan(1, 0, 0);
    let rx_old = b.open_receiver(old).unwrap();
    let mut tx_old = a.open_sender(b.local_addr(), old).unwrap();
    let never = AtomicBool::new(false);
    tx_old.send(b"queued", &never).unwrap();

    b.close_attempts_before(2);
    assert!(
        within(move || rx_old.recv_timeout(HANG)).is_err(),
        "old receiver fails"
    );
    assert!(
        b.open_receiver(old).is_err(),
        "old attempts cannot register again"
    );
    // The receiving side told the sender; its next sends fail instead of waiting forever.
    let err = within(move || {
        loop {
            if let Err(e) = tx_old.send(b"late", &AtomicBool::new(false)) {
                return e.to_string();
            }
        }
    });
    assert!(err.contains("closed"), "{err}");

    // Late frames of attempt 1 on a live connection are dropped; attempt 2 flows on it.
    let new = chan(2, 0, 0);
    let rx_new = b.open_receiver(new).unwrap();
    let (mut s, mut r) = raw_client(b.local_addr());
    let mut scratch = Vec::new();
    frame::write_frame(&mut s, &mut scratch, Kind::Open, &old, &[]).unwrap();
    frame::write_frame(&mut s, &mut scratch, Kind::Data, &old, b"stale").unwrap();
    frame::write_frame(&mut s, &mut scratch, Kind::Open, &new, &[]).unwrap();
    s.flush().unwrap();
    let credit = r.read_frame().unwrap();
    assert_eq!((credit.kind, credit.ch), (Kind::Credit, new));
    assert_eq!(
        frame::parse_credit(&credit.payload).unwrap(),
        INITIAL_CREDITS
    );
    frame::write_frame(&mut s, &mut scratch, Kind::Data, &new, b"fresh").unwrap();
    assert_eq!(
        rx_new.recv_timeout(HANG).unwrap(),
        Some(Bytes::from_static(b"fresh"))
    );

    // The sending side closes its own old channels too, and a new one works again.
    a.close_attempts_before(2);
    let mut tx_new = a.open_sender(b.local_addr(), chan(2, 1, 0)).unwrap();
    let rx2 = b.open_receiver(chan(2, 1, 0)).unwrap();
    tx_new.send(b"again", &never).unwrap();
    assert_eq!(
        rx2.recv_timeout(HANG).unwrap(),
        Some(Bytes::from_static(b"again"))
    );
    assert!(a.open_sender(b.local_addr(), chan(1, 5, 0)).is_err());
}

#[test]
fn data_without_credit_breaks_only_that_connection() {
    let (a, b) = (plane(), plane());
    // A well-behaved worker's channel, open before the misbehaving one connects.
    let good = chan(1, 1, 0);
    let mut tx = a.open_sender(b.local_addr(), good).unwrap();
    let rx_good = b.open_receiver(good).unwrap();
    let never = AtomicBool::new(false);
    tx.send(b"before", &never).unwrap();
    assert_eq!(
        rx_good.recv_timeout(HANG).unwrap(),
        Some(Bytes::from_static(b"before"))
    );

    let ch = chan(1, 0, 0);
    let rx = b.open_receiver(ch).unwrap();
    let (mut s, _r) = raw_client(b.local_addr());
    let mut scratch = Vec::new();
    frame::write_frame(&mut s, &mut scratch, Kind::Open, &ch, &[]).unwrap();
    for _ in 0..=INITIAL_CREDITS {
        frame::write_frame(&mut s, &mut scratch, Kind::Data, &ch, b"x").unwrap();
    }
    // Nothing is taken (which would return credits) until the plane dropped that connection:
    // two accepted, one left.
    let t = Instant::now();
    while b.connection_counts().1 != 1 || b.connection_counts().2 != 2 {
        assert!(
            t.elapsed() < HANG,
            "the connection survived data without credit"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let got = within(move || {
        let mut frames = 0;
        loop {
            match rx.recv_timeout(HANG) {
                Ok(Some(_)) => frames += 1,
                Ok(None) => panic!("no protocol error"),
                Err(e) => return (frames, e.to_string()),
            }
        }
    });
    assert!(got.1.contains("without credit"), "{}", got.1);
    assert_eq!(
        got.0, INITIAL_CREDITS,
        "what arrived within the credits is delivered"
    );
    tx.send(b"after", &never).unwrap();
    assert_eq!(
        rx_good.recv_timeout(HANG).unwrap(),
        Some(Bytes::from_static(b"after"))
    );
}

/// A record whose encoding always fails, naming it.
#[derive(Clone, Debug, serde::Deserialize)]
struct Unencodable(u64);

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(format!(
            "record {} cannot be encoded",
            self.0
        )))
    }
}

/// A batch that took a credit and then failed to encode gives the credit back: the channel
/// keeps its whole window, and the error names the channel and the record's own message.
#[test]
fn a_batch_that_fails_to_encode_gives_its_credit_back() {
    let (a, b) = (plane(), plane());
    let ch = chan(1, 0, 0);
    let _inlet = NetInlet::<Unencodable>::new(b.open_receiver(ch).unwrap(), Arc::default());
    let tx = sender_with_all_credits(&a, &b, ch);
    let mut outlet = NetOutlet::new(tx, Arc::default());
    let (cancel, blocked) = (AtomicBool::new(false), AtomicU64::new(0));
    // The first batch goes alone, on a credit taken before it is encoded.
    let batch = Batch::from_vec(vec![Unencodable(41), Unencodable(42)]);
    let err = outlet
        .send(Event::Batch(batch), &cancel, &blocked)
        .expect_err("a record that cannot be encoded");
    let msg = err.to_string();
    assert!(msg.contains("record 41 cannot be encoded"), "{msg}");
    assert!(msg.contains(&ch.to_string()), "{msg}");
    assert_eq!(outlet.sender().chan.state.lock().credits, INITIAL_CREDITS);
}
