//! The five targets. Each takes any bytes, never rejects an input by
//! panicking, and panics (an AFL crash) only when an invariant breaks.
//!
//! | target | input | invariants |
//! |---|---|---|
//! | [`frame_pipeline`] | a control byte, then one frame | see [`frames`] |
//! | [`frame_sequence`] | a header byte, then operations | see [`frames`] |
//! | [`manifest`] | YAML or JSON text | see [`manifest`](mod@manifest) |
//! | [`dns_query`] | a size byte, then a DNS message | see [`dns`] |
//! | [`pktgen_stamp`] | one frame | see [`pktgen`] |

pub mod dns;
pub mod frames;
pub mod manifest;
pub mod pktgen;

pub use dns::dns_query;
pub use frames::{frame_pipeline, frame_sequence};
pub use manifest::manifest;
pub use pktgen::pktgen_stamp;

/// The names of the targets, as the corpus directories are named.
pub const NAMES: [&str; 5] = ["frame_pipeline", "frame_sequence", "manifest", "dns_query", "pktgen_stamp"];

/// Runs the target called `name` on `data`; false for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "frame_pipeline" => frame_pipeline(data),
        "frame_sequence" => frame_sequence(data),
        "manifest" => manifest(data),
        "dns_query" => dns_query(data),
        "pktgen_stamp" => pktgen_stamp(data),
        _ => return false,
    }
    true
}
