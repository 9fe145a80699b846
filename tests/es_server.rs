//! The test Elasticsearch answers as the real one does.

mod support;

use support::elasticsearch::{Flavor, TestEs};

#[test]
fn smoke() {
    let es = TestEs::start(Flavor::Elasticsearch8);
    assert!(es.url().starts_with("http://127.0.0.1:"));
}
