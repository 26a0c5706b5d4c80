//! Log lines written by a session thread go out in batches: one `write` for every line the thread
//! logged since it last went idle, rather than one per line. A rejected session logs three lines
//! (connect, the decision, close); written one by one they were a tenth of its CPU.
//!
//! A batch is written before the thread parks (tokio's `on_thread_park`), so an idle agent's log
//! is as current as before; a thread that never parks writes whenever the batch reaches
//! [`FLUSH_AT`]. Lines of a batch are lost if the process dies before the thread goes idle (a
//! panic, `kill -9`): at most the last instant's lines. Every other thread writes each line as it
//! comes.

use std::{
    cell::RefCell,
    io::{self, Write},
};

use tracing_subscriber::fmt::MakeWriter;

/// A batch is written once it holds this much, idle or not (about 150 lines).
pub const FLUSH_AT: usize = 16 << 10;

thread_local! {
    /// `Some` on threads that batch ([`batch_this_thread`]).
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// From now on this thread's lines are batched; the thread must call [`flush`] before it parks
/// and before it ends.
pub fn batch_this_thread() {
    BATCH.with(|b| *b.borrow_mut() = Some(Vec::with_capacity(FLUSH_AT)));
}

/// Writes this thread's batch, if it has one.
pub fn flush() {
    BATCH.with(|b| {
        if let Ok(Some(buf)) = b.try_borrow_mut().as_deref_mut() {
            write_out(buf);
        }
    });
}

/// Writes `buf` to stderr in one call and empties it (a failed write loses the lines, as a
/// failed unbatched write would).
fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        let _ = io::stderr().write_all(buf);
        buf.clear();
    }
}

/// The log's writer: stderr, batched on threads that asked for it.
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line
    }
}

/// One formatted event (tracing's fmt layer writes each event in one `write_all`).
pub struct Line;

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let batched = BATCH.with(|b| match b.try_borrow_mut().as_deref_mut() {
            Ok(Some(buf)) => {
                buf.extend_from_slice(data);
                if buf.len() >= FLUSH_AT {
                    write_out(buf);
                }
                true
            }
            _ => false,
        });
        if batched {
            Ok(data.len())
        } else {
            io::stderr().write(data)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batching_thread_keeps_its_lines_until_flushed_others_do_not() {
        std::thread::spawn(|| {
            batch_this_thread();
            Line.write_all(b"one\n").unwrap();
            Line.write_all(b"two\n").unwrap();
            BATCH.with(|b| assert_eq!(b.borrow().as_deref(), Some(&b"one\ntwo\n"[..])));
            flush();
            BATCH.with(|b| assert_eq!(b.borrow().as_deref(), Some(&b""[..])));
            // Past the bound it goes out without waiting for the thread to park.
            Line.write_all(&vec![b'x'; FLUSH_AT]).unwrap();
            BATCH.with(|b| assert!(b.borrow().as_ref().unwrap().is_empty()));
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            Line.write_all(b"").unwrap();
            BATCH.with(|b| assert!(b.borrow().is_none()));
        })
        .join()
        .unwrap();
    }
}
