//! Model-based test: random sequences of writes, kubelet rotations (with gzip and delete of the
//! older generation), copytruncates, graceful restarts and kill -9 crashes, against the real
//! binary. The model knows every line written; at the end every line must have come out exactly
//! once — at least once if a crash happened — and in order within each file generation.

mod support;

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use support::agent::{
    append, cri, kubelet_compress, kubelet_rotate, wait_until, AgentProcess, Fixture,
};

const STREAMS: usize = 2;

#[derive(Clone, Debug)]
enum Op {
    Write { stream: usize, lines: usize },
    Rotate { stream: usize },
    CopyTruncate { stream: usize },
    Restart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..STREAMS, 1usize..400).prop_map(|(stream, lines)| Op::Write { stream, lines }),
        2 => (0..STREAMS).prop_map(|stream| Op::Rotate { stream }),
        1 => (0..STREAMS).prop_map(|stream| Op::CopyTruncate { stream }),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

struct Model {
    fx: Fixture,
    agent: AgentProcess,
    /// Lines written, per (stream, generation), in order.
    written: Vec<(usize, usize, String)>,
    generation: [usize; STREAMS],
    seq: [usize; STREAMS],
    rotated: [Option<PathBuf>; STREAMS],
    crashed: bool,
}

impl Model {
    fn path(&self, stream: usize) -> PathBuf {
        self.fx.log(&format!("s{stream}.log"))
    }

    fn all_shipped(&self) -> bool {
        let msgs = self.fx.messages();
        let got: std::collections::HashSet<&str> = msgs.iter().map(String::as_str).collect();
        self.written
            .iter()
            .all(|(_, _, m)| got.contains(m.as_str()))
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { stream, lines } => {
                let mut body = String::new();
                for _ in 0..lines {
                    let m = format!(
                        "s{stream}-g{}-{}",
                        self.generation[stream], self.seq[stream]
                    );
                    self.seq[stream] += 1;
                    body.push_str(&cri("stdout", 'F', &m));
                    self.written.push((stream, self.generation[stream], m));
                }
                append(&self.path(stream), body.as_bytes());
            }
            Op::Rotate { stream } => {
                // The kubelet rotates files that grew large, long after they were created: a file
                // renamed before the agent ever opened it is not one any pattern finds. Rotate
                // only a generation the agent has started to ship.
                let generation = self.generation[stream];
                let Some(first) = self
                    .written
                    .iter()
                    .find(|(s, g, _)| *s == stream && *g == generation)
                    .map(|(_, _, m)| m.clone())
                else {
                    return;
                };
                assert!(
                    wait_until(Duration::from_secs(30), || self
                        .fx
                        .messages()
                        .contains(&first)),
                    "{}",
                    self.agent.logs()
                );
                let suffix = format!("{}-{}", self.generation[stream], self.seq[stream]);
                let rotated = kubelet_rotate(&self.path(stream), &suffix);
                if let Some(older) = self.rotated[stream].replace(rotated) {
                    if older.exists() {
                        kubelet_compress(&older);
                    }
                }
                self.generation[stream] += 1;
            }
            Op::CopyTruncate { stream } => {
                // logrotate's copytruncate loses what was written between its copy and its
                // truncate; like a careful user, truncate only once everything was shipped.
                assert!(
                    wait_until(Duration::from_secs(30), || self.all_shipped()),
                    "{}",
                    self.agent.logs()
                );
                let path = self.path(stream);
                if path.exists() {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    self.generation[stream] += 1;
                }
            }
            Op::Restart => {
                assert!(self.agent.terminate().success(), "{}", self.agent.logs());
                self.agent = self.fx.spawn(&[]);
            }
            Op::Crash => {
                self.agent.kill9();
                self.crashed = true;
                self.agent = self.fx.spawn(&[]);
            }
        }
    }

    fn check(mut self) -> Result<(), TestCaseError> {
        prop_assert!(
            wait_until(Duration::from_secs(60), || self.all_shipped()),
            "not everything shipped: {}",
            self.agent.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
        prop_assert!(self.agent.terminate().success());
        let msgs = self.fx.messages();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for m in &msgs {
            *counts.entry(m.as_str()).or_default() += 1;
        }
        for (_, _, m) in &self.written {
            let n = counts.get(m.as_str()).copied().unwrap_or(0);
            if self.crashed {
                prop_assert!(n >= 1, "{m} lost");
            } else {
                prop_assert_eq!(n, 1, "{} should appear exactly once", m);
            }
        }
        prop_assert_eq!(
            counts.len(),
            self.written.len(),
            "records that were never written"
        );
        // In order within each file generation: first appearances follow write order.
        let first_seen: HashMap<&str, usize> = msgs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, m)| (m.as_str(), i))
            .collect();
        let mut last: HashMap<(usize, usize), usize> = HashMap::new();
        for (stream, generation, m) in &self.written {
            let at = first_seen[m.as_str()];
            if let Some(prev) = last.insert((*stream, *generation), at) {
                prop_assert!(prev < at, "{m} came before an earlier line of its file");
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 10,
        max_shrink_iters: 16,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    })]

    #[test]
    fn every_line_comes_out_once_and_in_order(ops in prop::collection::vec(op(), 1..14)) {
        let fx = Fixture::new();
        let agent = fx.spawn(&[]);
        let mut model = Model { fx, agent, written: Vec::new(), generation: [0; STREAMS], seq: [0; STREAMS], rotated: [None, None], crashed: false };
        for op in &ops {
            model.apply(op);
        }
        model.check()?;
    }
}
