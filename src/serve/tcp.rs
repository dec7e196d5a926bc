//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766): two-octet length prefixes,
//! pipelined queries answered in order, idle connections closed.
//!
//! The common query is answered by [`answer::respond`] straight from the
//! snapshot, as on UDP but without a size limit; anything else goes through
//! the hickory [`DnsHandler`]. Responses to pipelined queries are written
//! in one flush when the client has sent several at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::ops::metrics::{Metrics, QType, Rcode, Transport};
use crate::serve::answer::{self, MAX_MESSAGE, Outcome};
use crate::serve::handler::{self, DnsHandler};
use crate::zone::ZoneStore;

/// A connection that sends nothing for this long is closed (RFC 7766 §6.2.3
/// asks servers to time idle connections out; seconds, not minutes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on accept, so idle clients
/// cannot exhaust memory or file descriptors.
pub const MAX_CONNECTIONS: usize = 4096;
/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Serves DNS over TCP on `listener` until `shutdown`; then stops
/// accepting, lets every connection finish the query in hand, and returns.
pub async fn serve(
    listener: TcpListener,
    zone: Arc<ZoneStore>,
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let open = Arc::new(AtomicUsize::new(0));
    // Accept failures (out of descriptors) come in runs: the first of a
    // run is a warning, the rest debug, and the end of the run is logged.
    let mut failing = false;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if failing {
                        debug!(%error, "tcp accept failed");
                    } else {
                        warn!(%error, "tcp accept failed; new connections wait until it works again");
                        failing = true;
                    }
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        if failing {
            info!("tcp accept works again");
            failing = false;
        }
        if open.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            debug!(%peer, "too many tcp connections; closing the new one");
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let connection = Connection {
            zone: zone.clone(),
            handler: handler.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            peer,
        };
        let open = open.clone();
        tracker.spawn(async move {
            if let Err(error) = connection.run(stream).await {
                debug!(%peer, %error, "tcp connection ended");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Whether `buffered` starts with a complete length-prefixed message.
fn holds_whole_message(buffered: &[u8]) -> bool {
    match buffered {
        [high, low, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*high, *low])),
        _ => false,
    }
}

struct Connection {
    zone: Arc<ZoneStore>,
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    peer: SocketAddr,
}

impl Connection {
    async fn run(&self, stream: TcpStream) -> io::Result<()> {
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut writer = BufWriter::new(writer);
        let mut query = Vec::with_capacity(512);
        let mut response = Vec::with_capacity(512);
        loop {
            // Between messages: the only place a connection waits, so the
            // only place shutdown or idleness ends it.
            let len = tokio::select! {
                () = self.shutdown.cancelled() => break,
                len = tokio::time::timeout(IDLE_TIMEOUT, reader.read_u16()) => match len {
                    Ok(Ok(len)) => usize::from(len),
                    // Closed by the client, or idle too long.
                    Ok(Err(_)) | Err(_) => break,
                },
            };
            query.resize(len, 0);
            match tokio::time::timeout(IDLE_TIMEOUT, reader.read_exact(&mut query)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
            self.answer(&query, &mut response).await;
            if !response.is_empty() {
                // A response is at most 65535 octets by construction.
                writer.write_u16(response.len() as u16).await?;
                writer.write_all(&response).await?;
            }
            // Flush unless a whole next query is already buffered: pipelined
            // queries get their responses in one write, and a query whose
            // successor is still arriving is not held back waiting for it.
            if !holds_whole_message(reader.buffer()) {
                writer.flush().await?;
            }
        }
        writer.flush().await?;
        Ok(())
    }

    /// Writes the response to `query` into `response` (empty: no answer).
    /// Each response is counted, and timed from the moment its query was
    /// read in full until it is in the write buffer.
    async fn answer(&self, query: &[u8], response: &mut Vec<u8>) {
        let started = Instant::now();
        if let Some(mut question) = answer::parse_query(query) {
            let verdict = question.answer_cookie(self.handler.cookie_secret(), self.peer.ip());
            let snapshot = self.zone.guard();
            let outcome = answer::respond(
                &snapshot,
                &question,
                MAX_MESSAGE,
                self.handler.max_udp_payload(),
                response,
            );
            if let Outcome::Answered { rcode, .. } = outcome {
                let counters = self.metrics.queries();
                if let Some(verdict) = verdict {
                    counters.cookie(verdict.label());
                }
                counters.count(
                    Transport::Tcp,
                    QType::from_wire(question.qtype),
                    Rcode::from_wire(u16::from(rcode)),
                );
                counters.observe(Transport::Tcp, started.elapsed(), 1);
                return;
            }
        }
        // The full path.
        response.clear();
        let Some(request) = handler::full_request(query, self.peer, Protocol::Tcp, response) else {
            if !response.is_empty() {
                self.metrics
                    .queries()
                    .record_response(Transport::Tcp, response, started.elapsed());
            }
            return;
        };
        *response = self.handler.answer_bytes(&request).await;
        if !response.is_empty() {
            let counters = self.metrics.queries();
            if let Some(verdict) = self.handler.cookie_verdict(&request) {
                counters.cookie(verdict.label());
            }
            counters.record_response(Transport::Tcp, response, started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::holds_whole_message;

    #[test]
    fn a_partial_next_query_does_not_hold_back_the_flush() {
        assert!(!holds_whole_message(&[]));
        assert!(!holds_whole_message(&[0]));
        assert!(!holds_whole_message(&[0, 3, 1, 2]), "3 announced, 2 here");
        assert!(holds_whole_message(&[0, 3, 1, 2, 3]));
        assert!(holds_whole_message(&[0, 0]), "an empty message is whole");
    }
}
