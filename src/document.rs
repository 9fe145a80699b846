// TEMPORARY stand-in until the parse branch lands.
use crate::record::{Batch, Record};
use crate::source::KubeletName;
use std::path::Path;
pub struct Encoder {
    host: String,
}
impl Encoder {
    pub fn new(host_name: &str) -> Self {
        Encoder {
            host: host_name.to_string(),
        }
    }
    pub fn source_fragment(&self, path: &Path, _k: Option<&KubeletName>) -> Box<str> {
        format!("{}|{}", path.display(), self.host).into()
    }
    pub fn encode(&self, batch: &Batch, record: &Record, out: &mut Vec<u8>) {
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({"message": batch.message(record), "offset": record.offset}),
        )
        .unwrap();
    }
}
