//! Fuzzing entry points shared by the cargo-fuzz targets (`fuzz/`) and the randomized tests
//! that run in every `cargo test`: arbitrary bytes through the parsers, cut into arbitrary
//! segments with arbitrary capture gaps, in both directions. They must never panic.

use super::message::Message;
use super::parser::Segment;
use super::parser::{Parser, Sender};
use super::sql::{Dialect, mask_literals, summarize};
use super::{amqp, kafka, memcached, mqtt, mysql, nats, postgres, redis};

/// The first byte picks the parser (the databases and caches, NATS, AMQP, Kafka and MQTT, whose
/// line-and-count or length-prefixed framing is theirs); the next eight choose segment sizes, directions and gaps.
pub fn database(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let mut codec: Box<dyn Parser> = match which % 10 {
        0 => Box::new(postgres::Postgres::new()),
        1 => Box::new(mysql::Mysql::new(which & 0x10 == 0)),
        2 => Box::new(redis::Redis::new()),
        3 => Box::new(memcached::Memcached::new()),
        4 => Box::new(nats::Nats::default()),
        6 => Box::new(amqp::Amqp::new(which & 0x10 == 0)),
        7 => Box::new(kafka::Kafka::default()),
        8 => Box::new(mqtt::Mqtt::default()),
        _ => {
            let text = String::from_utf8_lossy(rest);
            let masked = mask_literals(&text, if which & 1 == 0 { Dialect::Postgres } else { Dialect::Mysql });
            let _ = summarize(&masked);
            return;
        }
    };
    let (control, traffic) = rest.split_at(rest.len().min(8));
    let mut out: Vec<Message> = Vec::new();
    let mut remaining = traffic;
    let mut i = 0usize;
    while !remaining.is_empty() {
        let c = control.get(i % control.len().max(1)).copied().unwrap_or(7) as usize;
        let n = (c % 61 + 1).min(remaining.len());
        let gap = if c.is_multiple_of(7) { (c * 31) as u64 } else { 0 };
        let seg = Segment { data: &remaining[..n], total: n as u64 + gap, ts_enter_ns: i as u64, ts_exit_ns: i as u64 + 1 };
        codec.feed(if c & 0x40 == 0 { Sender::Client } else { Sender::Server }, seg, &mut out);
        remaining = &remaining[n..];
        i += 1;
    }
    codec.close(&mut out);
}

#[cfg(test)]
pub(crate) mod smoke {
    /// Many random and mutated inputs from `seeds` through `run`: a cheap stand-in for the
    /// fuzzer in every test run.
    pub(crate) fn mutate_and_run(seeds: &[&[u8]], rounds: usize, run: impl Fn(&[u8])) {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..rounds {
            let mut input: Vec<u8> = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 8) {
                let r = next();
                let pos = (r as usize >> 8) % (input.len() + 1);
                match r % 4 {
                    0 => input.insert(pos, r as u8 >> 1),
                    1 if pos < input.len() => input[pos] = (r >> 16) as u8,
                    2 if pos < input.len() => {
                        input.remove(pos);
                    }
                    _ => input.extend_from_slice(&input.clone()[..pos]),
                }
            }
            run(&input);
        }
    }

    #[test]
    fn database_parsers_never_panic() {
        let seeds: &[&[u8]] = &[
            b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x08\x04\xd2\x16\x2fQ\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00\x00\x05I",
            b"\x01\x11\x22\x33\x44\x55\x66\x77\x88\x0b\x00\x00\x00\x03SELECT 1;\x01\x00\x00\x01\x01\x05\x00\x00\x02\xfe\x00\x00\x02\x00",
            b"\x02\x01\x02\x03\x04\x05\x06\x07\x08*2\r\n$3\r\nGET\r\n$1\r\nk\r\n$5\r\nhello\r\n-ERR x\r\n>2\r\n+a\r\n+b\r\n",
            b"\x03\x01\x41\x03\x44\x05\x46\x07\x48set k 0 0 5\r\nhello\r\nSTORED\r\nget k\r\nVALUE k 0 5\r\nhello\r\nEND\r\n",
            b"\x05SELECT * FROM t WHERE a = 'x''y' AND b IN (1, 2) -- c\n/* d */ $$e$$",
            b"\x06\x01\x41\x03\x44\x05\x46\x07\x48\x01\x00\x01\x00\x00\x00\x0c\x00\x3c\x00\x28\x00\x00\x01a\x01b\x00\xce\x02\x00\x01\x00\x00\x00\x0e\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\xce\x03\x00\x01\x00\x00\x00\x01x\xce",
            b"\x04\x01\x41\x03\x44\x05\x46\x07\x48PUB a.b 5\r\nhello\r\nMSG a.b 1 _R 5\r\nhello\r\nHPUB h 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
            // Kafka: a Produce v7 request of one record, and its answer.
            b"\x07\x01\x41\x03\x44\x05\x46\x07\x48\x00\x00\x00\x69\x00\x00\x00\x07\x00\x00\x00\x06\x00\x01c\xff\xff\xff\xff\x00\x00\x75\x30\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x48\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x3c\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x01\x14\x00\x00\x00\x01\x02v\x02\x00\x00\x00\x00\x00\x00\x00\x00",
        ];
        mutate_and_run(seeds, 20_000, super::database);
        // Found by cargo fuzz: an empty MySQL packet where an OK was due.
        super::database(&[1, 0, 0, 0, 0, 0, 0, 110, 0, 1, 0, 0, 0, 22, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 76, 73, 83, 84, 69, 78, 246, 255, 0, 0, 0, 128]);
    }
}
