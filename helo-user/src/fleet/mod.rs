//! A fleet of edge boxes sharing one blocklist through Redis, which ISPs already run.
//!
//! - [`wire`]: the key layout and the stream's message format (names and addresses, never hashes:
//!   each box hashes with its own key), with the checks a received message must pass;
//! - [`sync`]: the publisher (drains this box's durable outbox into Redis) and the consumer (loads
//!   the current state, then follows the stream), the Redis side of both;
//! - [`consume`]: what the consumer does with what it read (other boxes' changes applied, its own
//!   echoes and malformed messages skipped, its position kept), with no connection.
//!
//! Without `--fleet` none of this runs and the agent works alone.

pub mod consume;
pub mod sync;
pub mod wire;

pub use sync::start;
